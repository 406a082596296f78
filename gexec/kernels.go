package gexec

import "github.com/ddpm-go/ddpm/kernels"

// Buf is a handle to one of a Program's buffers; NoBuf (0) is the absent
// optional buffer of the kernels.Ops contract. Handles let custom ops call
// the backend without being generic over its buffer type.
type Buf int32

// NoBuf is the zero handle: an absent optional input or output.
const NoBuf Buf = 0

// Kernels is kernels.Ops with buffer handles instead of buffers, plus
// scratch and saved-state helpers, for custom ops implementing Op. The
// method contracts are those of kernels.Ops (outputs first, then inputs,
// then dims; outputs overwritten; inputs never modified).
type Kernels interface {
	// Temp returns a scratch buffer of n values, valid until the op returns.
	Temp(n int) Buf
	// Saved returns a buffer of n values owned by the node being run that
	// lives across Run calls, e.g. GroupNorm's mean and rstd; key names it.
	Saved(key string, n int) Buf
	// SavedOf returns the buffer node id saved under key (see Saved), for
	// a backward op reading its forward op's state; NoBuf if absent.
	SavedOf(nodeID int64, key string) Buf
	// Slice returns a handle to n values of b from off on, valid until the
	// op returns.
	Slice(b Buf, off, n int) Buf
	// Len returns the number of values b holds (a node value's size).
	Len(b Buf) int

	Copy(dst, src Buf, n int)
	Fill(y Buf, v float32, n int)
	Conv2D(y, x, w, b Buf, d kernels.ConvDims)
	Conv2DBackwardData(dx, dy, w Buf, d kernels.ConvDims)
	Conv2DBackwardFilter(dw, db, dy, x Buf, d kernels.ConvDims)
	Linear(y, x, w, b Buf, m, in, out int)
	LinearBackward(dx, dw, db, dy, x, w Buf, m, in, out int)
	GroupNorm(y, mean, rstd, x, gamma, beta Buf, d kernels.GroupNormDims)
	GroupNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta Buf, d kernels.GroupNormDims)
	SiLU(y, x Buf, n int)
	SiLUBackward(dx, dy, x Buf, n int)
	Add(y, a, b Buf, n int)
	Axpby(y Buf, alpha float32, x Buf, beta float32, n int)
	Mul(y, a, b Buf, n int)
	Clamp(y, x Buf, lo, hi float32, n int)
	AddChannelBias(y, x, bias Buf, n, c, hw int)
	ChannelSum(dbias, dy Buf, n, c, hw int)
	Upsample2x(y, x Buf, n, c, h, w int)
	Upsample2xBackward(dx, dy Buf, n, c, h, w int)
	ConcatChannels(y, a, b Buf, n, ca, cb, hw int)
	SplitChannels(da, db, dy Buf, n, ca, cb, hw int)
	Transpose12(y, x Buf, n, i, j int)
	Attention(o, q, k, v Buf, d kernels.AttnDims)
	AttentionBackward(dq, dk, dv, do, q, k, v Buf, d kernels.AttnDims)
	Embedding(y, table Buf, ids []int, dim int)
	EmbeddingBackward(dtable, dy Buf, ids []int, vocab, dim int)
}

// Op is implemented by custom Gorgonia ops (package unet's) that the
// executor runs on the backend: Exec queues the op's work writing the
// node's value into out from its children's values in (in the node's
// operand order). It must not read values back to the host. An error
// means the op cannot run with these shapes (a bug, reported by Run).
type Op interface {
	Exec(k Kernels, out Buf, in []Buf) error
}

// handles maps Buf handles to backend buffers for one Program.
type handles[B any] struct {
	ops  kernels.Ops[B]
	bufs []B   // index 0 is the zero B
	lens []int // values per handle
	tmp  []B   // slices made during one Exec: handle -1-i is tmp[i]
	tlen []int
}

