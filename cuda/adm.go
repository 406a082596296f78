package cuda

import "github.com/ddpm-go/ddpm/kernels"

// The ADM layers of OpenAI's guided-diffusion (Dhariwal & Nichol 2021) on
// the GPU: the kernels at the end of kernels/ops.cu, and QKV attention
// through cuBLAS batched GEMMs on pointer tables (as Attention). Each
// method mirrors its kernels.CPU twin in kernels/adm.go.

// GroupNormScaleShift: one block per (n, group) computes the statistics,
// the scale-shift step and the optional SiLU (groupnorm_ss_fwd).
func (d *Device) GroupNormScaleShift(y, mean, rstd, x, gamma, beta, ss Ptr, g kernels.GroupNormDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "GroupNormScaleShift"
	if !d.gnCheck(op, g) {
		return
	}
	total, ng := g.N*g.C*g.HW, g.N*g.Groups
	if !d.need(op, "y", y, total) || !d.need(op, "x", x, total) || !d.need(op, "mean", mean, ng) ||
		!d.need(op, "rstd", rstd, ng) || !d.opt(op, "gamma", gamma, g.C) || !d.opt(op, "beta", beta, g.C) ||
		!d.need(op, "ss", ss, 2*g.N*g.C) {
		return
	}
	d.launchRows(kGNSSFwd, ng, pa(y), pa(mean), pa(rstd), pa(x), pa(gamma), pa(beta), pa(ss),
		ia(g.C), ia(g.HW), ia(g.Groups), fa(g.Eps), ba(g.SiLU))
}

// GroupNormScaleShiftBackward: dx per (n, group) block; per-(n, c) sums
// of dz and dz*xhat in scratch, then dss, dgamma and dbeta from them.
func (d *Device) GroupNormScaleShiftBackward(dx, dgamma, dbeta, dss, dy, x, mean, rstd, gamma, beta, ss Ptr, g kernels.GroupNormDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "GroupNormScaleShiftBackward"
	if !d.gnCheck(op, g) {
		return
	}
	total, ng := g.N*g.C*g.HW, g.N*g.Groups
	if !d.need(op, "dx", dx, total) || !d.need(op, "dy", dy, total) || !d.need(op, "x", x, total) ||
		!d.need(op, "mean", mean, ng) || !d.need(op, "rstd", rstd, ng) || !d.opt(op, "gamma", gamma, g.C) ||
		!d.opt(op, "beta", beta, g.C) || !d.need(op, "ss", ss, 2*g.N*g.C) || !d.opt(op, "dgamma", dgamma, g.C) ||
		!d.opt(op, "dbeta", dbeta, g.C) || !d.opt(op, "dss", dss, 2*g.N*g.C) {
		return
	}
	d.launchRows(kGNSSBwdDx, ng, pa(dx), pa(dy), pa(x), pa(mean), pa(rstd), pa(gamma), pa(beta), pa(ss),
		ia(g.C), ia(g.HW), ia(g.Groups), ba(g.SiLU))
	if dgamma == 0 && dbeta == 0 && dss == 0 {
		return
	}
	stats, ok := d.scratch(wsRed, int64(2*g.N*g.C)*4)
	if !ok {
		return
	}
	d.launchRows(kGNSSBwdStats, g.N*g.C, pa(stats), pa(dy), pa(x), pa(mean), pa(rstd), pa(gamma), pa(beta), pa(ss),
		ia(g.C), ia(g.HW), ia(g.Groups), ba(g.SiLU))
	d.launch1D(kGNSSBwdParams, g.N*g.C, pa(dgamma), pa(dbeta), pa(dss), pa(stats), pa(ss), pa(gamma), pa(beta),
		ia(g.N), ia(g.C))
}

// AvgPool2x: 2x2 average pooling, y (N,C,H,W) from x (N,C,2H,2W).
func (d *Device) AvgPool2x(y, x Ptr, n, c, h, w int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "AvgPool2x"
	if !d.sizes(op, n, c, h, w, 4) || !d.need(op, "y", y, n*c*h*w) || !d.need(op, "x", x, 4*n*c*h*w) {
		return
	}
	d.launch1D(kAvgPool, n*c*h*w, pa(y), pa(x), ia(n*c), ia(h), ia(w))
}

// AvgPool2xBackward: dx (N,C,2H,2W) = dy/4 spread over each 2x2 block.
func (d *Device) AvgPool2xBackward(dx, dy Ptr, n, c, h, w int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "AvgPool2xBackward"
	if !d.sizes(op, n, c, h, w, 4) || !d.need(op, "dx", dx, 4*n*c*h*w) || !d.need(op, "dy", dy, n*c*h*w) {
		return
	}
	d.launch1D(kAvgPoolBwd, 4*n*c*h*w, pa(dx), pa(dy), ia(n*c), ia(h), ia(w))
}

