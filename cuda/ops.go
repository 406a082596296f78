package cuda

import (
	"math"
	"runtime"
	"unsafe"

	"github.com/ddpm-go/ddpm/kernels"
)

var _ kernels.Ops[Ptr] = (*Device)(nil)

// need records an error unless p is a buffer of at least n values. Only a
// buffer's start is known to the allocator; a Slice passes on non-zero.
func (d *Device) need(op, name string, p Ptr, n int) bool {
	if p == 0 {
		d.failf("%s: %s is the zero Ptr (required)", op, name)
		return false
	}
	if sz := d.alloc.size(p); sz > 0 && int64(n)*4 > sz {
		d.failf("%s: %s holds %d values, need %d", op, name, sz/4, n)
		return false
	}
	return true
}

// opt is need for an optional buffer (zero passes).
func (d *Device) opt(op, name string, p Ptr, n int) bool {
	return p == 0 || d.need(op, name, p, n)
}

// sizes records an error unless every dim is >= 1 and the product fits int32.
func (d *Device) sizes(op string, dims ...int) bool {
	total := int64(1)
	for _, v := range dims {
		if v < 1 {
			d.failf("%s: dims %v: every size must be >= 1", op, dims)
			return false
		}
		total *= int64(v)
		if total > math.MaxInt32 {
			d.failf("%s: dims %v: more than 2^31-1 values", op, dims)
			return false
		}
	}
	return true
}

// Alloc returns a zeroed device buffer of n float32 values (0 after a
// failure, which Sync reports).
func (d *Device) Alloc(n int) Ptr {
	if !d.enter() {
		d.leave()
		return 0
	}
	defer d.leave()
	if n < 0 {
		d.failf("Alloc: n = %d: must be >= 0", n)
		return 0
	}
	p, err := d.alloc.get(d.drv, int64(max(n, 1))*4)
	if err != nil {
		d.failLocked(err)
		return 0
	}
	if r := d.drv.call(d.drv.cuMemsetD32Async, uintptr(p), 0, uintptr(max(n, 1)), d.stream); r != 0 {
		d.failLocked(check("cuMemsetD32Async", r))
	}
	return p
}

// AllocUninit is Alloc without the zeroing: the contents are undefined.
// For buffers that are fully written before they are read (activations),
// it saves a memset pass over the memory.
func (d *Device) AllocUninit(n int) Ptr {
	if !d.enter() {
		d.leave()
		return 0
	}
	defer d.leave()
	if n < 0 {
		d.failf("AllocUninit: n = %d: must be >= 0", n)
		return 0
	}
	p, err := d.alloc.get(d.drv, int64(max(n, 1))*4)
	if err != nil {
		d.failLocked(err)
		return 0
	}
	return p
}

// Free returns a buffer from Alloc to the caching allocator (a zero Ptr is
// ignored). Work already queued on it completes first (one stream).
func (d *Device) Free(b Ptr) {
	if b == 0 {
		return
	}
	// Even after a sticky error the block goes back to the cache; with a
	// CacheLimit, put may cuMemFree it, which needs the context current.
	ok := d.enterAlways()
	defer d.leave()
	if !ok {
		return
	}
	if err := d.alloc.put(d.drv, b); err != nil {
		d.failLocked(err)
	}
}

// Slice returns the n values of b from off on (no copy).
func (d *Device) Slice(b Ptr, off, n int) Ptr {
	if b == 0 || off < 0 || n < 0 {
		d.mu.Lock()
		d.failf("Slice(%#x, off=%d, n=%d): need a non-zero buffer and off, n >= 0", uint64(b), off, n)
		d.mu.Unlock()
		return 0
	}
	return b + Ptr(off)*4
}

// Upload copies src into dst (queued; src may be reused on return).
func (d *Device) Upload(dst Ptr, src []float32) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if len(src) == 0 || !d.need("Upload", "dst", dst, len(src)) {
		return
	}
	var pn runtime.Pinner
	defer pn.Unpin()
	r := d.drv.call(d.drv.cuMemcpyHtoDAsync, uintptr(dst), pinSlice(&pn, src), uintptr(len(src)*4), d.stream)
	if r != 0 {
		d.failLocked(check("cuMemcpyHtoDAsync", r))
	}
}

// Download waits for queued work and copies len(dst) values from src.
func (d *Device) Download(dst []float32, src Ptr) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if len(dst) == 0 || !d.need("Download", "src", src, len(dst)) {
		return
	}
	var pn runtime.Pinner
	defer pn.Unpin()
	r := d.drv.call(d.drv.cuMemcpyDtoHAsync, pinSlice(&pn, dst), uintptr(src), uintptr(len(dst)*4), d.stream)
	if r == 0 {
		r = d.drv.call(d.drv.cuStreamSynchronize, d.stream)
	}
	if r != 0 {
		d.failLocked(check("Download", r))
	}
}

