package cuda

import (
	"math"
	"time"

	"github.com/ddpm-go/ddpm/kernels"
)

// defaultConvWorkspace bounds the im2col scratch per chunk of images (bytes).
const defaultConvWorkspace = 512 << 20

// convChunkFor returns how many images one im2col pass covers with ws
// bytes of workspace.
func convChunkFor(dd kernels.ConvDims, ws int64) int {
	p := dd.OutH() * dd.OutW()
	per := int64(dd.C*dd.R*dd.S*p+dd.K*p) * 4
	nb := int(ws / per)
	return max(1, min(dd.N, nb))
}

// convChunk is convChunkFor with the Device's fixed workspace.
func (d *Device) convChunk(dd kernels.ConvDims) int { return convChunkFor(dd, d.convWS) }

// convKey identifies a tuned convolution: shape and direction.
type convKey struct {
	d  kernels.ConvDims
	op int // 0 forward, 1 backward data, 2 backward filter
}

var tuneCandidates = []int64{32 << 20, 128 << 20, 512 << 20, 2 << 30}

// convRun runs a convolution op with the workspace that ConvAutotune chose
// for this shape (timing the candidates on first use), or the fixed one.
func (d *Device) convRun(op int, dd kernels.ConvDims, run func(nbMax int)) {
	if !d.tune {
		run(d.convChunk(dd))
		return
	}
	key := convKey{dd, op}
	if ws, ok := d.tuned[key]; ok {
		run(convChunkFor(dd, ws))
		return
	}
	best, bestT, lastNB := d.convWS, time.Duration(math.MaxInt64), -1
	for _, ws := range tuneCandidates {
		nb := convChunkFor(dd, ws)
		p := int64(dd.OutH() * dd.OutW())
		if nb == lastNB || int64(nb)*p*int64(dd.C*dd.R*dd.S+dd.K)*4 > d.info.TotalMem/8 {
			continue
		}
		lastNB = nb
		run(nb) // warm-up: scratch growth, cuBLAS heuristics
		d.drv.call(d.drv.cuStreamSynchronize, d.stream)
		t0 := time.Now()
		run(nb)
		if r := d.drv.call(d.drv.cuStreamSynchronize, d.stream); r != 0 || d.err != nil {
			d.failLocked(check("conv autotune", r))
			return
		}
		if el := time.Since(t0); el < bestT {
			best, bestT = ws, el
		}
	}
	d.tuned[key] = best
	// The outputs are complete: every candidate overwrote them in full.
}

func (d *Device) convCheck(op string, dd kernels.ConvDims) bool {
	if err := dd.Validate(); err != nil {
		d.failf("%s: %v", op, err)
		return false
	}
	return d.sizes(op, dd.N, dd.C, dd.H, dd.W) && d.sizes(op, dd.N, dd.K, dd.OutH(), dd.OutW()) &&
		d.sizes(op, dd.C*dd.R*dd.S, d.convChunk(dd), dd.OutH()*dd.OutW())
}

// convScratch returns the column (C*R*S, nb, P) and (K, nb, P) buffers.
func (d *Device) convScratch(dd kernels.ConvDims, nb int) (col, tmp Ptr, ok bool) {
	p := dd.OutH() * dd.OutW()
	col, ok = d.scratch(wsCol, int64(dd.C*dd.R*dd.S*nb*p)*4)
	if !ok {
		return 0, 0, false
	}
	tmp, ok = d.scratch(wsTmp, int64(dd.K*nb*p)*4)
	return col, tmp, ok
}

// launchRowsP queues a row kernel (ROW_LOOP in ops.cu) over rows rows of
// p positions: grid (ceil(p/blockSize), min(rows, 65535)).
func (d *Device) launchRowsP(k, rows, p int, args ...uint64) {
	if rows <= 0 || p <= 0 {
		return
	}
	d.launch(k, (p+blockSize-1)/blockSize, min(rows, 65535), 1, blockSize, 1, 1, args...)
}

// im2colRows queues im2col for images n0..n0+nb-1 into col (C*R*S, nb, P).
func (d *Device) im2colRows(col, x Ptr, n0, nb int, dd kernels.ConvDims) {
	d.launchRowsP(kIm2col, dd.C*dd.R*dd.S*nb, dd.OutH()*dd.OutW(), pa(col), pa(x), ia(n0), ia(nb), ia(dd.C), ia(dd.H),
		ia(dd.W), ia(dd.R), ia(dd.S), ia(dd.StrideH), ia(dd.StrideW), ia(dd.PadTop), ia(dd.PadLeft), ia(dd.OutH()), ia(dd.OutW()))
}

