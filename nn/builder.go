package nn

import (
	"fmt"
	"math"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ddpm-go/ddpm/kernels"
)

// Init says how a parameter is initialised when a network is created.
type Init int

const (
	// Uniform draws from U(-1/sqrt(fanIn), 1/sqrt(fanIn)), PyTorch's
	// default for the weights and biases of convolutions and linear layers.
	Uniform Init = iota
	// Zeros fills with 0 (norm shifts).
	Zeros
	// Ones fills with 1 (norm scales).
	Ones
	// Normal draws from N(0, 1) (embedding tables).
	Normal
)

// Param is one parameter tensor of a network: its name (for diffusers
// models, the state_dict key), shape, and place in the network's flat
// parameter buffer.
type Param struct {
	Name   string
	Shape  []int
	Offset int // first value in the flat buffer
	Size   int // number of values
}

// State is the per-step host state that ops read when they are queued:
// the dropout seed of a training step and the position of the batch's
// first example in the global batch (so a data-parallel rank draws the
// masks the whole batch would).
type State struct {
	Seed    uint64
	Example int
}

// Builder builds one graph of a network: Input declares data leaves,
// Param declares (or, after the first graph, finds) parameters, and the
// layer methods add ops. The first error is kept and reported by Err; the
// methods return nil after it, so a build function can run to its end and
// check once.
type Builder[B any] struct {
	g      *G.ExprGraph
	set    *paramSet
	state  *State
	train  bool
	fused  bool
	err    error
	inputs map[string]*G.Node
	params map[string]*G.Node
	layers uint64 // dropout layers so far (their seeds differ)
}

// Train reports whether this is a training graph (dropout active).
func (b *Builder[B]) Train() bool { return b.train }

// Fused reports whether the graph only runs forward (no gradients are
// taken through it), so the layer methods that have a fused op
// (NormConv, NormTokens, LinearToMap) use it.
func (b *Builder[B]) Fused() bool { return b.fused }

// Err returns the first error of the build.
func (b *Builder[B]) Err() error { return b.err }

// Fail records err as the build's error unless one is recorded already.
func (b *Builder[B]) Fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// Input returns the data leaf called name with the given shape, creating
// it on first use; Net.Forward and Net.TrainStep fill inputs by name.
func (b *Builder[B]) Input(name string, shape ...int) *G.Node {
	if b.err != nil {
		return nil
	}
	if n, ok := b.inputs[name]; ok {
		if !slices.Equal([]int(n.Shape()), shape) {
			b.Fail(fmt.Errorf("nn: input %s declared with shapes %v and %v", name, n.Shape(), shape))
			return nil
		}
		return n
	}
	n := G.NewTensor(b.g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name))
	b.inputs[name] = n
	return n
}

// Param returns the node of parameter name (shape, initialised by init
// with fan-in fanIn when the network is created). Every graph of a
// network must declare the same parameters with the same shapes.
func (b *Builder[B]) Param(name string, shape []int, init Init, fanIn int) *G.Node {
	if b.err != nil {
		return nil
	}
	if n, ok := b.params[name]; ok {
		return n
	}
	if err := b.set.declare(name, shape, init, fanIn); err != nil {
		b.Fail(err)
		return nil
	}
	n := G.NewTensor(b.g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name))
	b.params[name] = n
	return n
}

// op adds a node for op over the inputs.
func (b *Builder[B]) op(op G.Op, in ...*G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	for _, x := range in {
		if x == nil {
			b.Fail(fmt.Errorf("nn: %v: nil operand", op))
			return nil
		}
	}
	n, err := apply(op, in...)
	b.Fail(err)
	return n
}

// Conv is a k x k convolution with bias (name.weight (cout, C, k, k),
// name.bias) from x's C channels to cout, with stride and the same
// padding on every side.
func (b *Builder[B]) Conv(name string, x *G.Node, cout, k, stride, pad int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	return b.ConvDims(name, x, kernels.ConvDims{N: s[0], C: s[1], H: s[2], W: s[3], K: cout, R: k, S: k,
		StrideH: stride, StrideW: stride, PadTop: pad, PadLeft: pad, PadBottom: pad, PadRight: pad})
}

// ConvDims is Conv with explicit dimensions (asymmetric padding).
func (b *Builder[B]) ConvDims(name string, x *G.Node, d kernels.ConvDims) *G.Node {
	if b.err != nil {
		return nil
	}
	if err := d.Validate(); err != nil {
		b.Fail(fmt.Errorf("nn: %s: %w", name, err))
		return nil
	}
	w, bias := b.convParams(name, d)
	return b.op(newConv2D[B](d), x, w, bias)
}

// convParams declares a convolution's name.weight (K, C, R, S) and
// name.bias (K).
func (b *Builder[B]) convParams(name string, d kernels.ConvDims) (w, bias *G.Node) {
	fan := d.C * d.R * d.S
	return b.Param(name+".weight", []int{d.K, d.C, d.R, d.S}, Uniform, fan), b.Param(name+".bias", []int{d.K}, Uniform, fan)
}

// Linear is y = x w^T + b over x's last axis (name.weight (out, in),
// name.bias (out)), PyTorch's nn.Linear.
func (b *Builder[B]) Linear(name string, x *G.Node, out int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	w, bias := b.linearParams(name, s[len(s)-1], out)
	return b.op(newLinear[B](s, out), x, w, bias)
}

// linearParams declares Linear's name.weight (out, in) and name.bias (out).
func (b *Builder[B]) linearParams(name string, in, out int) (w, bias *G.Node) {
	return b.Param(name+".weight", []int{out, in}, Uniform, in), b.Param(name+".bias", []int{out}, Uniform, in)
}

