package kernels

import (
	"math"
	"runtime"
	"unsafe"
)

// Fused is implemented by backends with fused inference kernels: each
// method does the work of a short sequence of Ops calls, named in its
// doc, in fewer passes over memory and without the intermediate buffers.
// Package nn's inference graphs call a method when the backend has it
// and run the sequence otherwise, so a backend gains a fusion by adding
// the method, and each method is tested against its sequence.
type Fused[B any] interface {
	// LinearToChannels is Linear, Transpose12, then Add: y (N, Out, T) =
	// channels(x w^T + b) + r for tokens x (N, T, In); r (N, Out, T) (a
	// residual) or zero.
	LinearToChannels(y, x, w, b, r B, n, t, in, out int)
	// GroupNormConv2D is a normalisation, then Conv2D, then Add of res
	// (N, K, OutH, OutW) when it is not zero: y = conv(norm(x), w) + b +
	// res, with dn the norm's dims and dc the convolution's (dn.N, dn.C,
	// dn.HW = dc.N, dc.C, dc.H*dc.W). norm is GroupNorm of x, or of
	// x[n,c,p] + bias[n,c] when bias (N, C) is not zero (AddChannelBias
	// first), or GroupNormScaleShift with ss (N, 2C) when ss is not zero.
	GroupNormConv2D(y, x, bias, ss, gamma, beta, w, b, res B, dn GroupNormDims, dc ConvDims)
	// GroupNormTokens is GroupNorm then Transpose12: y (N, HW, C) is the
	// token-major GroupNorm of x (N, C, HW), such as an attention block's
	// input to its projections.
	GroupNormTokens(y, x, gamma, beta B, d GroupNormDims)
}

var _ Fused[[]float32] = (*CPU)(nil)

// LinearToChannels sets y (N, Out, T) = w x_n^T + b + r_n per example n of
// the tokens x (N, T, In). With Out a multiple of 16: one GEMM over the
// batch into token-major scratch, then 16 channels at a time transposed
// into y with the residual added (unblockRowsFrom). Otherwise per
// example: the residual and bias are written first and a GEMM reading x
// transposed adds into them.
func (c *CPU) LinearToChannels(y, x, w, b, r []float32, n, t, in, out int) {
	const op = "LinearToChannels"
	if !c.sizes(op, n, t, in, out) || !c.has(op, "y", y, n*out*t) || !c.has(op, "x", x, n*t*in) ||
		!c.has(op, "w", w, out*in) || !c.opt(op, "b", b, out) || !c.opt(op, "r", r, n*out*t) {
		return
	}
	if out%16 == 0 {
		tok := c.ws.get(n * t * out)
		defer c.ws.put(tok)
		c.Linear(tok, x, w, b, n*t, in, out)
		c.parallel(n*out/16, max(1, elemGrain/(16*t)), func(_, lo, hi int) {
			for blk := lo; blk < hi; blk++ {
				i, o0 := blk/(out/16), (blk%(out/16))*16
				at := i*out*t + o0*t
				var rr []float32
				if r != nil {
					rr = r[at:]
				}
				unblockRowsFrom(y[at:], tok[i*t*out+o0:], rr, t, t, out)
			}
		})
		return
	}
	serial := n < c.threads
	c.images(n, serial, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			yi := y[i*out*t : (i+1)*out*t]
			for o := 0; o < out; o++ {
				row := yi[o*t : (o+1)*t]
				bo := float32(0)
				if b != nil {
					bo = b[o]
				}
				if r != nil {
					addScalar(row, r[i*out*t+o*t:i*out*t+(o+1)*t], bo)
				} else {
					fill(row, bo)
				}
			}
			c.mm(serial, false, true, out, t, in, 1, w, in, x[i*t*in:], in, 1, yi, t)
		}
	})
}

// addScalar sets y[i] = x[i] + v.
func addScalar(y, x []float32, v float32) {
	for i, xv := range x[:len(y)] {
		y[i] = xv + v
	}
}

// GroupNormChannelBias is GroupNorm of x[n,c,p] + bias[n,c] without
// writing the sum: per group, the mean adds the channels' biases to their
// sums, the variance is the channels' squared deviations from the mean
// less their bias, and the affine step folds the bias into its shift.
// Statistics are accumulated in float64 in two passes, as in GroupNorm.
func (c *CPU) GroupNormChannelBias(y, mean, rstd, x, bias, gamma, beta []float32, d GroupNormDims) {
	const op = "GroupNormChannelBias"
	if !c.checkGN(op, d) {
		return
	}
	total, ng := d.N*d.C*d.HW, d.N*d.Groups
	if !c.has(op, "y", y, total) || !c.has(op, "x", x, total) || !c.has(op, "bias", bias, d.N*d.C) ||
		!c.has(op, "mean", mean, ng) || !c.has(op, "rstd", rstd, ng) || !c.opt(op, "gamma", gamma, d.C) ||
		!c.opt(op, "beta", beta, d.C) {
		return
	}
	c.groupNorm(y, mean, rstd, x, bias, gamma, beta, d)
}

