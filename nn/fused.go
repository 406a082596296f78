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

// NormTokens is the GroupNorm n (no Bias, ScaleShift or Dropout) of a
// feature map x (N, C, H, W) as tokens (N, H*W, C): an attention block's
// norm, in the order its projections read.
func (b *Builder[B]) NormTokens(n Norm, x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	if n.Bias != nil || n.ScaleShift != nil || n.Dropout != 0 {
		b.Fail(fmt.Errorf("nn: %s: NormTokens takes a plain GroupNorm", n.Name))
		return nil
	}
	s := x.Shape()
	c, t := s[1], s.TotalSize()/(s[0]*s[1])
	if !b.fused {
		return b.Transpose(b.GroupNorm(n.Name, x, n.Groups, n.Eps, n.SiLU), s[0], c, t, s[0], t, c)
	}
	gamma, beta := b.normParams(n.Name, x, n.Groups)
	d := kernels.GroupNormDims{N: s[0], C: c, HW: t, Groups: n.Groups, Eps: float32(n.Eps), SiLU: n.SiLU}
	return b.op(&groupNormTokens[B]{newBase(fmt.Sprintf("NormTokens%+v", d), tensor.Shape{s[0], t, c}, 3), d}, x, gamma, beta)
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

// Norm is a GroupNorm layer before NormConv's convolution: its name
// (name.weight and name.bias, (C)), groups and eps, SiLU after it, a
// per-example channel bias (N, C) added to its input when Bias is not
// nil (a resnet block's time embedding), guided-diffusion's scale-shift
// conditioning (N, 2C) after it when ScaleShift is not nil (see
// GroupNormScaleShift), and dropout after it in training graphs.
type Norm struct {
	Name       string
	Groups     int
	Eps        float64
	SiLU       bool
	Bias       *G.Node
	ScaleShift *G.Node
	Dropout    float64
}

// ConvLayer is NormConv's convolution: name (name.weight (Out, C, Kernel,
// Kernel) and name.bias), Out channels, a Kernel x Kernel kernel, Stride,
// the same padding Pad on every side, and a Residual (N, Out, OutH, OutW)
// added to its output when not nil (a resnet block's skip connection).
type ConvLayer struct {
	Name                     string
	Out, Kernel, Stride, Pad int
	Residual                 *G.Node
}

// NormConv is Conv(Dropout(GroupNorm(x + n.Bias))) + Residual: a resnet
// block's norm, activation, convolution and skip connection.
func (b *Builder[B]) NormConv(n Norm, x *G.Node, cv ConvLayer) *G.Node {
	if b.err != nil {
		return nil
	}
	if !b.fused {
		h := x
		if n.Bias != nil {
			h = b.AddChannelBias(h, n.Bias)
		}
		if n.ScaleShift != nil {
			h = b.GroupNormScaleShift(n.Name, h, n.ScaleShift, n.Groups, n.Eps, n.SiLU)
		} else {
			h = b.GroupNorm(n.Name, h, n.Groups, n.Eps, n.SiLU)
		}
		h = b.Dropout(h, n.Dropout)
		h = b.Conv(cv.Name, h, cv.Out, cv.Kernel, cv.Stride, cv.Pad)
		if cv.Residual != nil {
			h = b.Add(cv.Residual, h)
		}
		return h
	}
	gamma, beta := b.normParams(n.Name, x, n.Groups)
	s := x.Shape()
	dn := kernels.GroupNormDims{N: s[0], C: s[1], HW: s.TotalSize() / (s[0] * s[1]), Groups: n.Groups, Eps: float32(n.Eps), SiLU: n.SiLU}
	dc := kernels.ConvDims{N: s[0], C: s[1], H: s[2], W: s[3], K: cv.Out, R: cv.Kernel, S: cv.Kernel,
		StrideH: cv.Stride, StrideW: cv.Stride, PadTop: cv.Pad, PadLeft: cv.Pad, PadBottom: cv.Pad, PadRight: cv.Pad}
	if err := dc.Validate(); err != nil {
		b.Fail(fmt.Errorf("nn: %s: %w", cv.Name, err))
		return nil
	}
	w, cb := b.convParams(cv.Name, dc)
	if b.err != nil {
		return nil
	}
	out := tensor.Shape{dc.N, dc.K, dc.OutH(), dc.OutW()}
	if cv.Residual != nil && !cv.Residual.Shape().Eq(out) {
		b.Fail(fmt.Errorf("nn: %s: residual of shape %v for an output of shape %v", cv.Name, cv.Residual.Shape(), out))
		return nil
	}
	in := []*G.Node{x, gamma, beta, w, cb}
	op := &groupNormConv[B]{dn: dn, dc: dc, bias: -1, ss: -1, res: -1}
	if n.Bias != nil {
		op.bias = len(in)
		in = append(in, n.Bias)
	}
	if n.ScaleShift != nil {
		op.ss = len(in)
		in = append(in, n.ScaleShift)
	}
	if cv.Residual != nil {
		op.res = len(in)
		in = append(in, cv.Residual)
	}
	op.base = newBase(fmt.Sprintf("NormConv%+v%+v(bias %v, scale-shift %v, residual %v)", dn, dc, op.bias >= 0, op.ss >= 0, op.res >= 0), out, len(in))
	return b.op(op, in...)
}

// fusedOps returns the backend's fused kernels, if it has them.
func fusedOps[B any](c *gexec.Ctx[B]) (kernels.Fused[B], bool) {
	f, ok := c.Ops.(kernels.Fused[B])
	return f, ok
}

// groupNormTokens is Transpose12(GroupNorm(x)) from (x, gamma, beta).
type groupNormTokens[B any] struct {
	base
	d kernels.GroupNormDims
}

func (o *groupNormTokens[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	if f, ok := fusedOps(c); ok {
		f.GroupNormTokens(out, in[0], in[1], in[2], o.d)
		return nil
	}
	d := o.d
	ng := d.N * d.Groups
	mean, rstd, h := c.Temp(ng), c.Temp(ng), c.Temp(d.N*d.C*d.HW)
	c.Ops.GroupNorm(h, mean, rstd, in[0], in[1], in[2], d)
	c.Ops.Transpose12(out, h, d.N, d.C, d.HW)
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

// groupNormConv is Conv2D(GroupNorm(x [+ bias]) [scale-shift ss]) [+ res]
// from (x, gamma, beta, w, b[, bias][, ss][, res]); bias, ss and res are
// operand indices, -1 when absent.
type groupNormConv[B any] struct {
	base
	dn            kernels.GroupNormDims
	dc            kernels.ConvDims
	bias, ss, res int
}

func (o *groupNormConv[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	var bias, ss, res B
	if o.bias >= 0 {
		bias = in[o.bias]
	}
	if o.ss >= 0 {
		ss = in[o.ss]
	}
	if o.res >= 0 {
		res = in[o.res]
	}
	if f, ok := fusedOps(c); ok {
		f.GroupNormConv2D(out, in[0], bias, ss, in[1], in[2], in[3], in[4], res, o.dn, o.dc)
		return nil
	}
	d := o.dn
	ng, total := d.N*d.Groups, d.N*d.C*d.HW
	mean, rstd, h := c.Temp(ng), c.Temp(ng), c.Temp(total)
	x := in[0]
	if o.bias >= 0 {
		sum := c.Temp(total)
		c.Ops.AddChannelBias(sum, x, bias, d.N, d.C, d.HW)
		x = sum
	}
	if o.ss >= 0 {
		c.Ops.GroupNormScaleShift(h, mean, rstd, x, in[1], in[2], ss, d)
	} else {
		c.Ops.GroupNorm(h, mean, rstd, x, in[1], in[2], d)
	}
	c.Ops.Conv2D(out, h, in[3], in[4], o.dc)
	if o.res >= 0 {
		c.Ops.Add(out, out, res, o.dc.N*o.dc.K*o.dc.OutH()*o.dc.OutW())
	}
	return nil
}
