package cuda

import (
	"math"

	"github.com/ddpm-go/ddpm/kernels"
)

// Norm: dst[0] = sqrt(sum_i x[i]^2), accumulated in float64 on the device
// in a fixed order; nothing is copied to the host.
func (d *Device) Norm(dst, x Ptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("Norm", "dst", dst, 1) || !d.need("Norm", "x", x, n) {
		return
	}
	const maxBlocks = 1024
	blocks := min((n+blockSize-1)/blockSize, maxBlocks)
	ws, ok := d.scratch(wsMisc, maxBlocks*8+16)
	if !ok {
		return
	}
	d.launch(kSumSqPartial, blocks, 1, 1, blockSize, 1, 1, pa(ws), pa(x), ia(n))
	d.launch(kSqrtSumPartials, 1, 1, 1, blockSize, 1, 1, pa(dst), pa(ws), ia(blocks))
}

// ClipToNorm: x *= maxNorm/norm[0] when norm[0] > maxNorm; the condition
// is evaluated on the device.
func (d *Device) ClipToNorm(x, norm Ptr, maxNorm float32, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if n == 0 || !d.need("ClipToNorm", "x", x, n) || !d.need("ClipToNorm", "norm", norm, 1) {
		return
	}
	d.launch1D(kClipToNorm, n, pa(x), pa(norm), fa(maxNorm), ia(n))
}

// Dropout: y[i] = x[i]/(1-p) where kernels.DropoutKeep(seed, offset+i, p),
// else 0 (the same mask as the CPU's).
func (d *Device) Dropout(y, x Ptr, p float32, seed uint64, offset, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if !(p >= 0 && p < 1) || offset < 0 {
		d.failf("Dropout: p = %v, offset %d: need 0 <= p < 1 and offset >= 0", p, offset)
		return
	}
	if n == 0 || !d.need("Dropout", "y", y, n) || !d.need("Dropout", "x", x, n) {
		return
	}
	d.launch1D(kDropout, n, pa(y), pa(x), fa(p), fa(1/(1-p)), ua(seed), ua(uint64(offset)), ia(n))
}

// DiffusionLoss is kernels.CPU.DiffusionLoss on the device in float32:
// one block per example, then a fixed-order sum of the weighted losses.
func (d *Device) DiffusionLoss(loss, terms, dout, out, x0, noise, coef Ptr, dm kernels.DiffusionLossDims) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	const op = "DiffusionLoss"
	per := dm.D
	if dm.Learned {
		per = 2 * dm.D
	}
	if !d.sizes(op, dm.N, per) || dm.N > math.MaxInt32/3 {
		return
	}
	if !d.need(op, "loss", loss, 1) || !d.need(op, "terms", terms, 3*dm.N) || !d.need(op, "dout", dout, dm.N*per) ||
		!d.need(op, "out", out, dm.N*per) || !d.need(op, "x0", x0, dm.N*dm.D) || !d.need(op, "noise", noise, dm.N*dm.D) ||
		!d.need(op, "coef", coef, dm.N*kernels.NumLossCoef) {
		return
	}
	d.launchRows(kDiffusionLoss, dm.N, pa(terms), pa(dout), pa(out), pa(x0), pa(noise), pa(coef), ia(dm.D),
		ba(dm.Learned), ba(dm.Range))
	d.launch(kLossSum, 1, 1, 1, blockSize, 1, 1, pa(loss), pa(terms), pa(coef), ia(dm.N))
}
