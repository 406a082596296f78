package unet

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ddpm-go/ddpm/kernels"
)

// The UNet's custom Gorgonia ops. Each forward op calls one kernels.Ops
// method on the model's CPU backend; its SymDiff returns backward ops that
// do the same, so Gorgonia's symbolic differentiation builds the training
// graph. Every op carries its dimensions and its output shape explicitly,
// so the graph never uses Gorgonia's Reshape (whose shared views break
// gradients, DESIGN.md fact 2). Inputs are never modified; each op
// instance (one graph node) writes its output into a tensor it allocates
// once and reuses on every run. Backward ops that yield several gradients
// write them packed into one vector (one kernel call), and Part ops copy
// each gradient out.

// backend is the CPU implementation of kernels.Ops every op runs on.
type backend = *kernels.CPU

// opBase holds what every op has: a name with its dims (for String and
// the hash), the output shape, the arity, and the backend.
type opBase struct {
	name  string
	out   tensor.Shape
	arity int
	cpu   backend
	cache *tensor.Dense // the output, reused by every run of the node
}

func (o *opBase) Arity() int { return o.arity }

func (o *opBase) Type() hm.Type {
	ts := make([]hm.Type, 0, o.arity+1)
	for i := 0; i < o.arity; i++ {
		ts = append(ts, hm.TypeVariable(rune('α'+i))) // not 'b': Gorgonia's inference uses it for the result
	}
	if len(o.out) == 0 {
		ts = append(ts, tensor.Float32)
	} else {
		ts = append(ts, G.TensorType{Dims: len(o.out), Of: tensor.Float32})
	}
	return hm.NewFnType(ts...)
}

func (o *opBase) InferShape(...G.DimSizer) (tensor.Shape, error) { return o.out.Clone(), nil }
func (o *opBase) ReturnsPtr() bool                               { return false }
func (o *opBase) CallsExtern() bool                              { return false }
func (o *opBase) OverwritesInput() int                           { return -1 }
func (o *opBase) WriteHash(h hash.Hash)                          { fmt.Fprintf(h, "%s%v", o.name, o.out) }
func (o *opBase) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}
func (o *opBase) String() string { return o.name }

// newBase returns an opBase.
func newBase(name string, out tensor.Shape, arity int, cpu backend) opBase {
	return opBase{name: name, out: out, arity: arity, cpu: cpu}
}

// newOut allocates the op's output tensor.
func (o *opBase) newOut() (*tensor.Dense, []float32) {
	if len(o.out) == 0 {
		d := tensor.New(tensor.FromScalar(float32(0)))
		return d, d.Data().([]float32)
	}
	d := tensor.New(tensor.WithShape(o.out.Clone()...), tensor.Of(tensor.Float32))
	return d, d.Data().([]float32)
}

// floats returns the float32 data of a Gorgonia value.
func floats(v G.Value) []float32 {
	switch t := v.(type) {
	case *tensor.Dense:
		return t.Data().([]float32)
	case *G.F32:
		return []float32{float32(*t)}
	}
	panic(fmt.Sprintf("unet: unexpected value type %T", v))
}

// run wraps a kernel call: it runs f on the op's output tensor (allocated
// on the first run and reused after: each op instance is one node of one
// graph, and the model copies results out before the next run) and
// reports the backend's error, if any. f must overwrite all of y.
func (o *opBase) run(f func(y []float32)) (G.Value, error) {
	if o.cache == nil {
		o.cache, _ = o.newOut()
	}
	d := o.cache
	y := d.Data().([]float32)
	f(y)
	if err := o.cpu.Sync(); err != nil {
		return nil, fmt.Errorf("unet: %s: %w", o.name, err)
	}
	return d, nil
}

// apply adds a node for op over the inputs.
func apply(op G.Op, in ...*G.Node) (*G.Node, error) { return G.ApplyOp(op, in...) }

// all returns a DiffWRT mask of n trues.
func all(n int) []bool {
	m := make([]bool, n)
	for i := range m {
		m[i] = true
	}
	return m
}

// ---- convolution ---------------------------------------------------------

// Conv2D is y = conv(x, w) + b with inputs (x (N,C,H,W), w (K,C,R,S), b (K)).
type Conv2D struct {
	opBase
	Dims kernels.ConvDims
}

