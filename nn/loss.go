package nn

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/gexec"
	"github.com/ddpm-go/ddpm/kernels"
)

// diffusionLoss is the scalar training loss of a diffusion model's
// output (kernels.Ops.DiffusionLoss) from operands (out, x0, noise,
// coef). It saves the per-example terms ("terms", (N, 3): loss, mse, vb)
// and dloss/dout ("dout"), which its gradient op hands back.
type diffusionLoss[B any] struct {
	base
	d kernels.DiffusionLossDims
}

func (o *diffusionLoss[B]) per() int {
	if o.d.Learned {
		return 2 * o.d.D
	}
	return o.d.D
}

func (o *diffusionLoss[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.DiffusionLoss(out, c.Saved("terms", 3*o.d.N), c.Saved("dout", o.d.N*o.per()), in[0], in[1], in[2], in[3], o.d)
	return nil
}
func (o *diffusionLoss[B]) DiffWRT(int) []bool { return []bool{true, false, false, false} }
func (o *diffusionLoss[B]) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	// The loss node is an operand so that it runs (and saves dout) first.
	dx, err := apply(&lossGrad[B]{newBase("DiffusionLossGrad"+o.name[13:], in[0].Shape(), 2), out}, out, grad)
	return G.Nodes{dx, nil, nil, nil}, err
}

// lossGrad returns the dloss/dout its forward loss node saved, from
// (loss, dcost); the loss is the cost (dcost = 1), so it is not read.
type lossGrad[B any] struct {
	base
	fwd *G.Node
}

func (o *lossGrad[B]) Exec(c *gexec.Ctx[B], out B, _ []B) error {
	g, ok := c.SavedOf(o.fwd, "dout")
	if !ok {
		return fmt.Errorf("nn: %s: its loss has not run in this program", o.name)
	}
	c.Ops.Copy(out, g, o.size())
	return nil
}

// vjpSeed is the cost <out, seed> of a vector-Jacobian product, from
// operands (out, seed): its gradient with respect to out is seed. Its own
// value is never read, so Exec only zeroes it.
type vjpSeed[B any] struct{ base }

func (o *vjpSeed[B]) Exec(c *gexec.Ctx[B], out B, _ []B) error {
	c.Ops.Fill(out, 0, 1)
	return nil
}
func (o *vjpSeed[B]) DiffWRT(int) []bool { return []bool{true, false} }
func (o *vjpSeed[B]) SymDiff(in G.Nodes, _, _ *G.Node) (G.Nodes, error) {
	return G.Nodes{in[1], nil}, nil
}

// addVJPSeed adds the cost <out, seed> with the input "vjp.seed".
func addVJPSeed[B any](b *Builder[B], out *G.Node) *G.Node {
	seed := b.Input("vjp.seed", []int(out.Shape())...)
	return b.op(&vjpSeed[B]{newBase(fmt.Sprintf("VJPSeed%v", out.Shape()), tensor.Shape{}, 2)}, out, seed)
}

// addDiffusionLoss adds the loss node over out and the loss inputs
// "loss.x0", "loss.noise" (N, C, H, W) and "loss.coef" (N, NumLossCoef).
func addDiffusionLoss[B any](b *Builder[B], out *G.Node, d kernels.DiffusionLossDims) *G.Node {
	s := out.Shape()
	c := s[1]
	if d.Learned {
		c /= 2
	}
	x0 := b.Input("loss.x0", s[0], c, s[2], s[3])
	noise := b.Input("loss.noise", s[0], c, s[2], s[3])
	coef := b.Input("loss.coef", s[0], kernels.NumLossCoef)
	return b.op(&diffusionLoss[B]{newBase(fmt.Sprintf("DiffusionLoss%+v", d), tensor.Shape{}, 4), d}, out, x0, noise, coef)
}

// LossCoefRows turns per-example diffusion constants and importance
// weights into the rows kernels.Ops.DiffusionLoss reads (N,
// kernels.NumLossCoef): example i's share of the batch loss is
// weights[i]/N (weights nil: 1).
func LossCoefRows(c []diffusion.LossCoefs, weights []float64) []float32 {
	n := len(c)
	out := make([]float32, n*kernels.NumLossCoef)
	for i, k := range c {
		r := out[i*kernels.NumLossCoef : (i+1)*kernels.NumLossCoef]
		r[kernels.CoefTargetX0], r[kernels.CoefTargetNoise] = float32(k.TargetX0), float32(k.TargetNoise)
		r[kernels.CoefSqrtAB], r[kernels.CoefSqrt1mAB] = float32(k.SqrtAB), float32(k.Sqrt1mAB)
		r[kernels.CoefX0FromXt], r[kernels.CoefX0FromOut] = float32(k.X0FromXt), float32(k.X0FromOut)
		r[kernels.CoefMean1], r[kernels.CoefMean2] = float32(k.Mean1), float32(k.Mean2)
		r[kernels.CoefPostLogVar], r[kernels.CoefMinLogVar], r[kernels.CoefMaxLogVar] = float32(k.PostLogVar), float32(k.MinLogVar), float32(k.MaxLogVar)
		r[kernels.CoefMSE], r[kernels.CoefVB] = float32(k.MSE), float32(k.VB)
		if k.Decoder {
			r[kernels.CoefDecoder] = 1
		}
		if k.StopMean {
			r[kernels.CoefStopMean] = 1
		}
		w := 1.0
		if weights != nil {
			w = weights[i]
		}
		r[kernels.CoefWeight] = float32(w / float64(n))
	}
	return out
}
