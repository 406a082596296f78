package nn

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ddpm-go/ddpm/gexec"
	"github.com/ddpm-go/ddpm/kernels"
)

// The layers OpenAI's ADM networks add (Dhariwal & Nichol 2021,
// openai/guided-diffusion guided_diffusion/unet.py): GroupNorm with
// scale-shift conditioning, average pooling, fused-qkv attention in both
// head orders, the classifier's attention pooling, spatial means, ReLU,
// and the shape ops (a copying reshape, a token pick) the heads need.

// ---- Builder methods ----------------------------------------------------------

// Conv1x1 is a 1x1 convolution with bias from x's C channels to cout
// whose weight is declared with shape wshape (cout*C values): PyTorch's
// Conv1d(C, cout, 1) stores (cout, C, 1), Conv2d (cout, C, 1, 1). x may be
// (N, C, H, W) or (N, C, T) viewed as (N, C, T, 1).
func (b *Builder[B]) Conv1x1(name string, x *G.Node, cout int, wshape ...int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	h, w := 1, 1
	switch len(s) {
	case 3:
		h = s[2]
	case 4:
		h, w = s[2], s[3]
	default:
		b.Fail(fmt.Errorf("nn: %s: Conv1x1 of shape %v: want (N, C, T) or (N, C, H, W)", name, s))
		return nil
	}
	size := 1
	for _, v := range wshape {
		size *= v
	}
	if size != cout*s[1] {
		b.Fail(fmt.Errorf("nn: %s: weight shape %v for %d -> %d channels", name, wshape, s[1], cout))
		return nil
	}
	d := kernels.ConvDims{N: s[0], C: s[1], H: h, W: w, K: cout, R: 1, S: 1, StrideH: 1, StrideW: 1}
	wt := b.Param(name+".weight", wshape, Uniform, s[1])
	bias := b.Param(name+".bias", []int{cout}, Uniform, s[1])
	y := b.op(newConv2D[B](d), b.Reshape(x, s[0], s[1], h, w), wt, bias)
	if len(s) == 3 {
		return b.Reshape(y, s[0], cout, h)
	}
	return y
}

// GroupNormScaleShift normalises x (N, C, ...) over groups of channels
// with name.weight and name.bias (C), then applies guided-diffusion's
// scale-shift conditioning h*(1 + scale) + shift with ss (N, 2C) = [scale,
// shift], then SiLU when silu.
func (b *Builder[B]) GroupNormScaleShift(name string, x, ss *G.Node, groups int, eps float64, silu bool) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	if groups < 1 || s[1]%groups != 0 {
		b.Fail(fmt.Errorf("nn: %s: %d channels do not split into %d groups", name, s[1], groups))
		return nil
	}
	if want := (tensor.Shape{s[0], 2 * s[1]}); !ss.Shape().Eq(want) {
		b.Fail(fmt.Errorf("nn: %s: scale-shift of shape %v, want %v", name, ss.Shape(), want))
		return nil
	}
	gamma := b.Param(name+".weight", []int{s[1]}, Ones, 0)
	beta := b.Param(name+".bias", []int{s[1]}, Zeros, 0)
	d := kernels.GroupNormDims{N: s[0], C: s[1], HW: s.TotalSize() / (s[0] * s[1]), Groups: groups, Eps: float32(eps), SiLU: silu}
	return b.op(&groupNormSS[B]{newBase(fmt.Sprintf("GroupNormScaleShift%+v", d), s, 4), d}, x, gamma, beta, ss)
}

// AvgPool2x is 2x2 average pooling with stride 2 of (N, C, H, W), H and W even.
func (b *Builder[B]) AvgPool2x(x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	if len(s) != 4 || s[2]%2 != 0 || s[3]%2 != 0 {
		b.Fail(fmt.Errorf("nn: AvgPool2x of shape %v: want (N, C, H, W) with even H and W", s))
		return nil
	}
	return b.op(&pool2x[B]{newBase(fmt.Sprintf("AvgPool2x%v", s), tensor.Shape{s[0], s[1], s[2] / 2, s[3] / 2}, 1), s[0], s[1], s[2] / 2, s[3] / 2}, x)
}