func (d *Device) qkvCheck(op string, a kernels.QKVAttnDims) bool {
	return d.sizes(op, a.B, 3*a.Heads, a.HeadDim, a.T) && d.sizes(op, a.B, a.Heads, a.T, a.T)
}

// qkvTables fills the operand tables of QKV attention in scratch slot
// wsPtr: the (HeadDim, T) blocks of head h of item b inside the
// channel-major tensors (qkv in either head order; o and do), and the
// (T, T) score blocks. tensors are indexed by the t* constants of
// attention.go; qkv-shaped ones (tQ/tK/tV from qkv, tDQ/tDK/tDV from
// dqkv) are given by their tensor base in tQ and tDQ.
func (d *Device) qkvTables(a kernels.QKVAttnDims, qkv, dqkv, o, do, s, dp Ptr) (Ptr, bool) {
	count := a.B * a.Heads
	tab, ok := d.scratch(wsPtr, int64(numTables*count)*8)
	if !ok {
		return 0, false
	}
	c := a.Heads * a.HeadDim
	blk := uint64(a.HeadDim * a.T * 4)  // one head's block, bytes
	qkvItem := uint64(3 * c * a.T * 4)  // one item of qkv
	part, inner := uint64(c*a.T*4), blk // new order: q | k | v, then heads
	if a.Legacy {
		part, inner = blk, 3*blk // heads, each q | k | v
	}
	fill := func(i int, base Ptr, off, outer, inner uint64) {
		if base == 0 {
			return
		}
		d.launch1D(kFillPtrs, count, pa(tab+Ptr(i*count*8)), ua(uint64(base)+off), ua(outer), ua(inner), ia(a.Heads), ia(count))
	}
	for j, pair := range [3][2]int{{tQ, tDQ}, {tK, tDK}, {tV, tDV}} {
		fill(pair[0], qkv, uint64(j)*part, qkvItem, inner)
		fill(pair[1], dqkv, uint64(j)*part, qkvItem, inner)
	}
	fill(tO, o, 0, uint64(c*a.T*4), blk)
	fill(tDO, do, 0, uint64(c*a.T*4), blk)
	sc := uint64(a.T * a.T * 4)
	fill(tS, s, 0, uint64(a.Heads)*sc, sc)
	fill(tDP, dp, 0, uint64(a.Heads)*sc, sc)
	return tab, true
}

// qkvProbs computes P = softmax(Scale q^T k) into s (B*Heads, T, T).
func (d *Device) qkvProbs(op string, a kernels.QKVAttnDims, tab, s Ptr) {
	count := a.B * a.Heads
	d.blasErr(op, d.blas.gemmBatchedRM(true, false, a.T, a.T, a.HeadDim, &d.blas.one, table(tab, tQ, count), a.T,
		table(tab, tK, count), a.T, &d.blas.zero, table(tab, tS, count), a.T, count))
	d.launchRows(kSoftmax, count*a.T, pa(s), pa(s), ia(a.T), fa(a.Scale))
}

// QKVAttention: per (item, head), S = q^T k (batched GEMM), P =
// softmax(S * Scale) by rows, o = v P^T (batched GEMM); the scores are
// materialised in scratch ((B*Heads, T, T) floats).
func (d *Device) QKVAttention(o, qkv Ptr, a kernels.QKVAttnDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "QKVAttention"
	if !d.qkvCheck(op, a) {
		return
	}
	n := a.B * a.Heads * a.HeadDim * a.T
	if !d.need(op, "o", o, n) || !d.need(op, "qkv", qkv, 3*n) {
		return
	}
	count := a.B * a.Heads
	s, ok := d.scratch(wsCol, int64(count*a.T*a.T)*4)
	if !ok {
		return
	}
	tab, ok := d.qkvTables(a, qkv, 0, o, 0, s, 0)
	if !ok {
		return
	}
	d.qkvProbs(op, a, tab, s)
	d.blasErr(op, d.blas.gemmBatchedRM(false, true, a.HeadDim, a.T, a.T, &d.blas.one, table(tab, tV, count), a.T,
		table(tab, tS, count), a.T, &d.blas.zero, table(tab, tO, count), a.T, count))
}