func newConv2D(cpu backend, d kernels.ConvDims) *Conv2D {
	return &Conv2D{newBase(fmt.Sprintf("Conv2D%+v", d), tensor.Shape{d.N, d.K, d.OutH(), d.OutW()}, 3, cpu), d}
}

func (o *Conv2D) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.Conv2D(y, floats(in[0]), floats(in[1]), floats(in[2]), o.Dims) })
}
func (o *Conv2D) DiffWRT(int) []bool { return all(3) }
func (o *Conv2D) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	d := o.Dims
	dx, err := apply(&Conv2DBackwardData{newBase("Conv2DBackwardData"+o.name[6:], tensor.Shape{d.N, d.C, d.H, d.W}, 2, o.cpu), d}, grad, in[1])
	if err != nil {
		return nil, err
	}
	wn := d.K * d.C * d.R * d.S
	dwb, err := apply(&Conv2DBackwardFilter{newBase("Conv2DBackwardFilter"+o.name[6:], tensor.Shape{wn + d.K}, 2, o.cpu), d}, grad, in[0])
	if err != nil {
		return nil, err
	}
	p, err := parts(o.cpu, dwb, tensor.Shape{d.K, d.C, d.R, d.S}, tensor.Shape{d.K})
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, p[0], p[1]}, nil
}

// Conv2DBackwardData is dx of Conv2D from (dy, w).
type Conv2DBackwardData struct {
	opBase
	Dims kernels.ConvDims
}

func (o *Conv2DBackwardData) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.Conv2DBackwardData(y, floats(in[0]), floats(in[1]), o.Dims) })
}

// Conv2DBackwardFilter is [dw (K,C,R,S) | db (K)] of Conv2D, packed in one
// vector, from (dy, x); Part ops take the two gradients out.
type Conv2DBackwardFilter struct {
	opBase
	Dims kernels.ConvDims
}

func (o *Conv2DBackwardFilter) Do(in ...G.Value) (G.Value, error) {
	wn := o.Dims.K * o.Dims.C * o.Dims.R * o.Dims.S
	return o.run(func(y []float32) { o.cpu.Conv2DBackwardFilter(y[:wn], y[wn:], floats(in[0]), floats(in[1]), o.Dims) })
}

// ---- linear --------------------------------------------------------------

// Linear is y = x w^T + b with x (M, In) (any leading shape whose product
// is M), w (Out, In), b (Out); the output has x's leading shape and Out.
type Linear struct {
	opBase
	M, In, Out int
	inShape    tensor.Shape
}

func newLinear(cpu backend, inShape tensor.Shape, out int) *Linear {
	in := inShape[len(inShape)-1]
	m := inShape.TotalSize() / in
	os := append(inShape[:len(inShape)-1:len(inShape)-1], out)
	return &Linear{newBase(fmt.Sprintf("Linear(%v->%d)", inShape, out), os, 3, cpu), m, in, out, inShape.Clone()}
}

func (o *Linear) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.Linear(y, floats(in[0]), floats(in[1]), floats(in[2]), o.M, o.In, o.Out) })
}
func (o *Linear) DiffWRT(int) []bool { return all(3) }
func (o *Linear) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	nx, nw := o.M*o.In, o.Out*o.In
	g, err := apply(&LinearBackward{newBase("LinearBackward"+o.name[6:], tensor.Shape{nx + nw + o.Out}, 3, o.cpu), o.M, o.In, o.Out}, grad, in[0], in[1])
	if err != nil {
		return nil, err
	}
	return parts(o.cpu, g, o.inShape.Clone(), tensor.Shape{o.Out, o.In}, tensor.Shape{o.Out})
}

// LinearBackward is [dx (M,In) | dw (Out,In) | db (Out)] of Linear, packed
// in one vector, from (dy, x, w); Part ops take the gradients out.
type LinearBackward struct {
	opBase
	M, In, Out int
}

func (o *LinearBackward) Do(in ...G.Value) (G.Value, error) {
	nx, nw := o.M*o.In, o.Out*o.In
	return o.run(func(y []float32) {
		o.cpu.LinearBackward(y[:nx], y[nx:nx+nw], y[nx+nw:], floats(in[0]), floats(in[1]), floats(in[2]), o.M, o.In, o.Out)
	})
}