// QKVAttention is guided-diffusion's QKVAttention (legacy false) or
// QKVAttentionLegacy (legacy true) on qkv (N, 3*heads*D, ...) from a
// fused 1x1 convolution: the output is (N, heads*D, ...) with the same
// trailing shape, scale 1/sqrt(D).
func (b *Builder[B]) QKVAttention(qkv *G.Node, heads int, legacy bool) *G.Node {
	if b.err != nil {
		return nil
	}
	s := qkv.Shape()
	if len(s) < 3 || heads < 1 || s[1]%(3*heads) != 0 {
		b.Fail(fmt.Errorf("nn: QKVAttention of shape %v with %d heads: want (N, 3*heads*D, ...)", s, heads))
		return nil
	}
	dim := s[1] / (3 * heads)
	d := kernels.QKVAttnDims{B: s[0], T: s.TotalSize() / (s[0] * s[1]), Heads: heads, HeadDim: dim, Legacy: legacy,
		Scale: float32(1 / math.Sqrt(float64(dim)))}
	out := s.Clone()
	out[1] = heads * dim
	return b.op(&qkvAttention[B]{newBase(fmt.Sprintf("QKVAttention%+v%v", d, out), out, 1), d}, qkv)
}

// AttnPoolTokens prepends the spatial mean of x (N, C, H, W) to its
// positions and adds the positional embedding parameter name (C, HW+1):
// the tokens (N, C, HW+1) of guided-diffusion's AttentionPool2d.
func (b *Builder[B]) AttnPoolTokens(name string, x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	n, c, hw := s[0], s[1], s.TotalSize()/(s[0]*s[1])
	pos := b.Param(name, []int{c, hw + 1}, Normal, 0)
	return b.op(&attnPoolTokens[B]{newBase(fmt.Sprintf("AttnPoolTokens%v", s), tensor.Shape{n, c, hw + 1}, 2), n, c, hw}, x, pos)
}

// ChannelMean is the spatial mean of x (N, C, ...): (N, C).
func (b *Builder[B]) ChannelMean(x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	n, c := s[0], s[1]
	return b.op(&channelMean[B]{newBase(fmt.Sprintf("ChannelMean%v", s), tensor.Shape{n, c}, 1), n, c, s.TotalSize() / (n * c)}, x)
}

// ReLU is y = max(x, 0).
func (b *Builder[B]) ReLU(x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(&relu[B]{newBase(fmt.Sprintf("ReLU%v", x.Shape()), x.Shape(), 1)}, x)
}

// Reshape is x with another shape of the same size (a copy, so gradients
// stay correct: DESIGN.md fact 2). The same shape returns x itself.
func (b *Builder[B]) Reshape(x *G.Node, shape ...int) *G.Node {
	if b.err != nil {
		return nil
	}
	to := tensor.Shape(shape)
	if x.Shape().Eq(to) {
		return x
	}
	if to.TotalSize() != x.Shape().TotalSize() {
		b.Fail(fmt.Errorf("nn: Reshape %v to %v: sizes differ", x.Shape(), to))
		return nil
	}
	return b.op(newReshape[B](x.Shape(), to), x)
}

// FirstToken is x[:, 0, :] of x (N, T, D): (N, D).
func (b *Builder[B]) FirstToken(x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	if len(s) != 3 {
		b.Fail(fmt.Errorf("nn: FirstToken of shape %v: want (N, T, D)", s))
		return nil
	}
	return b.op(&firstToken[B]{newBase(fmt.Sprintf("FirstToken%v", s), tensor.Shape{s[0], s[2]}, 1), s[0], s[1], s[2]}, x)
}

// ---- ops --------------------------------------------------------------------------

// groupNormSS is GroupNorm with scale-shift conditioning from operands
// (x, gamma, beta, ss); it saves the statistics for its backward op.
type groupNormSS[B any] struct {
	base
	d kernels.GroupNormDims
}