func (d *Device) im2col(kind int, buf, x Ptr, n0, nb int, dd kernels.ConvDims, total int) {
	d.launch1D(kind, total, pa(buf), pa(x), ia(n0), ia(nb), ia(dd.C), ia(dd.H), ia(dd.W), ia(dd.R), ia(dd.S),
		ia(dd.StrideH), ia(dd.StrideW), ia(dd.PadTop), ia(dd.PadLeft), ia(dd.OutH()), ia(dd.OutW()))
}

// Conv2D: im2col over a chunk of nb images into col (C*R*S, nb*P), one
// GEMM tmp (K, nb*P) = w (K, C*R*S) col, then a permute to (nb, K, P)
// that adds the bias. Large GEMMs keep the tensor cores busy.
func (d *Device) Conv2D(y, x, w, b Ptr, dd kernels.ConvDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Conv2D"
	if !d.convCheck(op, dd) {
		return
	}
	p, crs := dd.OutH()*dd.OutW(), dd.C*dd.R*dd.S
	if !d.need(op, "y", y, dd.N*dd.K*p) || !d.need(op, "x", x, dd.N*dd.C*dd.H*dd.W) ||
		!d.need(op, "w", w, dd.K*crs) || !d.opt(op, "b", b, dd.K) {
		return
	}
	if d.cudnnConv(0, dd, y, x, w) {
		if b != 0 {
			d.launchRowsP(kAddBiasNKP, dd.N*dd.K, p, pa(y), pa(b), ia(dd.N*dd.K), ia(dd.K), ia(p))
		}
		return
	}
	d.convRun(0, dd, func(nbMax int) {
		col, tmp, ok := d.convScratch(dd, nbMax)
		if !ok {
			return
		}
		for n0 := 0; n0 < dd.N; n0 += nbMax {
			nb := min(nbMax, dd.N-n0)
			d.im2colRows(col, x, n0, nb, dd)
			d.blasErr(op, d.blas.gemmRM(false, false, dd.K, nb*p, crs, &d.blas.one, w, crs, col, nb*p, &d.blas.zero, tmp, nb*p))
			d.launchRowsP(kKNPtoNKP, nb*dd.K, p, pa(y+Ptr(n0*dd.K*p*4)), pa(tmp), pa(b), ia(nb), ia(dd.K), ia(p))
		}
	})
}

// Conv2DBackwardData: per chunk, dy to (K, nb*P), dcol = w^T dy, then a
// col2im gather (deterministic, no atomics).
func (d *Device) Conv2DBackwardData(dx, dy, w Ptr, dd kernels.ConvDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Conv2DBackwardData"
	if !d.convCheck(op, dd) {
		return
	}
	p, crs := dd.OutH()*dd.OutW(), dd.C*dd.R*dd.S
	if !d.need(op, "dx", dx, dd.N*dd.C*dd.H*dd.W) || !d.need(op, "dy", dy, dd.N*dd.K*p) || !d.need(op, "w", w, dd.K*crs) {
		return
	}
	if d.cudnnConv(1, dd, dx, dy, w) {
		return
	}
	d.convRun(1, dd, func(nbMax int) {
		col, tmp, ok := d.convScratch(dd, nbMax)
		if !ok {
			return
		}
		for n0 := 0; n0 < dd.N; n0 += nbMax {
			nb := min(nbMax, dd.N-n0)
			d.launchRowsP(kNKPtoKNP, nb*dd.K, p, pa(tmp), pa(dy+Ptr(n0*dd.K*p*4)), ia(nb), ia(dd.K), ia(p))
			d.blasErr(op, d.blas.gemmRM(true, false, crs, nb*p, dd.K, &d.blas.one, w, crs, tmp, nb*p, &d.blas.zero, col, nb*p))
			d.im2col(kCol2im, dx, col, n0, nb, dd, nb*dd.C*dd.H*dd.W)
		}
	})
}

