package nn

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ddpm-go/ddpm/gexec"
	"github.com/ddpm-go/ddpm/kernels"
)

// The layers of GLIDE's text transformer and text-conditioned attention
// (openai/glide-text2im, glide_text2im/xf.py, text2im_model.py and
// unet.py): the token, positional and padding embeddings, LayerNorm,
// exact GELU, a token pick, and attention whose keys and values are the
// encoder's followed by the block's own.

// Tokens is the host state a TextEmbedding reads when it is queued: the
// token ids (N*T, row-major) and, with padding, the mask (N*T, true for
// real tokens). The caller sets them before each run and must not change
// them while the network runs.
type Tokens struct {
	IDs  []int
	Mask []bool
}

// ---- Builder methods ----------------------------------------------------------

// TextEmbedding declares prefix+"token_embedding.weight" (vocab, d),
// prefix+"positional_embedding" (t, d) and, with padding,
// prefix+"padding_embedding" (t, d), and returns (n, t, d):
//
//	y[i, j] = token_embedding[ids[i, j]] + positional_embedding[j]
//	y[i, j] = padding_embedding[j]            where padding and !mask[i, j]
//
// (Text2ImUNet.get_text_emb with xf_padding). The ids and mask are read
// from tok when the op is queued.
func (b *Builder[B]) TextEmbedding(prefix string, tok *Tokens, n, t, vocab, d int, padding bool) *G.Node {
	if b.err != nil {
		return nil
	}
	if tok == nil || n < 1 || t < 1 || vocab < 1 || d < 1 {
		b.Fail(fmt.Errorf("nn: %sTextEmbedding(%d, %d, %d, %d): want token state and positive sizes", prefix, n, t, vocab, d))
		return nil
	}
	table := b.Param(prefix+"token_embedding.weight", []int{vocab, d}, Normal, 0)
	pos := b.Param(prefix+"positional_embedding", []int{t, d}, Normal, 0)
	in := []*G.Node{table, pos}
	if padding {
		in = append(in, b.Param(prefix+"padding_embedding", []int{t, d}, Normal, 0))
	}
	o := &textEmbedding[B]{newBase(fmt.Sprintf("TextEmbedding(%d,%d,%d,%d,%v)", n, t, vocab, d, padding), tensor.Shape{n, t, d}, len(in)), n, t, vocab, d, padding, tok}
	return b.op(o, in...)
}

// LayerNorm is PyTorch's nn.LayerNorm over x's last axis (D) with
// name.weight and name.bias (D): y = (x - mean) / sqrt(var + eps) * weight
// + bias, the biased variance over the D values of each row. It runs as
// GroupNorm with one group on x viewed as (rows, D, 1, 1).
func (b *Builder[B]) LayerNorm(name string, x *G.Node, eps float64) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	if len(s) < 1 || s[len(s)-1] < 1 {
		b.Fail(fmt.Errorf("nn: %s: LayerNorm of shape %v", name, s))
		return nil
	}
	d := s[len(s)-1]
	rows := s.TotalSize() / d
	h := b.Reshape(x, rows, d, 1, 1)
	h = b.GroupNorm(name, h, 1, eps, false)
	return b.Reshape(h, s...)
}

// GELU is PyTorch's exact nn.GELU: y = x Phi(x) = x (1 + erf(x/sqrt 2)) / 2,
// kernels.Ops.GELU (and GELUBackward for its gradient) on any backend.
func (b *Builder[B]) GELU(x *G.Node) *G.Node {
	if b.err != nil {
		return nil
	}
	return b.op(&gelu[B]{newBase(fmt.Sprintf("GELU%v", x.Shape()), x.Shape(), 1)}, x)
}

// TokenAt is x[:, i, :] of x (N, T, D): (N, D).
func (b *Builder[B]) TokenAt(x *G.Node, i int) *G.Node {
	if b.err != nil {
		return nil
	}
	s := x.Shape()
	if len(s) != 3 || i < 0 || i >= s[1] {
		b.Fail(fmt.Errorf("nn: TokenAt(%d) of shape %v: want (N, T, D) with 0 <= i < T", i, s))
		return nil
	}
	return b.op(&tokenAt[B]{newBase(fmt.Sprintf("TokenAt(%d)%v", i, s), tensor.Shape{s[0], s[2]}, 1), s[0], s[1], s[2], i}, x)
}