// groupNorm is GroupNorm of x, plus bias[n,c] when bias is not nil, for
// checked arguments: per (n, group), the statistics (groupStats), then
// each channel row's affine step with the bias folded into its shift.
func (c *CPU) groupNorm(y, mean, rstd, x, bias, gamma, beta []float32, d GroupNormDims) {
	cg := d.C / d.Groups
	cnt := cg * d.HW
	c.parallel(d.N*d.Groups, max(1, elemGrain/cnt), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			xs := x[i*cnt : (i+1)*cnt]
			var bs []float32
			if bias != nil {
				bs = bias[i*cg : (i+1)*cg] // (n, group) i holds channels i*cg.. of the (N*C) bias rows
			}
			mu, rs := groupStats(xs, bs, d.HW, d.Eps)
			mean[i], rstd[i] = float32(mu), float32(rs)
			g0 := (i % d.Groups) * cg
			for j := 0; j < cg; j++ {
				ch := g0 + j
				a := float32(rs)
				if gamma != nil {
					a *= gamma[ch]
				}
				bb := -float32(mu) * a
				if bs != nil {
					bb = float32(float64(bs[j])-mu) * a
				}
				if beta != nil {
					bb += beta[ch]
				}
				affineRow(y[i*cnt+j*d.HW:i*cnt+(j+1)*d.HW], xs[j*d.HW:(j+1)*d.HW], a, bb, d.SiLU)
			}
		}
	})
}

// groupStats returns the mean and 1/sqrt(variance + eps) of one group's
// channels xs (len(xs)/hw rows of hw values), each row plus its bias
// bs[j] when bs is not nil: two passes, float32 blocks carried in float64
// (without biases, over the group as one run, as GroupNorm always has).
func groupStats(xs, bs []float32, hw int, eps float32) (mu, rs float64) {
	if bs == nil {
		mu = blockSum(xs) / float64(len(xs))
		return mu, 1 / math.Sqrt(blockSqDev(xs, float32(mu))/float64(len(xs))+float64(eps))
	}
	rows := len(xs) / hw
	var sum float64
	for j := 0; j < rows; j++ {
		sum += blockSum(xs[j*hw:(j+1)*hw]) + float64(bs[j])*float64(hw)
	}
	mu = sum / float64(len(xs))
	var sq float64
	for j := 0; j < rows; j++ {
		sq += blockSqDev(xs[j*hw:(j+1)*hw], float32(mu-float64(bs[j])))
	}
	return mu, 1 / math.Sqrt(sq/float64(len(xs))+float64(eps))
}

// affineRow sets y = a*x + b, then z*sigmoid(z) of that when silu: one
// channel row of a normalisation.
func affineRow(y, x []float32, a, b float32, silu bool) {
	if silu {
		siluAffine(y, x, a, b)
		return
	}
	for p, v := range x {
		y[p] = v*a + b
	}
}

