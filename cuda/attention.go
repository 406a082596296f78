package cuda

import "github.com/ddpm-go/ddpm/kernels"

// Pointer tables for cublasSgemmBatched, in scratch slot wsPtr, one table
// of B*Heads addresses each.
const (
	tQ = iota
	tK
	tV
	tO
	tS  // scores / probabilities P (B*Heads, T, T)
	tDP // dP / dS (B*Heads, T, T)
	tDQ
	tDK
	tDV
	tDO
	numTables
)

func (d *Device) attnCheck(op string, a kernels.AttnDims) bool {
	if !d.sizes(op, a.B, a.T, a.Heads, a.HeadDim) || !d.sizes(op, a.B, a.Heads, a.T, a.T) {
		return false
	}
	return true
}

// attnTables fills the operand tables: token-major tensors (B, T, H*D) give
// head h of item b at base + b*T*H*D + h*D floats; score buffers give
// (b, h) at base + (b*H + h)*T*T floats.
func (d *Device) attnTables(a kernels.AttnDims, tensors [numTables]Ptr) (Ptr, bool) {
	count := a.B * a.Heads
	tab, ok := d.scratch(wsPtr, int64(numTables*count)*8)
	if !ok {
		return 0, false
	}
	hd := a.Heads * a.HeadDim
	for i, base := range tensors {
		if base == 0 {
			continue
		}
		outer, inner := uint64(a.T*hd*4), uint64(a.HeadDim*4)
		if i == tS || i == tDP {
			outer, inner = uint64(a.Heads*a.T*a.T*4), uint64(a.T*a.T*4)
		}
		d.launch1D(kFillPtrs, count, pa(tab+Ptr(i*count*8)), ua(uint64(base)), ua(outer), ua(inner), ia(a.Heads), ia(count))
	}
	return tab, true
}

func table(tab Ptr, i, count int) Ptr { return tab + Ptr(i*count*8) }

// attnProbs computes P = softmax(q k^T * Scale) into s (B*Heads, T, T).
func (d *Device) attnProbs(op string, a kernels.AttnDims, tab, s Ptr) {
	count, hd := a.B*a.Heads, a.Heads*a.HeadDim
	d.blasErr(op, d.blas.gemmBatchedRM(false, true, a.T, a.T, a.HeadDim, &d.blas.one, table(tab, tQ, count), hd,
		table(tab, tK, count), hd, &d.blas.zero, table(tab, tS, count), a.T, count))
	d.launchRows(kSoftmax, count*a.T, pa(s), pa(s), ia(a.T), fa(a.Scale))
}

// Attention: per (b, h), S = q k^T (batched GEMM), P = softmax(S * Scale)
// by rows, o = P v (batched GEMM). The scores are materialised: (B*Heads,
// T, T) floats of scratch.
func (d *Device) Attention(o, q, k, v Ptr, a kernels.AttnDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Attention"
	if !d.attnCheck(op, a) {
		return
	}
	n := a.B * a.T * a.Heads * a.HeadDim
	if !d.need(op, "o", o, n) || !d.need(op, "q", q, n) || !d.need(op, "k", k, n) || !d.need(op, "v", v, n) {
		return
	}
	count, hd := a.B*a.Heads, a.Heads*a.HeadDim
	s, ok := d.scratch(wsCol, int64(count*a.T*a.T)*4)
	if !ok {
		return
	}
	var ts [numTables]Ptr
	ts[tQ], ts[tK], ts[tV], ts[tO], ts[tS] = q, k, v, o, s
	tab, ok := d.attnTables(a, ts)
	if !ok {
		return
	}
	d.attnProbs(op, a, tab, s)
	d.blasErr(op, d.blas.gemmBatchedRM(false, false, a.T, a.HeadDim, a.T, &d.blas.one, table(tab, tS, count), a.T,
		table(tab, tV, count), hd, &d.blas.zero, table(tab, tO, count), hd, count))
}

// AttentionBackward recomputes P, then dv = P^T do, dP = do v^T,
// dS = Scale * P (dP - rowsum(P dP)), dq = dS k, dk = dS^T q.
func (d *Device) AttentionBackward(dq, dk, dv, do, q, k, v Ptr, a kernels.AttnDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "AttentionBackward"
	if !d.attnCheck(op, a) {
		return
	}
	n := a.B * a.T * a.Heads * a.HeadDim
	if !d.need(op, "do", do, n) || !d.need(op, "q", q, n) || !d.need(op, "k", k, n) || !d.need(op, "v", v, n) ||
		!d.opt(op, "dq", dq, n) || !d.opt(op, "dk", dk, n) || !d.opt(op, "dv", dv, n) {
		return
	}
	count, hd := a.B*a.Heads, a.Heads*a.HeadDim
	s, ok := d.scratch(wsCol, int64(count*a.T*a.T)*4)
	if !ok {
		return
	}
	dp, ok := d.scratch(wsTmp, int64(count*a.T*a.T)*4)
	if !ok {
		return
	}
	var ts [numTables]Ptr
	ts[tQ], ts[tK], ts[tV], ts[tS], ts[tDP], ts[tDO] = q, k, v, s, dp, do
	ts[tDQ], ts[tDK], ts[tDV] = dq, dk, dv
	tab, ok := d.attnTables(a, ts)
	if !ok {
		return
	}
	d.attnProbs(op, a, tab, s)
	one, zero := &d.blas.one, &d.blas.zero
	if dv != 0 {
		d.blasErr(op, d.blas.gemmBatchedRM(true, false, a.T, a.HeadDim, a.T, one, table(tab, tS, count), a.T,
			table(tab, tDO, count), hd, zero, table(tab, tDV, count), hd, count))
	}
	if dq == 0 && dk == 0 {
		return
	}
	d.blasErr(op, d.blas.gemmBatchedRM(false, true, a.T, a.T, a.HeadDim, one, table(tab, tDO, count), hd,
		table(tab, tV, count), hd, zero, table(tab, tDP, count), a.T, count))
	d.launchRows(kSoftmaxBwd, count*a.T, pa(dp), pa(s), pa(dp), ia(a.T), fa(a.Scale))
	if dq != 0 {
		d.blasErr(op, d.blas.gemmBatchedRM(false, false, a.T, a.HeadDim, a.T, one, table(tab, tDP, count), a.T,
			table(tab, tK, count), hd, zero, table(tab, tDQ, count), hd, count))
	}
	if dk != 0 {
		d.blasErr(op, d.blas.gemmBatchedRM(true, false, a.T, a.HeadDim, a.T, one, table(tab, tDP, count), a.T,
			table(tab, tQ, count), hd, zero, table(tab, tDK, count), hd, count))
	}
}