// ---- group norm ------------------------------------------------------------

// GroupNorm normalises x (N,C,H,W) over groups of channels, scales by
// gamma (C) and shifts by beta (C), then applies SiLU when Dims.SiLU.
type GroupNorm struct {
	opBase
	Dims       kernels.GroupNormDims
	mean, rstd []float32 // statistics of the last Do, read by GroupNormBackward
}

func newGroupNorm(cpu backend, shape tensor.Shape, groups int, eps float32, silu bool) *GroupNorm {
	d := kernels.GroupNormDims{N: shape[0], C: shape[1], HW: shape.TotalSize() / (shape[0] * shape[1]), Groups: groups, Eps: eps, SiLU: silu}
	return &GroupNorm{opBase: newBase(fmt.Sprintf("GroupNorm%+v", d), shape.Clone(), 3, cpu), Dims: d}
}

func (o *GroupNorm) Do(in ...G.Value) (G.Value, error) {
	if ng := o.Dims.N * o.Dims.Groups; len(o.mean) != ng {
		o.mean, o.rstd = make([]float32, ng), make([]float32, ng)
	}
	return o.run(func(y []float32) {
		o.cpu.GroupNorm(y, o.mean, o.rstd, floats(in[0]), floats(in[1]), floats(in[2]), o.Dims)
	})
}
func (o *GroupNorm) DiffWRT(int) []bool { return all(3) }
func (o *GroupNorm) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	c, total := o.Dims.C, o.Dims.N*o.Dims.C*o.Dims.HW
	g, err := apply(&GroupNormBackward{newBase("GroupNormBackward"+o.name[9:], tensor.Shape{total + 2*c}, 4, o.cpu), o.Dims, o, out}, in[0], in[1], in[2], grad)
	if err != nil {
		return nil, err
	}
	return parts(o.cpu, g, o.out.Clone(), tensor.Shape{c}, tensor.Shape{c})
}

// GroupNormBackward is [dx | dgamma (C) | dbeta (C)] of GroupNorm, packed
// in one vector, from (x, gamma, beta, dy). It uses the mean and 1/std its
// forward op (Fwd, node FwdNode) saved in the same run.
type GroupNormBackward struct {
	opBase
	Dims    kernels.GroupNormDims
	Fwd     *GroupNorm
	FwdNode *G.Node
}

func (o *GroupNormBackward) Do(in ...G.Value) (G.Value, error) {
	d := o.Dims
	x, gamma, beta, dy := floats(in[0]), floats(in[1]), floats(in[2]), floats(in[3])
	total := d.N * d.C * d.HW
	if len(o.Fwd.mean) != d.N*d.Groups {
		return nil, fmt.Errorf("unet: %s: the forward GroupNorm has not run", o.name)
	}
	return o.run(func(y []float32) {
		o.cpu.GroupNormBackward(y[:total], y[total:total+d.C], y[total+d.C:], dy, x, o.Fwd.mean, o.Fwd.rstd, gamma, beta, d)
	})
}

// ---- elementwise ----------------------------------------------------------

// SiLU is y = x * sigmoid(x).
type SiLU struct{ opBase }

func newSiLU(cpu backend, shape tensor.Shape) *SiLU {
	return &SiLU{newBase(fmt.Sprintf("SiLU%v", shape), shape.Clone(), 1, cpu)}
}

func (o *SiLU) Do(in ...G.Value) (G.Value, error) {
	x := floats(in[0])
	return o.run(func(y []float32) { o.cpu.SiLU(y, x, len(x)) })
}
func (o *SiLU) DiffWRT(int) []bool { return all(1) }
func (o *SiLU) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&SiLUBackward{newBase("SiLUBackward"+o.name[4:], o.out.Clone(), 2, o.cpu)}, grad, in[0])
	return G.Nodes{dx}, err
}

// SiLUBackward is dx of SiLU from (dy, x).
type SiLUBackward struct{ opBase }

func (o *SiLUBackward) Do(in ...G.Value) (G.Value, error) {
	dy := floats(in[0])
	return o.run(func(y []float32) { o.cpu.SiLUBackward(y, dy, floats(in[1]), len(dy)) })
}

// Add is y = a + b for equal shapes.
type Add struct{ opBase }