func (o *groupNormSS[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	ng := o.d.N * o.d.Groups
	c.Ops.GroupNormScaleShift(out, c.Saved("mean", ng), c.Saved("rstd", ng), in[0], in[1], in[2], in[3], o.d)
	return nil
}
func (o *groupNormSS[B]) DiffWRT(int) []bool { return all(4) }
func (o *groupNormSS[B]) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	d := o.d
	total := d.N * d.C * d.HW
	g, err := apply(&groupNormSSBackward[B]{newBase("GroupNormScaleShiftBackward"+o.name[19:], tensor.Shape{total + 2*d.C + 2*d.N*d.C}, 6), d, out},
		in[0], in[1], in[2], in[3], grad, out)
	if err != nil {
		return nil, err
	}
	return parts[B](g, o.out.Clone(), tensor.Shape{d.C}, tensor.Shape{d.C}, tensor.Shape{d.N, 2 * d.C})
}

// groupNormSSBackward is [dx | dgamma | dbeta | dss] of groupNormSS,
// packed, from (x, gamma, beta, ss, dy, y) and its forward's statistics.
type groupNormSSBackward[B any] struct {
	base
	d   kernels.GroupNormDims
	fwd *G.Node
}

func (o *groupNormSSBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	d := o.d
	mean, ok1 := c.SavedOf(o.fwd, "mean")
	rstd, ok2 := c.SavedOf(o.fwd, "rstd")
	if !ok1 || !ok2 {
		return fmt.Errorf("nn: %s: its forward GroupNormScaleShift has not run in this program", o.name)
	}
	total := d.N * d.C * d.HW
	k := c.Ops
	k.GroupNormScaleShiftBackward(k.Slice(out, 0, total), k.Slice(out, total, d.C), k.Slice(out, total+d.C, d.C),
		k.Slice(out, total+2*d.C, 2*d.N*d.C), in[4], in[0], mean, rstd, in[1], in[2], in[3], d)
	return nil
}

// pool2x is 2x2 average pooling to (N, C, H, W).
type pool2x[B any] struct {
	base
	n, c, h, w int
}

func (o *pool2x[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.AvgPool2x(out, in[0], o.n, o.c, o.h, o.w)
	return nil
}
func (o *pool2x[B]) DiffWRT(int) []bool { return all(1) }
func (o *pool2x[B]) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&pool2xBackward[B]{newBase("AvgPool2xBackward"+o.name[9:], tensor.Shape{o.n, o.c, 2 * o.h, 2 * o.w}, 1), o.n, o.c, o.h, o.w}, grad)
	return G.Nodes{dx}, err
}

// pool2xBackward spreads dy/4 over each 2x2 block.
type pool2xBackward[B any] struct {
	base
	n, c, h, w int
}

func (o *pool2xBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.AvgPool2xBackward(out, in[0], o.n, o.c, o.h, o.w)
	return nil
}

// qkvAttention is attention on a fused channel-major qkv.
type qkvAttention[B any] struct {
	base
	d kernels.QKVAttnDims
}