// GroupNorm normalises x (N, C, H, W) over groups of channels with
// name.weight and name.bias (C), then applies SiLU when silu.
func (b *Builder[B]) GroupNorm(name string, x *G.Node, groups int, eps float64, silu bool) *G.Node {
	if b.err != nil {
		return nil
	}
	gamma, beta := b.normParams(name, x, groups)
	return b.op(newGroupNorm[B](x.Shape(), groups, float32(eps), silu), x, gamma, beta)
}

// normParams checks that x's channels split into groups and declares
// GroupNorm's name.weight and name.bias (C); nil after a failure.
func (b *Builder[B]) normParams(name string, x *G.Node, groups int) (gamma, beta *G.Node) {
	s := x.Shape()
	if groups < 1 || s[1]%groups != 0 {
		b.Fail(fmt.Errorf("nn: %s: %d channels do not split into %d groups", name, s[1], groups))
		return nil, nil
	}
	return b.Param(name+".weight", []int{s[1]}, Ones, 0), b.Param(name+".bias", []int{s[1]}, Zeros, 0)
}

// SiLU is y = x sigmoid(x).
func (b *Builder[B]) SiLU(x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(&silu[B]{newBase(fmt.Sprintf("SiLU%v", x.Shape()), x.Shape(), 1)}, x)
}

// Add is x + y for equal shapes.
func (b *Builder[B]) Add(x, y *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	if !x.Shape().Eq(y.Shape()) {
		b.Fail(fmt.Errorf("nn: Add of shapes %v and %v", x.Shape(), y.Shape()))
		return nil
	}
	return b.op(&add[B]{newBase(fmt.Sprintf("Add%v", x.Shape()), x.Shape(), 2)}, x, y)
}

// AddChannelBias is x[n,c,...] + bias[n,c] with bias (N, C).
func (b *Builder[B]) AddChannelBias(x, bias *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(newAddChannelBias[B](x.Shape()), x, bias)
}

// Concat joins x (N, Ca, H, W) and y (N, Cb, H, W) along channels.
func (b *Builder[B]) Concat(x, y *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(newConcat[B](x.Shape(), y.Shape()), x, y)
}

// Upsample2x is nearest-neighbour 2x upsampling of (N, C, H, W).
func (b *Builder[B]) Upsample2x(x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(newUpsample2x[B](x.Shape()), x)
}

// Transpose views x as (n, i, j) and returns (n, j, i) shaped out.
func (b *Builder[B]) Transpose(x *G.Node, n, i, j int, out ...int) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(newTranspose[B](n, i, j, tensor.Shape(out)), x)
}

// Attention is softmax(q k^T Scale) v per example and head, for q, k, v
// (B, T, Heads*HeadDim).
func (b *Builder[B]) Attention(q, k, v *G.Node, d kernels.AttnDims) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(&attention[B]{newBase(fmt.Sprintf("Attention%+v", d), q.Shape(), 3), d}, q, k, v)
}

// Embed is onehot (N, V) times the table parameter name (V, D): a class
// embedding.
func (b *Builder[B]) Embed(name string, onehot *G.Node, d int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := onehot.Shape()
	table := b.Param(name, []int{s[1], d}, Normal, 0)
	return b.op(&embed[B]{newBase(fmt.Sprintf("Embed(%d,%d,%d)", s[0], s[1], d), tensor.Shape{s[0], d}, 2), s[0], s[1], d}, onehot, table)
}

// Dropout is inverted dropout with probability p in a training graph, and
// x itself otherwise (or when p is 0).
func (b *Builder[B]) Dropout(x *G.Node, p float64) *G.Node {
	if b.err != nil || !b.train || p == 0 {
		return x
	}
	if !(p > 0 && p < 1) {
		b.Fail(fmt.Errorf("nn: dropout %v: must be in [0, 1)", p))
		return nil
	}
	b.layers++
	return b.op(&dropout[B]{newBase(fmt.Sprintf("Dropout#%d%v", b.layers, x.Shape()), x.Shape(), 1), float32(p), b.layers, b.state}, x)
}

// paramSet is a network's parameters: declared by the first graph built
// (with initial values drawn in declaration order), checked by later ones.
type paramSet struct {
	list   []Param
	byName map[string]int
	total  int
	open   bool      // declarations allowed (the first build)
	init   []float32 // initial values, while open
	draw   func(Init, int) float32
}

func (s *paramSet) declare(name string, shape []int, init Init, fanIn int) error {
	if i, ok := s.byName[name]; ok {
		if !slices.Equal(s.list[i].Shape, shape) {
			return fmt.Errorf("nn: parameter %s has shape %v, the graph needs %v", name, s.list[i].Shape, shape)
		}
		return nil
	}
	if !s.open {
		return fmt.Errorf("nn: parameter %s %v is not part of the network", name, shape)
	}
	size := 1
	for _, d := range shape {
		size *= d
	}
	s.list = append(s.list, Param{Name: name, Shape: slices.Clone(shape), Offset: s.total, Size: size})
	s.byName[name] = len(s.list) - 1
	s.total += size
	if s.draw == nil { // NewEmpty: no initial values
		return nil
	}
	for range size {
		s.init = append(s.init, s.draw(init, fanIn))
	}
	return nil
}

// drawer returns the initialiser of a new network: values in the order
// parameters are declared, from r.
func drawer(uniform func() float64, normal func() float64) func(Init, int) float32 {
	return func(k Init, fanIn int) float32 {
		switch k {
		case Uniform:
			bound := 1 / math.Sqrt(float64(max(fanIn, 1)))
			return float32((2*uniform() - 1) * bound)
		case Ones:
			return 1
		case Normal:
			return float32(normal())
		}
		return 0
	}
}