func newAdd(cpu backend, shape tensor.Shape) *Add {
	return &Add{newBase(fmt.Sprintf("Add%v", shape), shape.Clone(), 2, cpu)}
}

func (o *Add) Do(in ...G.Value) (G.Value, error) {
	a := floats(in[0])
	return o.run(func(y []float32) { o.cpu.Add(y, a, floats(in[1]), len(a)) })
}
func (o *Add) DiffWRT(int) []bool                                  { return all(2) }
func (o *Add) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) { return G.Nodes{grad, grad}, nil }

// AddChannelBias is y[n,c,p] = x[n,c,p] + bias[n,c] with bias (N,C): the
// time embedding projection added to every position.
type AddChannelBias struct {
	opBase
	N, C, P int
}

func newAddChannelBias(cpu backend, shape tensor.Shape) *AddChannelBias {
	n, c := shape[0], shape[1]
	return &AddChannelBias{newBase(fmt.Sprintf("AddChannelBias%v", shape), shape.Clone(), 2, cpu), n, c, shape.TotalSize() / (n * c)}
}

func (o *AddChannelBias) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.AddChannelBias(y, floats(in[0]), floats(in[1]), o.N, o.C, o.P) })
}
func (o *AddChannelBias) DiffWRT(int) []bool { return all(2) }
func (o *AddChannelBias) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	db, err := apply(&ChannelSum{newBase("ChannelSum"+o.name[14:], tensor.Shape{o.N, o.C}, 1, o.cpu), o.N, o.C, o.P}, grad)
	return G.Nodes{grad, db}, err
}

// ChannelSum is dbias[n,c] = sum_p dy[n,c,p].
type ChannelSum struct {
	opBase
	N, C, P int
}

func (o *ChannelSum) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.ChannelSum(y, floats(in[0]), o.N, o.C, o.P) })
}

// ---- resampling and layout -------------------------------------------------

// Upsample2x is nearest-neighbour upsampling of (N,C,H,W) to (N,C,2H,2W).
type Upsample2x struct {
	opBase
	N, C, H, W int
}

func newUpsample2x(cpu backend, s tensor.Shape) *Upsample2x {
	return &Upsample2x{newBase(fmt.Sprintf("Upsample2x%v", s), tensor.Shape{s[0], s[1], 2 * s[2], 2 * s[3]}, 1, cpu), s[0], s[1], s[2], s[3]}
}

func (o *Upsample2x) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.Upsample2x(y, floats(in[0]), o.N, o.C, o.H, o.W) })
}
func (o *Upsample2x) DiffWRT(int) []bool { return all(1) }
func (o *Upsample2x) SymDiff(_ G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&Upsample2xBackward{newBase("Upsample2xBackward"+o.name[10:], tensor.Shape{o.N, o.C, o.H, o.W}, 1, o.cpu), o.N, o.C, o.H, o.W}, grad)
	return G.Nodes{dx}, err
}

// Upsample2xBackward sums each 2x2 block of dy.
type Upsample2xBackward struct {
	opBase
	N, C, H, W int
}

func (o *Upsample2xBackward) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.Upsample2xBackward(y, floats(in[0]), o.N, o.C, o.H, o.W) })
}

// Concat joins a (N,Ca,H,W) and b (N,Cb,H,W) along channels.
type Concat struct {
	opBase
	N, Ca, Cb, P int
}

func newConcat(cpu backend, a, b tensor.Shape) *Concat {
	return &Concat{newBase(fmt.Sprintf("Concat%v%v", a, b), tensor.Shape{a[0], a[1] + b[1], a[2], a[3]}, 2, cpu), a[0], a[1], b[1], a[2] * a[3]}
}

func (o *Concat) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.ConcatChannels(y, floats(in[0]), floats(in[1]), o.N, o.Ca, o.Cb, o.P) })
}
func (o *Concat) DiffWRT(int) []bool { return all(2) }
func (o *Concat) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	h, w := o.out[2], o.out[3]
	da, err := apply(&Split{newBase("SplitA"+o.name[6:], tensor.Shape{o.N, o.Ca, h, w}, 1, o.cpu), o.N, o.Ca, o.Cb, o.P, 0}, grad)
	if err != nil {
		return nil, err
	}
	db, err := apply(&Split{newBase("SplitB"+o.name[6:], tensor.Shape{o.N, o.Cb, h, w}, 1, o.cpu), o.N, o.Ca, o.Cb, o.P, 1}, grad)
	return G.Nodes{da, db}, err
}