func (o *qkvAttention[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.QKVAttention(out, in[0], o.d)
	return nil
}
func (o *qkvAttention[B]) DiffWRT(int) []bool { return all(1) }
func (o *qkvAttention[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&qkvAttentionBackward[B]{newBase("QKVAttentionBackward"+o.name[12:], in[0].Shape().Clone(), 2), o.d}, in[0], grad)
	return G.Nodes{dx}, err
}

// qkvAttentionBackward is dqkv from (qkv, do).
type qkvAttentionBackward[B any] struct {
	base
	d kernels.QKVAttnDims
}

func (o *qkvAttentionBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.QKVAttentionBackward(out, in[1], in[0], o.d)
	return nil
}

// attnPoolTokens is [mean, x] + pos from operands (x, pos).
type attnPoolTokens[B any] struct {
	base
	n, c, hw int
}

func (o *attnPoolTokens[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.AttnPoolTokens(out, in[0], in[1], o.n, o.c, o.hw)
	return nil
}
func (o *attnPoolTokens[B]) DiffWRT(int) []bool { return all(2) }
func (o *attnPoolTokens[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	nx, np := o.n*o.c*o.hw, o.c*(o.hw+1)
	g, err := apply(&attnPoolTokensBackward[B]{newBase("AttnPoolTokensBackward"+o.name[14:], tensor.Shape{nx + np}, 1), o.n, o.c, o.hw}, grad)
	if err != nil {
		return nil, err
	}
	return parts[B](g, in[0].Shape().Clone(), tensor.Shape{o.c, o.hw + 1})
}

// attnPoolTokensBackward is [dx | dpos] of attnPoolTokens, packed, from dy.
type attnPoolTokensBackward[B any] struct {
	base
	n, c, hw int
}

func (o *attnPoolTokensBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	nx, np := o.n*o.c*o.hw, o.c*(o.hw+1)
	k := c.Ops
	k.AttnPoolTokensBackward(k.Slice(out, 0, nx), k.Slice(out, nx, np), in[0], o.n, o.c, o.hw)
	return nil
}

// channelMean is the spatial mean (N, C) of (N, C, ...).
type channelMean[B any] struct {
	base
	n, c, hw int
}

func (o *channelMean[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.ChannelMean(out, in[0], o.n, o.c, o.hw)
	return nil
}
func (o *channelMean[B]) DiffWRT(int) []bool { return all(1) }
func (o *channelMean[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&channelMeanBackward[B]{newBase("ChannelMeanBackward"+o.name[11:], in[0].Shape().Clone(), 1), o.n, o.c, o.hw}, grad)
	return G.Nodes{dx}, err
}

// channelMeanBackward spreads dy/hw over the positions.
type channelMeanBackward[B any] struct {
	base
	n, c, hw int
}

func (o *channelMeanBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.ChannelMeanBackward(out, in[0], o.n, o.c, o.hw)
	return nil
}

// relu is y = max(x, 0).
type relu[B any] struct{ base }

func (o *relu[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.ReLU(out, in[0], o.size())
	return nil
}
func (o *relu[B]) DiffWRT(int) []bool { return all(1) }
func (o *relu[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&reluBackward[B]{newBase("ReLUBackward"+o.name[4:], o.out, 2)}, grad, in[0])
	return G.Nodes{dx}, err
}

// reluBackward is dx from (dy, x).
type reluBackward[B any] struct{ base }

func (o *reluBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.ReLUBackward(out, in[0], in[1], o.size())
	return nil
}

// reshape copies x into a tensor of another shape.
type reshape[B any] struct {
	base
	from tensor.Shape
}

func newReshape[B any](from, to tensor.Shape) *reshape[B] {
	return &reshape[B]{newBase(fmt.Sprintf("Reshape%v->%v", from, to), to, 1), from.Clone()}
}

func (o *reshape[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Copy(out, in[0], o.size())
	return nil
}
func (o *reshape[B]) DiffWRT(int) []bool { return all(1) }
func (o *reshape[B]) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(newReshape[B](o.out, o.from), grad)
	return G.Nodes{dx}, err
}

// firstToken is y[n, :] = x[n, 0, :] of x (N, T, D).
type firstToken[B any] struct {
	base
	n, t, d int
}

func (o *firstToken[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	k := c.Ops
	for i := 0; i < o.n; i++ {
		k.Copy(k.Slice(out, i*o.d, o.d), k.Slice(in[0], i*o.t*o.d, o.d), o.d)
	}
	return nil
}
func (o *firstToken[B]) DiffWRT(int) []bool { return all(1) }
func (o *firstToken[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&firstTokenBackward[B]{newBase("FirstTokenBackward"+o.name[10:], in[0].Shape().Clone(), 1), o.n, o.t, o.d}, grad)
	return G.Nodes{dx}, err
}

// firstTokenBackward is dx = 0 except dx[n, 0, :] = dy[n, :].
type firstTokenBackward[B any] struct {
	base
	n, t, d int
}

func (o *firstTokenBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	k := c.Ops
	k.Fill(out, 0, o.n*o.t*o.d)
	for i := 0; i < o.n; i++ {
		k.Copy(k.Slice(out, i*o.t*o.d, o.d), k.Slice(in[0], i*o.d, o.d), o.d)
	}
	return nil
}