// Conv2DBackwardFilter: dw = sum over chunks of dy (K, nb*P) col^T, and
// db[k] = sum_{n,p} dy[n,k,p] when db is not zero.
func (d *Device) Conv2DBackwardFilter(dw, db, dy, x Ptr, dd kernels.ConvDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Conv2DBackwardFilter"
	if !d.convCheck(op, dd) {
		return
	}
	p, crs := dd.OutH()*dd.OutW(), dd.C*dd.R*dd.S
	if !d.need(op, "dw", dw, dd.K*crs) || !d.opt(op, "db", db, dd.K) || !d.need(op, "dy", dy, dd.N*dd.K*p) ||
		!d.need(op, "x", x, dd.N*dd.C*dd.H*dd.W) {
		return
	}
	if d.cudnnConv(2, dd, dw, dy, x) {
		if db != 0 {
			d.launchRows(kConvBiasGrad, dd.K, pa(db), pa(dy), ia(dd.N), ia(dd.K), ia(p))
		}
		return
	}
	d.convRun(2, dd, func(nbMax int) {
		col, tmp, ok := d.convScratch(dd, nbMax)
		if !ok {
			return
		}
		for n0 := 0; n0 < dd.N; n0 += nbMax {
			nb := min(nbMax, dd.N-n0)
			d.im2colRows(col, x, n0, nb, dd)
			d.launchRowsP(kNKPtoKNP, nb*dd.K, p, pa(tmp), pa(dy+Ptr(n0*dd.K*p*4)), ia(nb), ia(dd.K), ia(p))
			beta := &d.blas.one
			if n0 == 0 {
				beta = &d.blas.zero
			}
			d.blasErr(op, d.blas.gemmRM(false, true, dd.K, crs, nb*p, &d.blas.one, tmp, nb*p, col, nb*p, beta, dw, crs))
		}
	})
	if db != 0 {
		d.launchRows(kConvBiasGrad, dd.K, pa(db), pa(dy), ia(dd.N), ia(dd.K), ia(p))
	}
}

// Linear: y (M,Out) = x (M,In) w^T + b.
func (d *Device) Linear(y, x, w, b Ptr, m, in, out int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "Linear"
	if !d.sizes(op, m, in) || !d.sizes(op, out, in) || !d.sizes(op, m, out) || !d.need(op, "y", y, m*out) ||
		!d.need(op, "x", x, m*in) || !d.need(op, "w", w, out*in) || !d.opt(op, "b", b, out) {
		return
	}
	d.blasErr(op, d.blas.gemmRM(false, true, m, out, in, &d.blas.one, x, in, w, in, &d.blas.zero, y, out))
	if b != 0 {
		d.launch1D(kAddRowBias, m*out, pa(y), pa(b), ia(m), ia(out))
	}
}

// LinearBackward: dx = dy w, dw = dy^T x, db = column sums of dy.
func (d *Device) LinearBackward(dx, dw, db, dy, x, w Ptr, m, in, out int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "LinearBackward"
	if !d.sizes(op, m, in) || !d.sizes(op, out, in) || !d.sizes(op, m, out) || !d.need(op, "dy", dy, m*out) ||
		!d.opt(op, "dx", dx, m*in) || !d.opt(op, "dw", dw, out*in) || !d.opt(op, "db", db, out) {
		return
	}
	if dx != 0 {
		if !d.need(op, "w", w, out*in) {
			return
		}
		d.blasErr(op, d.blas.gemmRM(false, false, m, in, out, &d.blas.one, dy, out, w, in, &d.blas.zero, dx, in))
	}
	if dw != 0 {
		if !d.need(op, "x", x, m*in) {
			return
		}
		d.blasErr(op, d.blas.gemmRM(true, false, out, in, m, &d.blas.one, dy, out, x, in, &d.blas.zero, dw, in))
	}
	if db != 0 {
		d.colSum(db, dy, m, out)
	}
}

// colSum sets db[o] = sum_m dy[m, o]. Many rows (attention projections
// have batch*tokens of them) are summed in two stages so that more than
// one block's worth of threads works on it.
func (d *Device) colSum(db, dy Ptr, rows, cols int) {
	const chunk = 256
	if rows <= 2*chunk {
		d.launch1D(kColSum, cols, pa(db), pa(dy), ia(rows), ia(cols))
		return
	}
	chunks := (rows + chunk - 1) / chunk
	if chunks > 65535 {
		d.launch1D(kColSum, cols, pa(db), pa(dy), ia(rows), ia(cols))
		return
	}
	part, ok := d.scratch(wsRed, int64(chunks*cols)*4)
	if !ok {
		return
	}
	d.launch(kColSumPartial, (cols+blockSize-1)/blockSize, chunks, 1, blockSize, 1, 1, pa(part), pa(dy), ia(rows), ia(cols), ia(chunk))
	d.launch1D(kColSum, cols, pa(db), pa(part), ia(chunks), ia(cols))
}