// Split takes part Which (0: the first Ca channels, 1: the last Cb) of a
// Concat's gradient.
type Split struct {
	opBase
	N, Ca, Cb, P, Which int
}

func (o *Split) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) {
		if o.Which == 0 {
			o.cpu.SplitChannels(y, nil, floats(in[0]), o.N, o.Ca, o.Cb, o.P)
		} else {
			o.cpu.SplitChannels(nil, y, floats(in[0]), o.N, o.Ca, o.Cb, o.P)
		}
	})
}

// Transpose is y[n,j,i] = x[n,i,j] for x viewed as (N,I,J); the output
// shape is given (so (N,C,H,W) can become tokens (N,HW,C) and back).
type Transpose struct {
	opBase
	N, I, J int
}

func newTranspose(cpu backend, n, i, j int, out tensor.Shape) *Transpose {
	return &Transpose{newBase(fmt.Sprintf("Transpose(%d,%d,%d)%v", n, i, j, out), out.Clone(), 1, cpu), n, i, j}
}

func (o *Transpose) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.Transpose12(y, floats(in[0]), o.N, o.I, o.J) })
}
func (o *Transpose) DiffWRT(int) []bool { return all(1) }
func (o *Transpose) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(newTranspose(o.cpu, o.N, o.J, o.I, in[0].Shape()), grad)
	return G.Nodes{dx}, err
}

// ---- attention ---------------------------------------------------------------

// Attention is o = softmax(q k^T * Scale) v per example and head, with q,
// k, v (B, T, Heads*HeadDim).
type Attention struct {
	opBase
	Dims kernels.AttnDims
}

func newAttention(cpu backend, shape tensor.Shape, d kernels.AttnDims) *Attention {
	return &Attention{newBase(fmt.Sprintf("Attention%+v", d), shape.Clone(), 3, cpu), d}
}

func (o *Attention) Do(in ...G.Value) (G.Value, error) {
	return o.run(func(y []float32) { o.cpu.Attention(y, floats(in[0]), floats(in[1]), floats(in[2]), o.Dims) })
}
func (o *Attention) DiffWRT(int) []bool { return all(3) }
func (o *Attention) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	n := o.out.TotalSize()
	g, err := apply(&AttentionBackward{newBase("AttentionBackward"+o.name[9:], tensor.Shape{3 * n}, 4, o.cpu), o.Dims}, in[0], in[1], in[2], grad)
	if err != nil {
		return nil, err
	}
	return parts(o.cpu, g, o.out.Clone(), o.out.Clone(), o.out.Clone())
}

// AttentionBackward is [dq | dk | dv] of Attention, packed in one vector,
// from (q, k, v, do).
type AttentionBackward struct {
	opBase
	Dims kernels.AttnDims
}

func (o *AttentionBackward) Do(in ...G.Value) (G.Value, error) {
	q, k, v, do := floats(in[0]), floats(in[1]), floats(in[2]), floats(in[3])
	n := len(q)
	return o.run(func(y []float32) {
		o.cpu.AttentionBackward(y[:n], y[n:2*n], y[2*n:], do, q, k, v, o.Dims)
	})
}

// ---- packed gradients ----------------------------------------------------------

// Part copies values [Off, Off+size) of a packed gradient vector into a
// tensor of its own shape.
type Part struct {
	opBase
	Off int
}

// parts splits packed into consecutive tensors of the given shapes.
func parts(cpu backend, packed *G.Node, shapes ...tensor.Shape) (G.Nodes, error) {
	out := make(G.Nodes, len(shapes))
	off := 0
	for i, s := range shapes {
		n, err := apply(&Part{newBase(fmt.Sprintf("Part(%d)%v<%v", off, s, packed.Shape()), s, 1, cpu), off}, packed)
		if err != nil {
			return nil, err
		}
		out[i] = n
		off += s.TotalSize()
	}
	return out, nil
}