// GroupNormConv2D is GroupNorm (AddChannelBias then GroupNorm when bias,
// (N, C), is not nil; with guided-diffusion's scale-shift conditioning
// when ss, (N, 2C), is not nil), then Conv2D with w and b, then the
// residual res added when it is not nil: a resnet block's norm, SiLU,
// convolution and skip connection. Where oneDNN runs the convolution on nChw16c
// (blockedConv), the normalised values are written straight into that
// layout (float32, or bf16 in bf16 mode) instead of NCHW plus oneDNN's
// reorder, and the output, with res, read back from it; otherwise it is
// the ops one after the other.
func (c *CPU) GroupNormConv2D(y, x, bias, ss, gamma, beta, w, b, res []float32, dn GroupNormDims, dc ConvDims) {
	const op = "GroupNormConv2D"
	if !c.checkGN(op, dn) {
		return
	}
	if dn.N != dc.N || dn.C != dc.C || dn.HW != dc.H*dc.W {
		c.fail("%s: GroupNorm dims %+v do not match the convolution's input %+v", op, dn, dc)
		return
	}
	if err := dc.Validate(); err != nil {
		c.fail("%s: %v", op, err)
		return
	}
	total, ng, ytotal := dn.N*dn.C*dn.HW, dn.N*dn.Groups, dc.N*dc.K*dc.OutH()*dc.OutW()
	if !c.has(op, "x", x, total) || !c.opt(op, "bias", bias, dn.N*dn.C) || !c.opt(op, "gamma", gamma, dn.C) ||
		!c.opt(op, "beta", beta, dn.C) || !c.has(op, "y", y, ytotal) || !c.has(op, "w", w, dc.K*dc.C*dc.R*dc.S) ||
		!c.opt(op, "b", b, dc.K) || !c.opt(op, "res", res, ytotal) || !c.opt(op, "ss", ss, 2*dn.N*dn.C) {
		return
	}
	stats := c.ws.get(2 * ng)
	defer c.ws.put(stats)
	mean, rstd := stats[:ng], stats[ng:]
	if c.winoFits(dc) {
		c.groupNormStats(mean, rstd, x, bias, dn)
		c.winoForward(op, y, res, w, b, dc, func(src []float32, lo, hi int) {
			c.normBlocked(lo, hi, mean, rstd, x, bias, ss, gamma, beta, dn, putPadded(src, dc.H, dc.W))
		})
		return
	}
	elem, blkSrc, blkDst := c.blockedConv(dc, b != nil)
	if !blkSrc {
		h := c.ws.get(total)
		defer c.ws.put(h)
		switch {
		case ss != nil:
			in := x
			if bias != nil {
				in = c.ws.get(total)
				defer c.ws.put(in)
				c.AddChannelBias(in, x, bias, dn.N, dn.C, dn.HW)
			}
			c.GroupNormScaleShift(h, mean, rstd, in, gamma, beta, ss, dn)
		case bias != nil:
			c.GroupNormChannelBias(h, mean, rstd, x, bias, gamma, beta, dn)
		default:
			c.GroupNorm(h, mean, rstd, x, gamma, beta, dn)
		}
		c.Conv2D(y, h, w, b, dc)
		if res != nil {
			c.Add(y, y, res, ytotal)
		}
		return
	}
	buf := c.ws.get((total*elem + 3) / 4)
	defer c.ws.put(buf)
	var buf16 []uint16
	if elem == 2 {
		buf16 = unsafe.Slice((*uint16)(unsafe.Pointer(&buf[0])), total)
	}
	c.groupNormStats(mean, rstd, x, bias, dn)
	put := putBlocked(buf, dn.HW)
	if buf16 != nil {
		put = putBlockedBF16(buf16, dn.HW)
	}
	io := convIO{src: unsafe.Pointer(&buf[0]), elem: elem, fill: func(lo, hi int) {
		c.normBlocked(lo*dn.C/16, hi*dn.C/16, mean, rstd, x, bias, ss, gamma, beta, dn, put)
	}}
	var out []float32
	if blkDst && res != nil {
		out = c.ws.get(ytotal)
		defer c.ws.put(out)
		kohw, ohw := dc.K*dc.OutH()*dc.OutW(), dc.OutH()*dc.OutW()
		io.dst = unsafe.Pointer(&out[0])
		io.drain = func(lo, hi int) {
			for blk := lo * dc.K / 16; blk < hi*dc.K/16; blk++ {
				n, k0 := blk/(dc.K/16), (blk%(dc.K/16))*16
				at := n*kohw + k0*ohw
				unblockRows(y[at:], out[blk*16*ohw:], res[at:], ohw, ohw)
			}
		}
	}
	c.dnnlForwardIO(y, nil, w, b, dc, io)
	if res != nil && io.dst == nil {
		c.Add(y, y, res, ytotal)
	}
	runtime.KeepAlive(buf)
	runtime.KeepAlive(out)
}

// GroupNormTokens sets y (N, HW, C) to GroupNorm of x (N, C, HW) moved to
// token-major order: with C a multiple of 16, written in that order from
// the normalised tiles (16 channels at a time, the transpose of
// GroupNormConv2D's nChw16c path with rows C apart); otherwise GroupNorm
// then Transpose12.
func (c *CPU) GroupNormTokens(y, x, gamma, beta []float32, d GroupNormDims) {
	const op = "GroupNormTokens"
	if !c.checkGN(op, d) {
		return
	}
	total, ng := d.N*d.C*d.HW, d.N*d.Groups
	if !c.has(op, "y", y, total) || !c.has(op, "x", x, total) || !c.opt(op, "gamma", gamma, d.C) || !c.opt(op, "beta", beta, d.C) {
		return
	}
	stats := c.ws.get(2 * ng)
	defer c.ws.put(stats)
	mean, rstd := stats[:ng], stats[ng:]
	if d.C%16 != 0 {
		h := c.ws.get(total)
		defer c.ws.put(h)
		c.GroupNorm(h, mean, rstd, x, gamma, beta, d)
		c.Transpose12(y, h, d.N, d.C, d.HW)
		return
	}
	c.groupNormStats(mean, rstd, x, nil, d)
	c.parallel(d.N*d.C/16, max(1, elemGrain/(16*d.HW)), func(_, lo, hi int) {
		c.normBlocked(lo, hi, mean, rstd, x, nil, nil, gamma, beta, d, putTokens(y, d))
	})
}