func (d *Device) gnCheck(op string, g kernels.GroupNormDims) bool {
	if !d.sizes(op, g.N, g.C, g.HW) || !d.sizes(op, g.Groups) {
		return false
	}
	if g.C%g.Groups != 0 {
		d.failf("%s: C = %d not divisible by Groups = %d", op, g.C, g.Groups)
		return false
	}
	if !(g.Eps >= 0) {
		d.failf("%s: Eps = %v: must be >= 0", op, g.Eps)
		return false
	}
	return true
}

// GroupNorm (+ SiLU): one block per (n, group), two-pass mean and variance
// in shared memory, then the affine step and the optional SiLU in the same
// kernel (Wu & He 2018).
func (d *Device) GroupNorm(y, mean, rstd, x, gamma, beta Ptr, g kernels.GroupNormDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "GroupNorm"
	if !d.gnCheck(op, g) {
		return
	}
	total, ng := g.N*g.C*g.HW, g.N*g.Groups
	if !d.need(op, "y", y, total) || !d.need(op, "x", x, total) || !d.need(op, "mean", mean, ng) ||
		!d.need(op, "rstd", rstd, ng) || !d.opt(op, "gamma", gamma, g.C) || !d.opt(op, "beta", beta, g.C) {
		return
	}
	args := []uint64{pa(y), pa(mean), pa(rstd), pa(x), pa(gamma), pa(beta), ia(g.C), ia(g.HW), ia(g.Groups), fa(g.Eps), ba(g.SiLU)}
	if sh := (g.C / g.Groups) * g.HW * 4; d.gnSmem(sh) {
		d.launchShared(kGNFwdSmem, sh, ng, 1, 1, blockSize, 1, 1, args...)
		return
	}
	d.launchRows(kGNFwd, ng, args...)
}

// maxStaticShared is the shared memory a block may use without opting in.
const maxStaticShared = 48 << 10

// gnSmem reports whether the shared-memory GroupNorm kernels (variant 2)
// run for a group needing bytes of shared memory (plus the kernels' 1 KiB
// reduction array).
func (d *Device) gnSmem(bytes int) bool {
	switch d.gnKern {
	case 1:
		return false
	case 2:
		return bytes+1024 <= maxStaticShared
	}
	return bytes+1024 <= maxStaticShared
}

// GroupNormBackward: dx per (n, group) block; dgamma, dbeta per channel.
func (d *Device) GroupNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta Ptr, g kernels.GroupNormDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "GroupNormBackward"
	if !d.gnCheck(op, g) {
		return
	}
	total, ng := g.N*g.C*g.HW, g.N*g.Groups
	if !d.need(op, "dx", dx, total) || !d.need(op, "dy", dy, total) || !d.need(op, "x", x, total) ||
		!d.need(op, "mean", mean, ng) || !d.need(op, "rstd", rstd, ng) || !d.opt(op, "gamma", gamma, g.C) ||
		!d.opt(op, "beta", beta, g.C) || !d.opt(op, "dgamma", dgamma, g.C) || !d.opt(op, "dbeta", dbeta, g.C) {
		return
	}
	args := []uint64{pa(dx), pa(dy), pa(x), pa(mean), pa(rstd), pa(gamma), pa(beta), ia(g.C), ia(g.HW), ia(g.Groups), ba(g.SiLU)}
	if sh := 2 * (g.C / g.Groups) * g.HW * 4; d.gnSmem(sh) {
		d.launchShared(kGNBwdDxSmem, sh, ng, 1, 1, blockSize, 1, 1, args...)
	} else {
		d.launchRows(kGNBwdDx, ng, args...)
	}
	if dgamma != 0 || dbeta != 0 {
		d.launchRows(kGNBwdAffine, g.C, pa(dgamma), pa(dbeta), pa(dy), pa(x), pa(mean), pa(rstd), pa(gamma),
			pa(beta), ia(g.N), ia(g.C), ia(g.HW), ia(g.Groups), ba(g.SiLU))
	}
}