func (o *Part) Do(in ...G.Value) (G.Value, error) {
	x := floats(in[0])
	return o.run(func(y []float32) { copy(y, x[o.Off:o.Off+len(y)]) })
}

// ---- embedding, dropout, loss -----------------------------------------------

// Embed is y = onehot table: the class embedding as a product of a one-hot
// (N, V) input with the table (V, D).
type Embed struct {
	opBase
	N, V, D int
}

func newEmbed(cpu backend, n, v, d int) *Embed {
	return &Embed{newBase(fmt.Sprintf("Embed(%d,%d,%d)", n, v, d), tensor.Shape{n, d}, 2, cpu), n, v, d}
}

func (o *Embed) Do(in ...G.Value) (G.Value, error) {
	// y (N,D) = onehot (N,V) table (V,D): LinearBackward's dx = dy w with
	// dy = onehot, w = table.
	return o.run(func(y []float32) { o.cpu.LinearBackward(y, nil, nil, floats(in[0]), nil, floats(in[1]), o.N, o.D, o.V) })
}
func (o *Embed) DiffWRT(int) []bool { return []bool{false, true} }
func (o *Embed) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dt, err := apply(&EmbedBackward{newBase("EmbedBackward"+o.name[5:], tensor.Shape{o.V, o.D}, 2, o.cpu), o.N, o.V, o.D}, in[0], grad)
	return G.Nodes{nil, dt}, err
}

// EmbedBackward is dtable = onehot^T dy.
type EmbedBackward struct {
	opBase
	N, V, D int
}

func (o *EmbedBackward) Do(in ...G.Value) (G.Value, error) {
	// dtable (V,D) = onehot^T dy: LinearBackward's dw = dy^T x with dy =
	// onehot, x = dy.
	return o.run(func(y []float32) { o.cpu.LinearBackward(nil, y, nil, floats(in[0]), floats(in[1]), nil, o.N, o.D, o.V) })
}

// Dropout is y = x * mask with mask an input node of 0 and 1/(1-p)
// values that the model redraws before each training step (Model.Step;
// the mask nodes are Graph.DropoutMasks).
type Dropout struct{ opBase }

func (o *Dropout) Do(in ...G.Value) (G.Value, error) {
	x := floats(in[0])
	return o.run(func(y []float32) { o.cpu.Mul(y, x, floats(in[1]), len(x)) })
}
func (o *Dropout) DiffWRT(int) []bool { return []bool{true, false} }
func (o *Dropout) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&Dropout{newBase("DropoutBackward"+o.name[7:], o.out.Clone(), 2, o.cpu)}, grad, in[1])
	return G.Nodes{dx, nil}, err
}

// ExternalLoss hands the network output to a Go function that returns the
// loss and writes dL/dout into Grad; its gradient op returns that Grad. It
// lets the diffusion package own the loss (diffusion never sees Gorgonia)
// while one TapeMachine run does forward, loss and backward.
type ExternalLoss struct {
	opBase
	Fn   *func(out []float32, dout []float32) (float64, error)
	Grad []float32
}

func (o *ExternalLoss) Do(in ...G.Value) (G.Value, error) {
	out := floats(in[0])
	if len(o.Grad) != len(out) {
		o.Grad = make([]float32, len(out))
	}
	clear(o.Grad)
	loss, err := (*o.Fn)(out, o.Grad)
	if err != nil {
		return nil, err
	}
	v := G.F32(float32(loss))
	return &v, nil
}
func (o *ExternalLoss) DiffWRT(int) []bool { return all(1) }
func (o *ExternalLoss) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	// The loss node is an operand so that any executor runs the loss
	// (which fills Grad) before this gradient.
	dx, err := apply(&lossGrad{newBase("ExternalLossGrad", in[0].Shape().Clone(), 2, o.cpu), o}, grad, out)
	return G.Nodes{dx}, err
}

// lossGrad returns the stored dL/dout of its ExternalLoss (scaled by the
// incoming scalar gradient, which is 1 for the loss itself) from
// (dloss, loss).
type lossGrad struct {
	opBase
	loss *ExternalLoss
}

func (o *lossGrad) Do(in ...G.Value) (G.Value, error) {
	s := floats(in[0])[0]
	return o.run(func(y []float32) {
		for i, g := range o.loss.Grad {
			y[i] = s * g
		}
	})
}