// Copy sets dst[i] = src[i] for i < n (device to device, queued).
func (d *Device) Copy(dst, src Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("Copy", "dst", dst, n) || !d.need("Copy", "src", src, n) {
		return
	}
	if r := d.drv.call(d.drv.cuMemcpyDtoDAsync, uintptr(dst), uintptr(src), uintptr(n*4), d.stream); r != 0 {
		d.failLocked(check("cuMemcpyDtoDAsync", r))
	}
}

// Fill sets y[i] = v for i < n.
func (d *Device) Fill(y Ptr, v float32, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("Fill", "y", y, n) {
		return
	}
	if r := d.drv.call(d.drv.cuMemsetD32Async, uintptr(y), uintptr(math.Float32bits(v)), uintptr(n), d.stream); r != 0 {
		d.failLocked(check("cuMemsetD32Async", r))
	}
}

// SiLU: y = x * sigmoid(x).
func (d *Device) SiLU(y, x Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("SiLU", "y", y, n) || !d.need("SiLU", "x", x, n) {
		return
	}
	d.launch1D(kSiLU, n, pa(y), pa(x), ia(n))
}

// SiLUBackward: dx = dy * s * (1 + x (1 - s)), s = sigmoid(x).
func (d *Device) SiLUBackward(dx, dy, x Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("SiLUBackward", "dx", dx, n) || !d.need("SiLUBackward", "dy", dy, n) || !d.need("SiLUBackward", "x", x, n) {
		return
	}
	d.launch1D(kSiLUBwd, n, pa(dx), pa(dy), pa(x), ia(n))
}

// GELU: y = x Phi(x) = x (1 + erf(x/sqrt 2)) / 2, the exact GELU, in
// float32 through an erfc of about 1e-6 relative error (there is no
// libdevice erff here), from the tail on both sides.
func (d *Device) GELU(y, x Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("GELU", "y", y, n) || !d.need("GELU", "x", x, n) {
		return
	}
	d.launch1D(kGELU, n, pa(y), pa(x), ia(n))
}

// GELUBackward: dx = dy (Phi(x) + x phi(x)), phi the standard normal
// density.
func (d *Device) GELUBackward(dx, dy, x Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("GELUBackward", "dx", dx, n) || !d.need("GELUBackward", "dy", dy, n) || !d.need("GELUBackward", "x", x, n) {
		return
	}
	d.launch1D(kGELUBwd, n, pa(dx), pa(dy), pa(x), ia(n))
}

// Add: y = a + b.
func (d *Device) Add(y, a, b Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("Add", "y", y, n) || !d.need("Add", "a", a, n) || !d.need("Add", "b", b, n) {
		return
	}
	d.launch1D(kAdd, n, pa(y), pa(a), pa(b), ia(n))
}

// Axpby: y = alpha x + beta y (beta == 0 overwrites y).
func (d *Device) Axpby(y Ptr, alpha float32, x Ptr, beta float32, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("Axpby", "y", y, n) || !d.need("Axpby", "x", x, n) {
		return
	}
	d.launch1D(kAxpby, n, pa(y), fa(alpha), pa(x), fa(beta), ia(n))
}

// Mul: y = a * b elementwise.
func (d *Device) Mul(y, a, b Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("Mul", "y", y, n) || !d.need("Mul", "a", a, n) || !d.need("Mul", "b", b, n) {
		return
	}
	d.launch1D(kMul, n, pa(y), pa(a), pa(b), ia(n))
}

// Clamp: y = min(max(x, lo), hi); NaN stays NaN.
func (d *Device) Clamp(y, x Ptr, lo, hi float32, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if lo > hi {
		d.failf("Clamp: lo=%v > hi=%v", lo, hi)
		return
	}
	if n == 0 || !d.need("Clamp", "y", y, n) || !d.need("Clamp", "x", x, n) {
		return
	}
	d.launch1D(kClamp, n, pa(y), pa(x), fa(lo), fa(hi), ia(n))
}

