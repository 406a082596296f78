package nn

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ddpm-go/ddpm/gexec"
	"github.com/ddpm-go/ddpm/kernels"
)

// The ops of the networks, generic over the backend's buffer type B: each
// Exec is one or a few kernels.Ops[B] calls, each SymDiff builds the
// backward ops, so gexec.Grad differentiates any graph made of them.
// Every op carries its dimensions and output shape explicitly (no
// Gorgonia Reshape, whose shared views break gradients: DESIGN.md fact 2).
// Backward ops that yield several gradients write them packed into one
// vector (one kernel call), and part ops copy each gradient out.

// ---- convolution ---------------------------------------------------------

// conv2D is y = conv(x, w) + b with operands (x (N,C,H,W), w (K,C,R,S), b (K)).
type conv2D[B any] struct {
	base
	d kernels.ConvDims
}

func newConv2D[B any](d kernels.ConvDims) *conv2D[B] {
	return &conv2D[B]{newBase(fmt.Sprintf("Conv2D%+v", d), tensor.Shape{d.N, d.K, d.OutH(), d.OutW()}, 3), d}
}

func (o *conv2D[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Conv2D(out, in[0], in[1], in[2], o.d)
	return nil
}
func (o *conv2D[B]) DiffWRT(int) []bool { return all(3) }
func (o *conv2D[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	d := o.d
	dx, err := apply(&conv2DBackwardData[B]{newBase("Conv2DBackwardData"+o.name[6:], tensor.Shape{d.N, d.C, d.H, d.W}, 2), d}, grad, in[1])
	if err != nil {
		return nil, err
	}
	wn := d.K * d.C * d.R * d.S
	dwb, err := apply(&conv2DBackwardFilter[B]{newBase("Conv2DBackwardFilter"+o.name[6:], tensor.Shape{wn + d.K}, 2), d}, grad, in[0])
	if err != nil {
		return nil, err
	}
	p, err := parts[B](dwb, tensor.Shape{d.K, d.C, d.R, d.S}, tensor.Shape{d.K})
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, p[0], p[1]}, nil
}

// conv2DBackwardData is dx of conv2D from (dy, w).
type conv2DBackwardData[B any] struct {
	base
	d kernels.ConvDims
}

func (o *conv2DBackwardData[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Conv2DBackwardData(out, in[0], in[1], o.d)
	return nil
}

// conv2DBackwardFilter is [dw (K,C,R,S) | db (K)] of conv2D, packed, from (dy, x).
type conv2DBackwardFilter[B any] struct {
	base
	d kernels.ConvDims
}

func (o *conv2DBackwardFilter[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	d := o.d
	wn := d.K * d.C * d.R * d.S
	c.Ops.Conv2DBackwardFilter(c.Ops.Slice(out, 0, wn), c.Ops.Slice(out, wn, d.K), in[0], in[1], d)
	return nil
}

// ---- linear --------------------------------------------------------------

// linear is y = x w^T + b with x (M, In) (any leading shape whose product
// is M), w (Out, In), b (Out); the output has x's leading shape and Out.
type linear[B any] struct {
	base
	m, in, outN int
	inShape     tensor.Shape
}

func newLinear[B any](inShape tensor.Shape, out int) *linear[B] {
	in := inShape[len(inShape)-1]
	os := append(inShape[:len(inShape)-1:len(inShape)-1], out)
	return &linear[B]{newBase(fmt.Sprintf("Linear(%v->%d)", inShape, out), os, 3), inShape.TotalSize() / in, in, out, inShape.Clone()}
}

func (o *linear[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Linear(out, in[0], in[1], in[2], o.m, o.in, o.outN)
	return nil
}
func (o *linear[B]) DiffWRT(int) []bool { return all(3) }
func (o *linear[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	nx, nw := o.m*o.in, o.outN*o.in
	g, err := apply(&linearBackward[B]{newBase("LinearBackward"+o.name[6:], tensor.Shape{nx + nw + o.outN}, 3), o.m, o.in, o.outN}, grad, in[0], in[1])
	if err != nil {
		return nil, err
	}
	return parts[B](g, o.inShape.Clone(), tensor.Shape{o.outN, o.in}, tensor.Shape{o.outN})
}

// linearBackward is [dx (M,In) | dw (Out,In) | db (Out)] of linear, packed,
// from (dy, x, w).
type linearBackward[B any] struct {
	base
	m, in, outN int
}

func (o *linearBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	nx, nw := o.m*o.in, o.outN*o.in
	k := c.Ops
	k.LinearBackward(k.Slice(out, 0, nx), k.Slice(out, nx, nw), k.Slice(out, nx+nw, o.outN), in[0], in[1], in[2], o.m, o.in, o.outN)
	return nil
}

// ---- group norm ------------------------------------------------------------

// groupNorm normalises x (N,C,H,W) over groups of channels, scales by
// gamma (C) and shifts by beta (C), then applies SiLU when d.SiLU. It
// saves the statistics ("mean", "rstd") for its backward op.
type groupNorm[B any] struct {
	base
	d kernels.GroupNormDims
}

func newGroupNorm[B any](shape tensor.Shape, groups int, eps float32, silu bool) *groupNorm[B] {
	d := kernels.GroupNormDims{N: shape[0], C: shape[1], HW: shape.TotalSize() / (shape[0] * shape[1]), Groups: groups, Eps: eps, SiLU: silu}
	return &groupNorm[B]{newBase(fmt.Sprintf("GroupNorm%+v", d), shape, 3), d}
}

func (o *groupNorm[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	ng := o.d.N * o.d.Groups
	c.Ops.GroupNorm(out, c.Saved("mean", ng), c.Saved("rstd", ng), in[0], in[1], in[2], o.d)
	return nil
}
func (o *groupNorm[B]) DiffWRT(int) []bool { return all(3) }
func (o *groupNorm[B]) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	c, total := o.d.C, o.d.N*o.d.C*o.d.HW
	// The forward node is an operand so that it runs (and saves its
	// statistics) before the backward op.
	g, err := apply(&groupNormBackward[B]{newBase("GroupNormBackward"+o.name[9:], tensor.Shape{total + 2*c}, 5), o.d, out}, in[0], in[1], in[2], grad, out)
	if err != nil {
		return nil, err
	}
	return parts[B](g, o.out.Clone(), tensor.Shape{c}, tensor.Shape{c})
}

// groupNormBackward is [dx | dgamma (C) | dbeta (C)] of groupNorm, packed,
// from (x, gamma, beta, dy, y) and the statistics its forward node saved.
type groupNormBackward[B any] struct {
	base
	d   kernels.GroupNormDims
	fwd *G.Node
}

func (o *groupNormBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	d := o.d
	mean, ok1 := c.SavedOf(o.fwd, "mean")
	rstd, ok2 := c.SavedOf(o.fwd, "rstd")
	if !ok1 || !ok2 {
		return fmt.Errorf("nn: %s: its forward GroupNorm has not run in this program", o.name)
	}
	total := d.N * d.C * d.HW
	k := c.Ops
	k.GroupNormBackward(k.Slice(out, 0, total), k.Slice(out, total, d.C), k.Slice(out, total+d.C, d.C), in[3], in[0], mean, rstd, in[1], in[2], d)
	return nil
}

// ---- elementwise ----------------------------------------------------------

// silu is y = x * sigmoid(x).
type silu[B any] struct{ base }

func (o *silu[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.SiLU(out, in[0], o.size())
	return nil
}
func (o *silu[B]) DiffWRT(int) []bool { return all(1) }
func (o *silu[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&siluBackward[B]{newBase("SiLUBackward"+o.name[4:], o.out, 2)}, grad, in[0])
	return G.Nodes{dx}, err
}

// siluBackward is dx of silu from (dy, x).
type siluBackward[B any] struct{ base }

func (o *siluBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.SiLUBackward(out, in[0], in[1], o.size())
	return nil
}

// add is y = a + b for equal shapes.
type add[B any] struct{ base }

func (o *add[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Add(out, in[0], in[1], o.size())
	return nil
}
func (o *add[B]) DiffWRT(int) []bool { return all(2) }
func (o *add[B]) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	return G.Nodes{grad, grad}, nil
}

// addChannelBias is y[n,c,p] = x[n,c,p] + bias[n,c] with bias (N,C): the
// time embedding projection added to every position.
type addChannelBias[B any] struct {
	base
	n, c, p int
}

func newAddChannelBias[B any](shape tensor.Shape) *addChannelBias[B] {
	n, c := shape[0], shape[1]
	return &addChannelBias[B]{newBase(fmt.Sprintf("AddChannelBias%v", shape), shape, 2), n, c, shape.TotalSize() / (n * c)}
}

func (o *addChannelBias[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.AddChannelBias(out, in[0], in[1], o.n, o.c, o.p)
	return nil
}
func (o *addChannelBias[B]) DiffWRT(int) []bool { return all(2) }
func (o *addChannelBias[B]) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	db, err := apply(&channelSum[B]{newBase("ChannelSum"+o.name[14:], tensor.Shape{o.n, o.c}, 1), o.n, o.c, o.p}, grad)
	return G.Nodes{grad, db}, err
}

// channelSum is dbias[n,c] = sum_p dy[n,c,p].
type channelSum[B any] struct {
	base
	n, c, p int
}

func (o *channelSum[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.ChannelSum(out, in[0], o.n, o.c, o.p)
	return nil
}

// ---- resampling and layout -------------------------------------------------

// upsample2x is nearest-neighbour upsampling of (N,C,H,W) to (N,C,2H,2W).
type upsample2x[B any] struct {
	base
	n, c, h, w int
}

func newUpsample2x[B any](s tensor.Shape) *upsample2x[B] {
	return &upsample2x[B]{newBase(fmt.Sprintf("Upsample2x%v", s), tensor.Shape{s[0], s[1], 2 * s[2], 2 * s[3]}, 1), s[0], s[1], s[2], s[3]}
}

func (o *upsample2x[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Upsample2x(out, in[0], o.n, o.c, o.h, o.w)
	return nil
}
func (o *upsample2x[B]) DiffWRT(int) []bool { return all(1) }
func (o *upsample2x[B]) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&upsample2xBackward[B]{newBase("Upsample2xBackward"+o.name[10:], tensor.Shape{o.n, o.c, o.h, o.w}, 1), o.n, o.c, o.h, o.w}, grad)
	return G.Nodes{dx}, err
}

// upsample2xBackward sums each 2x2 block of dy.
type upsample2xBackward[B any] struct {
	base
	n, c, h, w int
}

func (o *upsample2xBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Upsample2xBackward(out, in[0], o.n, o.c, o.h, o.w)
	return nil
}

// concat joins a (N,Ca,H,W) and b (N,Cb,H,W) along channels.
type concat[B any] struct {
	base
	n, ca, cb, p int
}

func newConcat[B any](a, b tensor.Shape) *concat[B] {
	return &concat[B]{newBase(fmt.Sprintf("Concat%v%v", a, b), tensor.Shape{a[0], a[1] + b[1], a[2], a[3]}, 2), a[0], a[1], b[1], a[2] * a[3]}
}

func (o *concat[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.ConcatChannels(out, in[0], in[1], o.n, o.ca, o.cb, o.p)
	return nil
}
func (o *concat[B]) DiffWRT(int) []bool { return all(2) }
func (o *concat[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	h, w := o.out[2], o.out[3]
	da, err := apply(&split[B]{newBase("SplitA"+o.name[6:], tensor.Shape{o.n, o.ca, h, w}, 1), o.n, o.ca, o.cb, o.p, 0}, grad)
	if err != nil {
		return nil, err
	}
	db, err := apply(&split[B]{newBase("SplitB"+o.name[6:], tensor.Shape{o.n, o.cb, h, w}, 1), o.n, o.ca, o.cb, o.p, 1}, grad)
	return G.Nodes{da, db}, err
}

// split takes part which (0: the first ca channels, 1: the last cb) of a
// concat's gradient.
type split[B any] struct {
	base
	n, ca, cb, p, which int
}

func (o *split[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	var zero B
	if o.which == 0 {
		c.Ops.SplitChannels(out, zero, in[0], o.n, o.ca, o.cb, o.p)
	} else {
		c.Ops.SplitChannels(zero, out, in[0], o.n, o.ca, o.cb, o.p)
	}
	return nil
}

// transpose is y[n,j,i] = x[n,i,j] for x viewed as (N,I,J); the output
// shape is given (so (N,C,H,W) can become tokens (N,HW,C) and back).
type transpose[B any] struct {
	base
	n, i, j int
}

func newTranspose[B any](n, i, j int, out tensor.Shape) *transpose[B] {
	return &transpose[B]{newBase(fmt.Sprintf("Transpose(%d,%d,%d)%v", n, i, j, out), out, 1), n, i, j}
}

func (o *transpose[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Transpose12(out, in[0], o.n, o.i, o.j)
	return nil
}
func (o *transpose[B]) DiffWRT(int) []bool { return all(1) }
func (o *transpose[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(newTranspose[B](o.n, o.j, o.i, in[0].Shape()), grad)
	return G.Nodes{dx}, err
}

// ---- attention ---------------------------------------------------------------

// attention is o = softmax(q k^T * Scale) v per example and head, with q,
// k, v (B, T, Heads*HeadDim).
type attention[B any] struct {
	base
	d kernels.AttnDims
}

func (o *attention[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.Attention(out, in[0], in[1], in[2], o.d)
	return nil
}
func (o *attention[B]) DiffWRT(int) []bool { return all(3) }
func (o *attention[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	n := o.out.TotalSize()
	g, err := apply(&attentionBackward[B]{newBase("AttentionBackward"+o.name[9:], tensor.Shape{3 * n}, 4), o.d}, in[0], in[1], in[2], grad)
	if err != nil {
		return nil, err
	}
	return parts[B](g, o.out.Clone(), o.out.Clone(), o.out.Clone())
}

// attentionBackward is [dq | dk | dv] of attention, packed, from (q, k, v, do).
type attentionBackward[B any] struct {
	base
	d kernels.AttnDims
}

func (o *attentionBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	n := o.out.TotalSize() / 3
	k := c.Ops
	k.AttentionBackward(k.Slice(out, 0, n), k.Slice(out, n, n), k.Slice(out, 2*n, n), in[3], in[0], in[1], in[2], o.d)
	return nil
}

// ---- packed gradients ----------------------------------------------------------

// part copies values [off, off+size) of a packed gradient vector into a
// tensor of its own shape.
type part[B any] struct {
	base
	off int
}

// parts splits packed into consecutive tensors of the given shapes.
func parts[B any](packed *G.Node, shapes ...tensor.Shape) (G.Nodes, error) {
	out := make(G.Nodes, len(shapes))
	off := 0
	for i, s := range shapes {
		n, err := apply(&part[B]{newBase(fmt.Sprintf("Part(%d)%v<%v", off, s, packed.Shape()), s, 1), off}, packed)
		if err != nil {
			return nil, err
		}
		out[i] = n
		off += s.TotalSize()
	}
	return out, nil
}

func (o *part[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	n := o.size()
	c.Ops.Copy(out, c.Ops.Slice(in[0], o.off, n), n)
	return nil
}

// ---- embedding -----------------------------------------------------------------

// embed is y = onehot table: a class embedding as the product of a one-hot
// (N, V) input with the table (V, D).
type embed[B any] struct {
	base
	n, v, d int
}

func (o *embed[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	// y (N,D) = onehot (N,V) table (V,D): LinearBackward's dx = dy w with
	// dy = onehot, w = table.
	var zero B
	c.Ops.LinearBackward(out, zero, zero, in[0], zero, in[1], o.n, o.d, o.v)
	return nil
}
func (o *embed[B]) DiffWRT(int) []bool { return []bool{false, true} }
func (o *embed[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dt, err := apply(&embedBackward[B]{newBase("EmbedBackward"+o.name[5:], tensor.Shape{o.v, o.d}, 2), o.n, o.v, o.d}, in[0], grad)
	return G.Nodes{nil, dt}, err
}

// embedBackward is dtable = onehot^T dy.
type embedBackward[B any] struct {
	base
	n, v, d int
}

func (o *embedBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	// dtable (V,D) = onehot^T dy: LinearBackward's dw = dy^T x with dy =
	// onehot, x = dy.
	var zero B
	c.Ops.LinearBackward(zero, out, zero, in[0], in[1], zero, o.n, o.d, o.v)
	return nil
}

// ---- dropout -------------------------------------------------------------------

// dropout is inverted dropout with a mask drawn per training step from
// the step's seed (State) and the layer index, by element position in
// the global batch (State.Example), so the mask of an example does not
// depend on how a batch is split; the backward op redraws the same mask.
type dropout[B any] struct {
	base
	p     float32
	layer uint64
	state *State
}

func (o *dropout[B]) seed() uint64 {
	return o.state.Seed ^ (o.layer+1)*0xd1b54a32d192ed03
}

func (o *dropout[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	n := o.size()
	c.Ops.Dropout(out, in[0], o.p, o.seed(), o.state.Example*(n/o.out[0]), n)
	return nil
}
func (o *dropout[B]) DiffWRT(int) []bool { return all(1) }
func (o *dropout[B]) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&dropout[B]{newBase("DropoutBackward"+o.name[7:], o.out, 1), o.p, o.layer, o.state}, grad)
	return G.Nodes{dx}, err
}