func (h *handles[B]) len(x Buf) int {
	if x < 0 && int(-x-1) < len(h.tlen) {
		return h.tlen[-x-1]
	}
	if x <= 0 || int(x) >= len(h.lens) {
		return 0
	}
	return h.lens[x]
}

func (h *handles[B]) b(x Buf) B {
	if x < 0 && int(-x-1) < len(h.tmp) {
		return h.tmp[-x-1]
	}
	if x <= 0 || int(x) >= len(h.bufs) {
		var zero B
		return zero
	}
	return h.bufs[x]
}

func (h *handles[B]) add(b B, n int) Buf {
	h.bufs = append(h.bufs, b)
	h.lens = append(h.lens, n)
	return Buf(len(h.bufs) - 1)
}

// kernelsFor adapts a Program's Ops to Kernels for one node's Exec.
type kernelsFor[B any] struct {
	p     *Program[B]
	node  int64
	temps []Buf
}

func (k *kernelsFor[B]) Temp(n int) Buf {
	b := k.p.temp(n)
	k.temps = append(k.temps, b)
	return b
}

func (k *kernelsFor[B]) Saved(key string, n int) Buf      { return k.p.saved(k.node, key, n) }
func (k *kernelsFor[B]) SavedOf(id int64, key string) Buf { return k.p.savedOf(id, key) }

func (k *kernelsFor[B]) Slice(b Buf, off, n int) Buf {
	h := &k.p.h
	h.tmp = append(h.tmp, k.p.ops.Slice(h.b(b), off, n))
	h.tlen = append(h.tlen, n)
	return Buf(-len(h.tmp))
}

func (k *kernelsFor[B]) Len(b Buf) int { return k.p.h.len(b) }