// SumSquares returns sum_i x[i]^2 (accumulated in float64 on the device,
// in a fixed order, so it is deterministic). It waits for the result.
func (d *Device) SumSquares(x Ptr, n int) float32 {
	if !d.enter() {
		d.leave()
		return 0
	}
	defer d.leave()
	if n == 0 || !d.need("SumSquares", "x", x, n) {
		return 0
	}
	const maxBlocks = 1024
	blocks := min((n+blockSize-1)/blockSize, maxBlocks)
	ws, ok := d.scratch(wsMisc, maxBlocks*8+16)
	if !ok {
		return 0
	}
	d.launch(kSumSqPartial, blocks, 1, 1, blockSize, 1, 1, pa(ws), pa(x), ia(n))
	out := ws + maxBlocks*8
	d.launch(kSumPartials, 1, 1, 1, blockSize, 1, 1, pa(out), pa(ws), ia(blocks))
	var pn runtime.Pinner
	defer pn.Unpin()
	res := hp[[1]float32](&pn)
	r := d.drv.call(d.drv.cuMemcpyDtoHAsync, uintptr(unsafe.Pointer(res)), uintptr(out), 4, d.stream)
	if r == 0 {
		r = d.drv.call(d.drv.cuStreamSynchronize, d.stream)
	}
	if r != 0 {
		d.failLocked(check("SumSquares", r))
		return 0
	}
	return res[0]
}

// AddChannelBias: y[n,c,p] = x[n,c,p] + bias[n,c].
func (d *Device) AddChannelBias(y, x, bias Ptr, n, c, hw int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "AddChannelBias"
	if !d.sizes(op, n, c, hw) || !d.need(op, "y", y, n*c*hw) || !d.need(op, "x", x, n*c*hw) || !d.need(op, "bias", bias, n*c) {
		return
	}
	d.launch1D(kAddChannelBias, n*c*hw, pa(y), pa(x), pa(bias), ia(n*c), ia(hw))
}

// ChannelSum: dbias[n,c] = sum_p dy[n,c,p].
func (d *Device) ChannelSum(dbias, dy Ptr, n, c, hw int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "ChannelSum"
	if !d.sizes(op, n, c, hw) || !d.need(op, "dbias", dbias, n*c) || !d.need(op, "dy", dy, n*c*hw) {
		return
	}
	d.launchRows(kRowSum, n*c, pa(dbias), pa(dy), ia(hw))
}

// Upsample2x: nearest-neighbour 2x, y (N,C,2H,2W) from x (N,C,H,W).
func (d *Device) Upsample2x(y, x Ptr, n, c, h, w int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Upsample2x"
	if !d.sizes(op, n, c, h, w, 4) || !d.need(op, "y", y, 4*n*c*h*w) || !d.need(op, "x", x, n*c*h*w) {
		return
	}
	d.launch1D(kUpsample, 4*n*c*h*w, pa(y), pa(x), ia(n*c), ia(h), ia(w))
}

// Upsample2xBackward: dx[n,c,i,j] = sum of dy's 2x2 block.
func (d *Device) Upsample2xBackward(dx, dy Ptr, n, c, h, w int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Upsample2xBackward"
	if !d.sizes(op, n, c, h, w, 4) || !d.need(op, "dx", dx, n*c*h*w) || !d.need(op, "dy", dy, 4*n*c*h*w) {
		return
	}
	d.launch1D(kUpsampleBwd, n*c*h*w, pa(dx), pa(dy), ia(n*c), ia(h), ia(w))
}

// ConcatChannels: y (N,Ca+Cb,HW) = [a, b].
func (d *Device) ConcatChannels(y, a, b Ptr, n, ca, cb, hw int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "ConcatChannels"
	if !d.sizes(op, n, ca+cb, hw) || ca < 0 || cb < 0 || !d.need(op, "y", y, n*(ca+cb)*hw) ||
		(ca > 0 && !d.need(op, "a", a, n*ca*hw)) || (cb > 0 && !d.need(op, "b", b, n*cb*hw)) {
		return
	}
	d.launch1D(kConcat, n*(ca+cb)*hw, pa(y), pa(a), pa(b), ia(n), ia(ca), ia(cb), ia(hw))
}

// SplitChannels: da, db (either may be zero) from dy (N,Ca+Cb,HW).
func (d *Device) SplitChannels(da, db, dy Ptr, n, ca, cb, hw int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "SplitChannels"
	if !d.sizes(op, n, ca+cb, hw) || ca < 0 || cb < 0 || !d.need(op, "dy", dy, n*(ca+cb)*hw) ||
		!d.opt(op, "da", da, n*ca*hw) || !d.opt(op, "db", db, n*cb*hw) {
		return
	}
	d.launch1D(kSplit, n*(ca+cb)*hw, pa(da), pa(db), pa(dy), ia(n), ia(ca), ia(cb), ia(hw))
}

