package kernels

import "math"

// Fused is implemented by backends with fused inference kernels: each
// method does the work of a short sequence of Ops calls, named in its
// doc, in fewer passes over memory and without the intermediate buffers.
// Package nn's inference graphs call a method when the backend has it
// and run the sequence otherwise, so a backend gains a fusion by adding
// the method, and each method is tested against its sequence.
type Fused[B any] interface {
	// LinearFromChannels is Transpose12 then Linear: y (N, T, Out) =
	// tokens(x) w^T + b for x channel-major (N, In, T), such as a feature
	// map's (N, C, H*W); w (Out, In), b (Out) or zero.
	LinearFromChannels(y, x, w, b B, n, t, in, out int)
	// LinearToChannels is Linear, Transpose12, then Add: y (N, Out, T) =
	// channels(x w^T + b) + r for tokens x (N, T, In); r (N, Out, T) (a
	// residual) or zero.
	LinearToChannels(y, x, w, b, r B, n, t, in, out int)
	// GroupNormChannelBias is AddChannelBias then GroupNorm: the
	// GroupNorm of x[n,c,p] + bias[n,c], bias (N, C); mean and rstd as in
	// GroupNorm.
	GroupNormChannelBias(y, mean, rstd, x, bias, gamma, beta B, d GroupNormDims)
}

var _ Fused[[]float32] = (*CPU)(nil)

// LinearFromChannels sets y (N, T, Out) = x_n^T w^T + b per example n of
// x (N, In, T): one GEMM per example that reads x transposed, so the
// tokens are never copied out. The examples are split over the threads.
func (c *CPU) LinearFromChannels(y, x, w, b []float32, n, t, in, out int) {
	const op = "LinearFromChannels"
	if !c.sizes(op, n, t, in, out) || !c.has(op, "y", y, n*t*out) || !c.has(op, "x", x, n*in*t) ||
		!c.has(op, "w", w, out*in) || !c.opt(op, "b", b, out) {
		return
	}
	serial := n < c.threads
	c.images(n, serial, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			yi := y[i*t*out : (i+1)*t*out]
			beta := float32(0)
			if b != nil {
				for r := 0; r < t; r++ {
					copy(yi[r*out:(r+1)*out], b[:out])
				}
				beta = 1
			}
			c.mm(serial, true, true, t, out, in, 1, x[i*in*t:], t, w, in, beta, yi, out)
		}
	})
}

// LinearToChannels sets y (N, Out, T) = w x_n^T + b + r_n per example n of
// the tokens x (N, T, In): the residual and bias are written first and
// one GEMM per example, reading x transposed, adds into them.
func (c *CPU) LinearToChannels(y, x, w, b, r []float32, n, t, in, out int) {
	const op = "LinearToChannels"
	if !c.sizes(op, n, t, in, out) || !c.has(op, "y", y, n*out*t) || !c.has(op, "x", x, n*t*in) ||
		!c.has(op, "w", w, out*in) || !c.opt(op, "b", b, out) || !c.opt(op, "r", r, n*out*t) {
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
	cg := d.C / d.Groups
	cnt := cg * d.HW
	c.parallel(ng, max(1, elemGrain/cnt), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			xs := x[i*cnt : (i+1)*cnt]
			bs := bias[i*cg : (i+1)*cg] // (n, group) i holds channels i*cg.. of the (N*C) bias rows
			var sum float64
			for j := 0; j < cg; j++ {
				sum += blockSum(xs[j*d.HW:(j+1)*d.HW]) + float64(bs[j])*float64(d.HW)
			}
			mu := sum / float64(cnt)
			var sq float64
			for j := 0; j < cg; j++ {
				sq += blockSqDev(xs[j*d.HW:(j+1)*d.HW], float32(mu-float64(bs[j])))
			}
			rs := 1 / math.Sqrt(sq/float64(cnt)+float64(d.Eps))
			mean[i], rstd[i] = float32(mu), float32(rs)
			g0 := (i % d.Groups) * cg
			for j := 0; j < cg; j++ {
				ch := g0 + j
				a := float32(rs)
				if gamma != nil {
					a *= gamma[ch]
				}
				bb := float32(float64(bs[j])-mu) * a
				if beta != nil {
					bb += beta[ch]
				}
				xr := xs[j*d.HW : (j+1)*d.HW]
				yr := y[i*cnt+j*d.HW : i*cnt+(j+1)*d.HW]
				if d.SiLU {
					siluAffine(yr, xr, a, bb)
				} else {
					for p, v := range xr {
						yr[p] = v*a + bb
					}
				}
			}
		}
	})
}