func (k *kernelsFor[B]) Copy(dst, src Buf, n int)     { k.p.ops.Copy(k.p.h.b(dst), k.p.h.b(src), n) }
func (k *kernelsFor[B]) Fill(y Buf, v float32, n int) { k.p.ops.Fill(k.p.h.b(y), v, n) }
func (k *kernelsFor[B]) Conv2D(y, x, w, b Buf, d kernels.ConvDims) {
	h := &k.p.h
	k.p.ops.Conv2D(h.b(y), h.b(x), h.b(w), h.b(b), d)
}
func (k *kernelsFor[B]) Conv2DBackwardData(dx, dy, w Buf, d kernels.ConvDims) {
	h := &k.p.h
	k.p.ops.Conv2DBackwardData(h.b(dx), h.b(dy), h.b(w), d)
}
func (k *kernelsFor[B]) Conv2DBackwardFilter(dw, db, dy, x Buf, d kernels.ConvDims) {
	h := &k.p.h
	k.p.ops.Conv2DBackwardFilter(h.b(dw), h.b(db), h.b(dy), h.b(x), d)
}
func (k *kernelsFor[B]) Linear(y, x, w, b Buf, m, in, out int) {
	h := &k.p.h
	k.p.ops.Linear(h.b(y), h.b(x), h.b(w), h.b(b), m, in, out)
}
func (k *kernelsFor[B]) LinearBackward(dx, dw, db, dy, x, w Buf, m, in, out int) {
	h := &k.p.h
	k.p.ops.LinearBackward(h.b(dx), h.b(dw), h.b(db), h.b(dy), h.b(x), h.b(w), m, in, out)
}
func (k *kernelsFor[B]) GroupNorm(y, mean, rstd, x, gamma, beta Buf, d kernels.GroupNormDims) {
	h := &k.p.h
	k.p.ops.GroupNorm(h.b(y), h.b(mean), h.b(rstd), h.b(x), h.b(gamma), h.b(beta), d)
}
func (k *kernelsFor[B]) GroupNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta Buf, d kernels.GroupNormDims) {
	h := &k.p.h
	k.p.ops.GroupNormBackward(h.b(dx), h.b(dgamma), h.b(dbeta), h.b(dy), h.b(x), h.b(mean), h.b(rstd), h.b(gamma), h.b(beta), d)
}
func (k *kernelsFor[B]) SiLU(y, x Buf, n int) { k.p.ops.SiLU(k.p.h.b(y), k.p.h.b(x), n) }
func (k *kernelsFor[B]) SiLUBackward(dx, dy, x Buf, n int) {
	h := &k.p.h
	k.p.ops.SiLUBackward(h.b(dx), h.b(dy), h.b(x), n)
}
func (k *kernelsFor[B]) Add(y, a, b Buf, n int) { h := &k.p.h; k.p.ops.Add(h.b(y), h.b(a), h.b(b), n) }
func (k *kernelsFor[B]) Axpby(y Buf, alpha float32, x Buf, beta float32, n int) {
	k.p.ops.Axpby(k.p.h.b(y), alpha, k.p.h.b(x), beta, n)
}
func (k *kernelsFor[B]) Mul(y, a, b Buf, n int) { h := &k.p.h; k.p.ops.Mul(h.b(y), h.b(a), h.b(b), n) }
func (k *kernelsFor[B]) Clamp(y, x Buf, lo, hi float32, n int) {
	k.p.ops.Clamp(k.p.h.b(y), k.p.h.b(x), lo, hi, n)
}
func (k *kernelsFor[B]) AddChannelBias(y, x, bias Buf, n, c, hw int) {
	h := &k.p.h
	k.p.ops.AddChannelBias(h.b(y), h.b(x), h.b(bias), n, c, hw)
}
func (k *kernelsFor[B]) ChannelSum(dbias, dy Buf, n, c, hw int) {
	k.p.ops.ChannelSum(k.p.h.b(dbias), k.p.h.b(dy), n, c, hw)
}
func (k *kernelsFor[B]) Upsample2x(y, x Buf, n, c, hh, w int) {
	k.p.ops.Upsample2x(k.p.h.b(y), k.p.h.b(x), n, c, hh, w)
}
func (k *kernelsFor[B]) Upsample2xBackward(dx, dy Buf, n, c, hh, w int) {
	k.p.ops.Upsample2xBackward(k.p.h.b(dx), k.p.h.b(dy), n, c, hh, w)
}
func (k *kernelsFor[B]) ConcatChannels(y, a, b Buf, n, ca, cb, hw int) {
	h := &k.p.h
	k.p.ops.ConcatChannels(h.b(y), h.b(a), h.b(b), n, ca, cb, hw)
}
func (k *kernelsFor[B]) SplitChannels(da, db, dy Buf, n, ca, cb, hw int) {
	h := &k.p.h
	k.p.ops.SplitChannels(h.b(da), h.b(db), h.b(dy), n, ca, cb, hw)
}
func (k *kernelsFor[B]) Transpose12(y, x Buf, n, i, j int) {
	k.p.ops.Transpose12(k.p.h.b(y), k.p.h.b(x), n, i, j)
}
func (k *kernelsFor[B]) Attention(o, q, kk, v Buf, d kernels.AttnDims) {
	h := &k.p.h
	k.p.ops.Attention(h.b(o), h.b(q), h.b(kk), h.b(v), d)
}
func (k *kernelsFor[B]) AttentionBackward(dq, dk, dv, do, q, kk, v Buf, d kernels.AttnDims) {
	h := &k.p.h
	k.p.ops.AttentionBackward(h.b(dq), h.b(dk), h.b(dv), h.b(do), h.b(q), h.b(kk), h.b(v), d)
}
func (k *kernelsFor[B]) Embedding(y, table Buf, ids []int, dim int) {
	k.p.ops.Embedding(k.p.h.b(y), k.p.h.b(table), ids, dim)
}
func (k *kernelsFor[B]) EmbeddingBackward(dtable, dy Buf, ids []int, vocab, dim int) {
	k.p.ops.EmbeddingBackward(k.p.h.b(dtable), k.p.h.b(dy), ids, vocab, dim)
}