// QKVAttentionBackward recomputes P, then dv = do P, dP = do^T v,
// dS = Scale P (dP - rowsum(P dP)), dq = k dS^T, dk = q dS, written into
// dqkv at the offsets of q, k, v in qkv.
func (d *Device) QKVAttentionBackward(dqkv, do, qkv Ptr, a kernels.QKVAttnDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "QKVAttentionBackward"
	if !d.qkvCheck(op, a) {
		return
	}
	n := a.B * a.Heads * a.HeadDim * a.T
	if !d.need(op, "dqkv", dqkv, 3*n) || !d.need(op, "do", do, n) || !d.need(op, "qkv", qkv, 3*n) {
		return
	}
	count := a.B * a.Heads
	s, ok := d.scratch(wsCol, int64(count*a.T*a.T)*4)
	if !ok {
		return
	}
	dp, ok := d.scratch(wsTmp, int64(count*a.T*a.T)*4)
	if !ok {
		return
	}
	tab, ok := d.qkvTables(a, qkv, dqkv, 0, do, s, dp)
	if !ok {
		return
	}
	d.qkvProbs(op, a, tab, s)
	one, zero := &d.blas.one, &d.blas.zero
	D, T := a.HeadDim, a.T
	d.blasErr(op, d.blas.gemmBatchedRM(false, false, D, T, T, one, table(tab, tDO, count), T,
		table(tab, tS, count), T, zero, table(tab, tDV, count), T, count))
	d.blasErr(op, d.blas.gemmBatchedRM(true, false, T, T, D, one, table(tab, tDO, count), T,
		table(tab, tV, count), T, zero, table(tab, tDP, count), T, count))
	d.launchRows(kSoftmaxBwd, count*T, pa(dp), pa(s), pa(dp), ia(T), fa(a.Scale))
	d.blasErr(op, d.blas.gemmBatchedRM(false, true, D, T, T, one, table(tab, tK, count), T,
		table(tab, tDP, count), T, zero, table(tab, tDQ, count), T, count))
	d.blasErr(op, d.blas.gemmBatchedRM(false, false, D, T, T, one, table(tab, tQ, count), T,
		table(tab, tDP, count), T, zero, table(tab, tDK, count), T, count))
}

// AttnPoolTokens: one block per (n, c) row: the mean token, then the
// positions, plus the positional embedding.
func (d *Device) AttnPoolTokens(y, x, pos Ptr, n, c, hw int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "AttnPoolTokens"
	if !d.sizes(op, n, c, hw+1) || !d.sizes(op, hw) || !d.need(op, "y", y, n*c*(hw+1)) || !d.need(op, "x", x, n*c*hw) ||
		!d.need(op, "pos", pos, c*(hw+1)) {
		return
	}
	d.launchRows(kAttnPoolTokens, n*c, pa(y), pa(x), pa(pos), ia(c), ia(hw))
}

// AttnPoolTokensBackward: dx elementwise; dpos (optional) summed over the batch.
func (d *Device) AttnPoolTokensBackward(dx, dpos, dy Ptr, n, c, hw int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "AttnPoolTokensBackward"
	if !d.sizes(op, n, c, hw+1) || !d.sizes(op, hw) || !d.need(op, "dx", dx, n*c*hw) || !d.opt(op, "dpos", dpos, c*(hw+1)) ||
		!d.need(op, "dy", dy, n*c*(hw+1)) {
		return
	}
	d.launch1D(kAttnPoolTokensBwdDx, n*c*hw, pa(dx), pa(dy), ia(n*c), ia(hw))
	if dpos != 0 {
		d.launch1D(kAttnPoolTokensBwdDpos, c*(hw+1), pa(dpos), pa(dy), ia(n), ia(c*(hw+1)))
	}
}

// ChannelMean: y[n,c] = mean_p x[n,c,p], one block per (n, c).
func (d *Device) ChannelMean(y, x Ptr, n, c, hw int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "ChannelMean"
	if !d.sizes(op, n, c, hw) || !d.need(op, "y", y, n*c) || !d.need(op, "x", x, n*c*hw) {
		return
	}
	d.launchRows(kRowMean, n*c, pa(y), pa(x), ia(hw))
}

// ChannelMeanBackward: dx[n,c,p] = dy[n,c]/hw.
func (d *Device) ChannelMeanBackward(dx, dy Ptr, n, c, hw int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "ChannelMeanBackward"
	if !d.sizes(op, n, c, hw) || !d.need(op, "dx", dx, n*c*hw) || !d.need(op, "dy", dy, n*c) {
		return
	}
	d.launch1D(kRowMeanBwd, n*c*hw, pa(dx), pa(dy), ia(n*c), ia(hw))
}

// ReLU: y = max(x, 0).
func (d *Device) ReLU(y, x Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("ReLU", "y", y, n) || !d.need("ReLU", "x", x, n) {
		return
	}
	d.launch1D(kReLU, n, pa(y), pa(x), ia(n))
}

// ReLUBackward: dx = dy where x > 0, else 0.
func (d *Device) ReLUBackward(dx, dy, x Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("ReLUBackward", "dx", dx, n) || !d.need("ReLUBackward", "dy", dy, n) || !d.need("ReLUBackward", "x", x, n) {
		return
	}
	d.launch1D(kReLUBwd, n, pa(dx), pa(dy), pa(x), ia(n))
}
