package nn

import (
	"fmt"

	"github.com/ddpm-go/ddpm/gexec"
	"github.com/ddpm-go/ddpm/kernels"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Layers that are a short sequence of ops in a graph that takes gradients
// and one fused op in a forward-only graph (Builder.Fused). A fused op
// runs the backend's kernels.Fused method when the backend has one and
// the sequence otherwise, so every backend runs every graph; the fused
// ops have no derivative, which is why only forward-only graphs hold them.

// TokenLinear is Linear over the positions of a feature map x (N, C, H,
// W): the tokens (N, H*W, C) times name.weight^T plus name.bias, shaped
// (N, H*W, out), as an attention block's projections.
func (b *Builder[B]) TokenLinear(name string, x *G.Node, out int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	n, c, t := s[0], s[1], s.TotalSize()/(s[0]*s[1])
	if !b.fused {
		return b.Linear(name, b.Transpose(x, n, c, t, n, t, c), out)
	}
	w, bias := b.linearParams(name, c, out)
	op := &linearFromChannels[B]{newBase(fmt.Sprintf("TokenLinear(%v->%d)", s, out), tensor.Shape{n, t, out}, 3), n, t, c, out}
	return b.op(op, x, w, bias)
}

// LinearToMap is Linear of tokens x (N, T, In) to out channels, moved back
// to a feature map shaped like res (N, out, H, W) with T = H*W, plus res:
// an attention block's output projection and residual.
func (b *Builder[B]) LinearToMap(name string, x *G.Node, out int, res *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	s, rs := x.Shape(), res.Shape()
	if len(s) != 3 || rs[0] != s[0] || rs[1] != out || rs.TotalSize() != s[0]*s[1]*out {
		b.Fail(fmt.Errorf("nn: %s: tokens %v to %d channels do not match the residual %v", name, s, out, rs))
		return nil
	}
	n, t, in := s[0], s[1], s[2]
	if !b.fused {
		y := b.Linear(name, x, out)
		return b.Add(b.Transpose(y, n, t, out, []int(rs)...), res)
	}
	w, bias := b.linearParams(name, in, out)
	op := &linearToChannels[B]{newBase(fmt.Sprintf("LinearToMap(%v->%v)", s, rs), rs, 4), n, t, in, out}
	return b.op(op, x, w, bias, res)
}

// GroupNormBias is GroupNorm (name.weight, name.bias) of x (N, C, H, W)
// plus the per-example channel bias bias (N, C), then SiLU when silu: a
// resnet block's time embedding and second norm.
func (b *Builder[B]) GroupNormBias(name string, x, bias *G.Node, groups int, eps float64, silu bool) *G.Node {
	if b.err != nil {
		return nil
	}
	if !b.fused {
		return b.GroupNorm(name, b.AddChannelBias(x, bias), groups, eps, silu)
	}
	gamma, beta := b.normParams(name, x, groups)
	s := x.Shape()
	d := kernels.GroupNormDims{N: s[0], C: s[1], HW: s.TotalSize() / (s[0] * s[1]), Groups: groups, Eps: float32(eps), SiLU: silu}
	return b.op(&groupNormBias[B]{newBase(fmt.Sprintf("GroupNormBias%+v", d), s, 4), d}, x, bias, gamma, beta)
}

// fusedOps returns the backend's fused kernels, if it has them.
func fusedOps[B any](c *gexec.Ctx[B]) (kernels.Fused[B], bool) {
	f, ok := c.Ops.(kernels.Fused[B])
	return f, ok
}

// linearFromChannels is y (N, T, Out) = Linear(Transpose12(x)) from
// (x (N, In, T), w, b).
type linearFromChannels[B any] struct {
	base
	n, t, in, outN int
}

func (o *linearFromChannels[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	if f, ok := fusedOps(c); ok {
		f.LinearFromChannels(out, in[0], in[1], in[2], o.n, o.t, o.in, o.outN)
		return nil
	}
	tok := c.Temp(o.n * o.t * o.in)
	c.Ops.Transpose12(tok, in[0], o.n, o.in, o.t)
	c.Ops.Linear(out, tok, in[1], in[2], o.n*o.t, o.in, o.outN)
	return nil
}

// linearToChannels is y (N, Out, T) = Transpose12(Linear(x)) + r from
// (x (N, T, In), w, b, r).
type linearToChannels[B any] struct {
	base
	n, t, in, outN int
}

func (o *linearToChannels[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	if f, ok := fusedOps(c); ok {
		f.LinearToChannels(out, in[0], in[1], in[2], in[3], o.n, o.t, o.in, o.outN)
		return nil
	}
	size := o.n * o.t * o.outN
	y := c.Temp(size)
	c.Ops.Linear(y, in[0], in[1], in[2], o.n*o.t, o.in, o.outN)
	c.Ops.Transpose12(out, y, o.n, o.t, o.outN)
	c.Ops.Add(out, out, in[3], size)
	return nil
}

// groupNormBias is GroupNorm(AddChannelBias(x, bias)) from (x, bias,
// gamma, beta).
type groupNormBias[B any] struct {
	base
	d kernels.GroupNormDims
}

func (o *groupNormBias[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	d := o.d
	ng := d.N * d.Groups
	mean, rstd := c.Temp(ng), c.Temp(ng)
	if f, ok := fusedOps(c); ok {
		f.GroupNormChannelBias(out, mean, rstd, in[0], in[1], in[2], in[3], d)
		return nil
	}
	sum := c.Temp(d.N * d.C * d.HW)
	c.Ops.AddChannelBias(sum, in[0], in[1], d.N, d.C, d.HW)
	c.Ops.GroupNorm(out, mean, rstd, sum, in[2], in[3], d)
	return nil
}