// Transpose12: y[n,j,i] = x[n,i,j].
func (d *Device) Transpose12(y, x Ptr, n, i, j int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Transpose12"
	if !d.sizes(op, n, i, j) || !d.need(op, "y", y, n*i*j) || !d.need(op, "x", x, n*i*j) {
		return
	}
	if n > 65535 || (i+31)/32 > 65535 {
		d.failf("%s: n = %d, i = %d: at most 65535 batches and 65535*32 rows (grid.z and grid.y limits)", op, n, i)
		return
	}
	d.launch(kTranspose12, (j+31)/32, (i+31)/32, n, 32, 8, 1, pa(y), pa(x), ia(i), ia(j))
}

// Embedding: y[i,:] = table[ids[i],:]. ids are checked on the host
// (against the table's size when table is an Alloc'd buffer) and uploaded.
func (d *Device) Embedding(y, table Ptr, ids []int, dim int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Embedding"
	if len(ids) == 0 {
		return
	}
	if !d.sizes(op, len(ids), dim) || !d.need(op, "y", y, len(ids)*dim) || !d.need(op, "table", table, dim) {
		return
	}
	// The table's rows are bounded by the logical buffer (the bytes
	// Alloc was asked for, not its rounded size class), from table to the
	// end of the buffer holding it when table is a Slice.
	vocab := math.MaxInt32
	if sz := d.alloc.extent(table); sz > 0 {
		vocab = int(sz / 4 / int64(dim))
	}
	dev, ok := d.uploadIDs(op, ids, vocab)
	if !ok {
		return
	}
	d.launch1D(kEmbFwd, len(ids)*dim, pa(y), pa(table), pa(dev), ia(len(ids)), ia(dim))
}

// EmbeddingBackward: dtable = 0, then dtable[ids[i],:] += dy[i,:] (a
// deterministic gather per table entry).
func (d *Device) EmbeddingBackward(dtable, dy Ptr, ids []int, vocab, dim int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "EmbeddingBackward"
	if !d.sizes(op, vocab, dim) || !d.need(op, "dtable", dtable, vocab*dim) {
		return
	}
	if len(ids) > 0 && !d.need(op, "dy", dy, len(ids)*dim) {
		return
	}
	dev, ok := d.uploadIDs(op, ids, vocab)
	if !ok {
		return
	}
	d.launch1D(kEmbBwd, vocab*dim, pa(dtable), pa(dy), pa(dev), ia(len(ids)), ia(vocab), ia(dim))
}

// uploadIDs checks ids against [0, vocab) and copies them to scratch.
func (d *Device) uploadIDs(op string, ids []int, vocab int) (Ptr, bool) {
	d.ids = d.ids[:0]
	for i, id := range ids {
		if id < 0 || id >= vocab {
			d.failf("%s: ids[%d] = %d: must be in [0, %d)", op, i, id, vocab)
			return 0, false
		}
		d.ids = append(d.ids, int32(id))
	}
	if len(ids) == 0 {
		d.ids = append(d.ids, 0)
	}
	p, ok := d.scratch(wsMisc, int64(len(d.ids))*4+16)
	if !ok {
		return 0, false
	}
	// The scratch slot may still be read by a queued kernel; the copy is
	// ordered on the same stream, so it lands after that kernel.
	r := d.drv.call(d.drv.cuMemcpyHtoDAsync, uintptr(p), uintptr(unsafe.Pointer(&d.ids[0])), uintptr(len(d.ids)*4), d.stream)
	if r != 0 {
		d.failLocked(check(op+": upload ids", r))
		return 0, false
	}
	return p, true
}

// AdamW: one decoupled-weight-decay Adam step (Loshchilov & Hutter 2019),
// in place on p, m, v; bias corrections 1/(1-b^step) are computed on the host.
func (d *Device) AdamW(p, m, v, g Ptr, h kernels.AdamWParams, step int, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "AdamW"
	if step < 1 {
		d.failf("%s: step = %d: must be >= 1", op, step)
		return
	}
	if n == 0 || !d.need(op, "p", p, n) || !d.need(op, "m", m, n) || !d.need(op, "v", v, n) || !d.need(op, "g", g, n) {
		return
	}
	bc1 := float32(1 / (1 - math.Pow(float64(h.Beta1), float64(step))))
	bc2 := float32(1 / (1 - math.Pow(float64(h.Beta2), float64(step))))
	d.launch1D(kAdamW, n, pa(p), pa(m), pa(v), pa(g), fa(h.LR), fa(h.Beta1), fa(h.Beta2), fa(h.Eps),
		fa(h.WeightDecay), fa(bc1), fa(bc2), ia(n))
}

// EMA: ema = decay ema + (1 - decay) p.
func (d *Device) EMA(ema, p Ptr, decay float32, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("EMA", "ema", ema, n) || !d.need("EMA", "p", p, n) {
		return
	}
	d.launch1D(kEMA, n, pa(ema), pa(p), fa(decay), ia(n))
}