// blockPixels is how many pixels normBlocked normalises into its
// (16, blockPixels) tile before transposing them into nChw16c (or tokens).
const blockPixels = 256

// groupNormStats sets mean and rstd (N*Groups) to GroupNorm's statistics
// of x (N, C, HW), plus bias[n,c] when bias is not nil.
func (c *CPU) groupNormStats(mean, rstd, x, bias []float32, d GroupNormDims) {
	cg := d.C / d.Groups
	cnt := cg * d.HW
	c.parallel(d.N*d.Groups, max(1, elemGrain/cnt), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			var bs []float32
			if bias != nil {
				bs = bias[i*cg : (i+1)*cg]
			}
			mu, rs := groupStats(x[i*cnt:(i+1)*cnt], bs, d.HW, d.Eps)
			mean[i], rstd[i] = float32(mu), float32(rs)
		}
	})
}

// normBlocked normalises 16-channel blocks lo..hi-1 of x (block i:
// channels 16*(i%(C/16)).. of image i/(C/16)): GroupNorm(x + bias)
// (with the scale-shift ss when not nil; SiLU when d.SiLU) from the
// statistics mean and rstd, channel by channel into a tile (16 *
// blockPixels values from the scratch pool, rows blockPixels apart; the
// vectorised affine+SiLU of GroupNorm), up to blockPixels pixels at a
// time; put(blk, p0, np, tile) then moves pixels p0..p0+np-1 of block
// blk out of the tile (into oneDNN's nChw16c, token order, ...: see the
// put* functions).
func (c *CPU) normBlocked(lo, hi int, mean, rstd, x, bias, ss, gamma, beta []float32, d GroupNormDims, put func(blk, p0, np int, tile []float32)) {
	tile := c.ws.get(16 * blockPixels)
	defer c.ws.put(tile)
	cg := d.C / d.Groups
	var a, sh [16]float32
	for blk := lo; blk < hi; blk++ {
		n, c0 := blk/(d.C/16), (blk%(d.C/16))*16
		for j := 0; j < 16; j++ {
			ch := c0 + j
			g := n*d.Groups + ch/cg
			ga, be := float32(1), float32(0)
			if ss != nil {
				ga, be = affineAt(gamma, beta, ss, n, ch, d.C)
			} else {
				if gamma != nil {
					ga = gamma[ch]
				}
				if beta != nil {
					be = beta[ch]
				}
			}
			a[j] = rstd[g] * ga
			m := float64(mean[g])
			if bias != nil {
				m -= float64(bias[n*d.C+ch])
			}
			sh[j] = be - float32(m)*a[j]
		}
		xb := x[(n*d.C+c0)*d.HW:]
		for p0 := 0; p0 < d.HW; p0 += blockPixels {
			np := min(blockPixels, d.HW-p0)
			for j := 0; j < 16; j++ {
				affineRow(tile[j*blockPixels:j*blockPixels+np], xb[j*d.HW+p0:j*d.HW+p0+np], a[j], sh[j], d.SiLU)
			}
			put(blk, p0, np, tile)
		}
	}
}

// putBlocked writes normBlocked's pixels into dst in nChw16c: value (n,
// c, p) at ((n*C/16 + c/16)*HW + p)*16 + c%16.
func putBlocked(dst []float32, hw int) func(blk, p0, np int, tile []float32) {
	return func(blk, p0, np int, tile []float32) {
		blockRows(dst[(blk*hw+p0)*16:], tile, np, blockPixels)
	}
}

// putBlockedBF16 is putBlocked in bf16.
func putBlockedBF16(dst []uint16, hw int) func(blk, p0, np int, tile []float32) {
	return func(blk, p0, np int, tile []float32) {
		blockRowsBF16(dst[(blk*hw+p0)*16:], tile, np, blockPixels)
	}
}

// putTokens writes normBlocked's pixels into dst in token order (N, HW,
// C).
func putTokens(dst []float32, d GroupNormDims) func(blk, p0, np int, tile []float32) {
	return func(blk, p0, np int, tile []float32) {
		n, c0 := blk/(d.C/16), (blk%(d.C/16))*16
		blockRowsTo(dst[(n*d.HW+p0)*d.C+c0:], tile, np, blockPixels, d.C)
	}
}