// QKVAttentionKV is glide-text2im's QKVAttention with encoder_kv: qkv
// (N, 3*heads*D, ...) in the legacy head order (per head [q; k; v], D
// channels each) and ekv (N, 2*heads*D, S) (per head [k; v]) from the
// encoder. Each head's keys and values are the encoder's S followed by
// the block's own L = prod(...) positions:
//
//	o[:, t] = sum_s softmax_s(q[:, t] . K[:, s] / sqrt(D)) V[:, s],
//	K = [ek, k], V = [ev, v]
//
// and the output is (N, heads*D, ...). It runs as the fused QKVAttention
// on the (S+L)-position qkv whose first S queries are zero, keeping the
// last L outputs.
func (b *Builder[B]) QKVAttentionKV(qkv, ekv *G.Node, heads int) *G.Node {
	if b.err != nil {
		return nil
	}
	s, e := qkv.Shape(), ekv.Shape()
	if len(s) < 3 || heads < 1 || s[1]%(3*heads) != 0 {
		b.Fail(fmt.Errorf("nn: QKVAttentionKV of shape %v with %d heads: want (N, 3*heads*D, ...)", s, heads))
		return nil
	}
	dim := s[1] / (3 * heads)
	if len(e) != 3 || e[0] != s[0] || e[1] != 2*heads*dim {
		b.Fail(fmt.Errorf("nn: QKVAttentionKV: encoder kv of shape %v, want (%d, %d, S)", e, s[0], 2*heads*dim))
		return nil
	}
	k := kvDims{n: s[0], heads: heads, dim: dim, l: s.TotalSize() / (s[0] * s[1]), s: e[2]}
	out := s.Clone()
	out[1] = heads * dim
	return b.op(&qkvAttentionKV[B]{newBase(fmt.Sprintf("QKVAttentionKV%+v%v", k, out), out, 2), k}, qkv, ekv)
}

// ---- text embedding -------------------------------------------------------------

// textEmbedding is TextEmbedding from operands (table, pos[, pad]).
type textEmbedding[B any] struct {
	base
	n, t, vocab, d int
	padding        bool
	tok            *Tokens
}

// check validates the host token state against the op's shape.
func (o *textEmbedding[B]) check() error {
	nt := o.n * o.t
	if len(o.tok.IDs) != nt {
		return fmt.Errorf("nn: %s: %d token ids, want %d", o.name, len(o.tok.IDs), nt)
	}
	if o.padding && len(o.tok.Mask) != nt {
		return fmt.Errorf("nn: %s: %d mask values, want %d", o.name, len(o.tok.Mask), nt)
	}
	for i, id := range o.tok.IDs {
		if id < 0 || id >= o.vocab {
			return fmt.Errorf("nn: %s: token ids[%d] = %d: must be in [0, %d)", o.name, i, id, o.vocab)
		}
	}
	return nil
}

// padded reports whether row r (of N*T) takes the padding embedding.
func (o *textEmbedding[B]) padded(r int) bool { return o.padding && !o.tok.Mask[r] }

func (o *textEmbedding[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	if err := o.check(); err != nil {
		return err
	}
	k, td := c.Ops, o.t*o.d
	k.Embedding(out, in[0], o.tok.IDs, o.d)
	for i := 0; i < o.n; i++ {
		row := k.Slice(out, i*td, td)
		k.Add(row, row, in[1], td)
	}
	for r := 0; r < o.n*o.t; r++ {
		if o.padded(r) {
			k.Copy(k.Slice(out, r*o.d, o.d), k.Slice(in[2], (r%o.t)*o.d, o.d), o.d)
		}
	}
	return nil
}
func (o *textEmbedding[B]) DiffWRT(int) []bool { return all(o.arity) }
func (o *textEmbedding[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	nt, np := o.vocab*o.d, o.t*o.d
	size := nt + np
	shapes := []tensor.Shape{{o.vocab, o.d}, {o.t, o.d}}
	if o.padding {
		size += np
		shapes = append(shapes, tensor.Shape{o.t, o.d})
	}
	g, err := apply(&textEmbeddingBackward[B]{newBase("TextEmbeddingBackward"+o.name[13:], tensor.Shape{size}, 1), o}, grad)
	if err != nil {
		return nil, err
	}
	return parts[B](g, shapes...)
}

// textEmbeddingBackward is [dtable | dpos | dpad] of textEmbedding,
// packed, from dy (N, T, D): the rows of real tokens go to their table
// rows and to dpos, the padded rows to dpad.
type textEmbeddingBackward[B any] struct {
	base
	f *textEmbedding[B]
}

func (o *textEmbeddingBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	f := o.f
	if err := f.check(); err != nil {
		return err
	}
	k, d, td, nt := c.Ops, f.d, f.t*f.d, f.n*f.t*f.d
	dy := in[0]
	kept := dy
	if f.padding {
		kept = c.Temp(nt)
		k.Copy(kept, dy, nt)
		for r := 0; r < f.n*f.t; r++ {
			if f.padded(r) {
				k.Fill(k.Slice(kept, r*d, d), 0, d)
			}
		}
	}
	k.EmbeddingBackward(k.Slice(out, 0, f.vocab*d), kept, f.tok.IDs, f.vocab, d)
	dpos := k.Slice(out, f.vocab*d, td)
	k.Fill(dpos, 0, td)
	for i := 0; i < f.n; i++ {
		k.Add(dpos, dpos, k.Slice(kept, i*td, td), td)
	}
	if f.padding {
		dpad := k.Slice(out, f.vocab*d+td, td)
		k.Fill(dpad, 0, td)
		for r := 0; r < f.n*f.t; r++ {
			if f.padded(r) {
				row := k.Slice(dpad, (r%f.t)*d, d)
				k.Add(row, row, k.Slice(dy, r*d, d), d)
			}
		}
	}
	return nil
}

// ---- GELU -------------------------------------------------------------------------

// gelu is y = x Phi(x), kernels.Ops.GELU on any backend.
type gelu[B any] struct{ base }

// GELURef is the exact GELU of one value, x Phi(x) = x (1 + erf(x/sqrt 2))
// / 2, in float64 (the plain-Go twin of the GELU op), evaluated as
// x erfc(-x/sqrt 2) / 2 so that it keeps its relative accuracy for very
// negative x, where 1 + erf cancels. kernels.CPU's GELU is it rounded to
// float32.
func GELURef(x float64) float64 { return 0.5 * x * math.Erfc(-x/math.Sqrt2) }

// GELUGradRef is dGELU/dx = Phi(x) + x phi(x), phi the standard normal
// density (Phi as erfc, as in GELURef).
func GELUGradRef(x float64) float64 {
	return 0.5*math.Erfc(-x/math.Sqrt2) + x*math.Exp(-0.5*x*x)/math.Sqrt(2*math.Pi)
}

func (o *gelu[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.GELU(out, in[0], o.size())
	return nil
}
func (o *gelu[B]) DiffWRT(int) []bool { return all(1) }
func (o *gelu[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&geluBackward[B]{newBase("GELUBackward"+o.name[4:], o.out, 2)}, grad, in[0])
	return G.Nodes{dx}, err
}

// geluBackward is dx = dy (Phi(x) + x phi(x)) from (dy, x),
// kernels.Ops.GELUBackward on any backend.
type geluBackward[B any] struct{ base }

func (o *geluBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	c.Ops.GELUBackward(out, in[0], in[1], o.size())
	return nil
}

// ---- token pick -------------------------------------------------------------------

// tokenAt is y[n, :] = x[n, i, :] of x (N, T, D).
type tokenAt[B any] struct {
	base
	n, t, d, i int
}

func (o *tokenAt[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	k := c.Ops
	for j := 0; j < o.n; j++ {
		k.Copy(k.Slice(out, j*o.d, o.d), k.Slice(in[0], (j*o.t+o.i)*o.d, o.d), o.d)
	}
	return nil
}
func (o *tokenAt[B]) DiffWRT(int) []bool { return all(1) }
func (o *tokenAt[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	dx, err := apply(&tokenAtBackward[B]{newBase("TokenAtBackward"+o.name[7:], in[0].Shape().Clone(), 1), o.n, o.t, o.d, o.i}, grad)
	return G.Nodes{dx}, err
}

// tokenAtBackward is dx = 0 except dx[n, i, :] = dy[n, :].
type tokenAtBackward[B any] struct {
	base
	n, t, d, i int
}

func (o *tokenAtBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	k := c.Ops
	k.Fill(out, 0, o.n*o.t*o.d)
	for j := 0; j < o.n; j++ {
		k.Copy(k.Slice(out, (j*o.t+o.i)*o.d, o.d), k.Slice(in[0], j*o.d, o.d), o.d)
	}
	return nil
}

// ---- attention with encoder keys and values ----------------------------------------

// kvDims are the sizes of QKVAttentionKV: batch n, heads of dim
// channels, l own positions and s encoder positions.
type kvDims struct {
	n, heads, dim, l, s int
}

// attn is the fused attention over all s+l positions.
func (k kvDims) attn() kernels.QKVAttnDims {
	return kernels.QKVAttnDims{B: k.n, T: k.s + k.l, Heads: k.heads, HeadDim: k.dim, Legacy: true,
		Scale: float32(1 / math.Sqrt(float64(k.dim)))}
}

// fusedQKV writes into full (N, 3C, S+L) the legacy-order qkv whose
// first S positions are [0; ek; ev] per head and whose last L are qkv's.
func fusedQKV[B any](c *gexec.Ctx[B], d kvDims, full, qkv, ekv B) {
	ops := c.Ops
	nh3 := d.n * d.heads * 3
	zeros := c.Temp(d.n * d.heads * d.dim * d.s)
	ops.Fill(zeros, 0, d.n*d.heads*d.dim*d.s)
	ek3 := c.Temp(nh3 * d.dim * d.s)
	ops.ConcatChannels(ek3, zeros, ekv, d.n*d.heads, d.dim, 2*d.dim, d.s) // (N*H, 3D, S)
	ekT := c.Temp(nh3 * d.s * d.dim)
	ops.Transpose12(ekT, ek3, nh3, d.dim, d.s) // (N*3H, S, D)
	qT := c.Temp(nh3 * d.l * d.dim)
	ops.Transpose12(qT, qkv, nh3, d.dim, d.l) // (N*3H, L, D)
	catT := c.Temp(nh3 * (d.s + d.l) * d.dim)
	ops.ConcatChannels(catT, ekT, qT, nh3, d.s, d.l, d.dim) // (N*3H, S+L, D)
	ops.Transpose12(full, catT, nh3, d.s+d.l, d.dim)        // (N*3H, D, S+L)
}

// qkvAttentionKV is QKVAttentionKV from operands (qkv, ekv).
type qkvAttentionKV[B any] struct {
	base
	d kvDims
}

func (o *qkvAttentionKV[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	d, ops := o.d, c.Ops
	c3, ch, t := 3*d.heads*d.dim, d.heads*d.dim, d.s+d.l
	full := c.Temp(d.n * c3 * t)
	fusedQKV(c, d, full, in[0], in[1])
	o3 := c.Temp(d.n * ch * t)
	ops.QKVAttention(o3, full, d.attn()) // (N, C, S+L)
	oT := c.Temp(d.n * t * ch)
	ops.Transpose12(oT, o3, d.n, ch, t) // (N, S+L, C)
	var zero B
	keep := c.Temp(d.n * d.l * ch)
	ops.SplitChannels(zero, keep, oT, d.n, d.s, d.l, ch) // (N, L, C)
	ops.Transpose12(out, keep, d.n, d.l, ch)
	return nil
}
func (o *qkvAttentionKV[B]) DiffWRT(int) []bool { return all(2) }
func (o *qkvAttentionKV[B]) SymDiff(in G.Nodes, _, grad *G.Node) (G.Nodes, error) {
	d := o.d
	nq, ne := d.n*3*d.heads*d.dim*d.l, d.n*2*d.heads*d.dim*d.s
	g, err := apply(&qkvAttentionKVBackward[B]{newBase("QKVAttentionKVBackward"+o.name[14:], tensor.Shape{nq + ne}, 3), d}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	return parts[B](g, in[0].Shape().Clone(), in[1].Shape().Clone())
}

// qkvAttentionKVBackward is [dqkv | dekv] of qkvAttentionKV, packed, from
// (qkv, ekv, do); it recomputes the fused qkv.
type qkvAttentionKVBackward[B any] struct {
	base
	d kvDims
}

func (o *qkvAttentionKVBackward[B]) Exec(c *gexec.Ctx[B], out B, in []B) error {
	d, ops := o.d, c.Ops
	c3, ch, t, nh3 := 3*d.heads*d.dim, d.heads*d.dim, d.s+d.l, d.n*d.heads*3
	full := c.Temp(d.n * c3 * t)
	fusedQKV(c, d, full, in[0], in[1])
	// do (N, C, L) -> (N, C, S+L) with zeros for the encoder positions.
	doT := c.Temp(d.n * d.l * ch)
	ops.Transpose12(doT, in[2], d.n, ch, d.l) // (N, L, C)
	zeros := c.Temp(d.n * d.s * ch)
	ops.Fill(zeros, 0, d.n*d.s*ch)
	catT := c.Temp(d.n * t * ch)
	ops.ConcatChannels(catT, zeros, doT, d.n, d.s, d.l, ch) // (N, S+L, C)
	doFull := c.Temp(d.n * ch * t)
	ops.Transpose12(doFull, catT, d.n, t, ch) // (N, C, S+L)
	dfull := c.Temp(d.n * c3 * t)
	ops.QKVAttentionBackward(dfull, doFull, full, d.attn())
	// Split the positions: encoder (N*3H, S, D), own (N*3H, L, D).
	dT := c.Temp(nh3 * t * d.dim)
	ops.Transpose12(dT, dfull, nh3, d.dim, t)
	deT := c.Temp(nh3 * d.s * d.dim)
	dqT := c.Temp(nh3 * d.l * d.dim)
	ops.SplitChannels(deT, dqT, dT, nh3, d.s, d.l, d.dim)
	nq := d.n * c3 * d.l
	ops.Transpose12(ops.Slice(out, 0, nq), dqT, nh3, d.l, d.dim) // dqkv (N*3H, D, L)
	de3 := c.Temp(nh3 * d.dim * d.s)
	ops.Transpose12(de3, deT, nh3, d.s, d.dim) // (N*H, 3D, S)
	var zero B
	ops.SplitChannels(zero, ops.Slice(out, nq, d.n*2*ch*d.s), de3, d.n*d.heads, d.dim, 2*d.dim, d.s)
	return nil
}
