package kernels

import (
	"math"
)

// DropoutKeep reports whether element i of a dropout mask drawn from seed
// keeps its value (probability 1-p): u(seed, i) >= p with u uniform in
// [0, 1) on a 2^-24 grid from a SplitMix64 hash of seed + i*golden. A
// counter-based draw, so the CPU and the GPU produce the same mask from
// the same seed, a backward pass recomputes it instead of storing it, and
// element i of a batch gets the same value however the batch is split
// (offset i by the batch position of the first example).
func DropoutKeep(seed uint64, i uint64, p float32) bool {
	z := seed + (i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	u := float32(z>>40) * (1.0 / (1 << 24))
	return u >= p
}

// Dropout sets y[i] = x[i] / (1-p) where DropoutKeep(seed, offset+i, p),
// else 0, for i < n (inverted dropout, Srivastava et al. 2014, as
// PyTorch's F.dropout in training). The backward pass is the same call on
// dy with the same seed and offset. 0 <= p < 1; y may alias x.
func (c *CPU) Dropout(y, x []float32, p float32, seed uint64, offset, n int) {
	if !c.has("Dropout", "y", y, n) || !c.has("Dropout", "x", x, n) {
		return
	}
	if !(p >= 0 && p < 1) || offset < 0 {
		c.fail("Dropout: p = %v, offset %d: need 0 <= p < 1 and offset >= 0", p, offset)
		return
	}
	scale := 1 / (1 - p)
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			if DropoutKeep(seed, uint64(offset+i), p) {
				y[i] = x[i] * scale
			} else {
				y[i] = 0
			}
		}
	})
}

// DiffusionLossDims describe a DiffusionLoss call.
type DiffusionLossDims struct {
	N, D int // examples, and values per example (C*H*W)
	// Learned: out holds 2D values per example, the mean channels then the
	// variance channels (the (N, 2C, H, W) layout); else D.
	Learned bool
	// Range: learned-range variance, log var = f max + (1-f) min with
	// f = (v+1)/2 (Nichol & Dhariwal 2021, Eq. 15); else log var = v.
	Range bool
}

// The per-example coefficients of DiffusionLoss, one row of
// NumLossCoef values per example (see DiffusionLoss for the formulas).
const (
	CoefTargetX0    = iota // target = TargetX0 x0 + TargetNoise noise (epsilon, x0 or v)
	CoefTargetNoise        //
	CoefSqrtAB             // x_t = SqrtAB x0 + Sqrt1mAB noise
	CoefSqrt1mAB           //
	CoefX0FromXt           // xhat0 = X0FromXt x_t + X0FromOut out
	CoefX0FromOut          //
	CoefMean1              // mu = Mean1 xhat0 + Mean2 x_t
	CoefMean2              //
	CoefPostLogVar         // log variance of q(x_{t-1} | x_t, x_0), clipped at t = 0
	CoefMinLogVar          // the model's log variance when fixed; the learned range's low end
	CoefMaxLogVar          // the learned range's high end
	CoefMSE                // weight of the mean squared error in the loss
	CoefVB                 // weight of L_t in bits in the loss; 0 skips the variational term
	CoefDecoder            // 1 at t = 0: L_0 = -log p(x_0 | x_1) (discretised Gaussian) instead of a KL
	CoefStopMean           // 1: the variational term does not move the mean channels (hybrid)
	CoefWeight             // the example's share of the batch loss (importance weight / N)
	NumLossCoef
)

// DiffusionLoss is the training loss of a diffusion model's output and
// its gradient (improved-diffusion's training_losses, Nichol & Dhariwal
// 2021). Per example i, with its coefficient row k = coef[i*NumLossCoef:]
// and x_t = SqrtAB x0 + Sqrt1mAB noise:
//
//	mse   = mean_j (out_j - (TargetX0 x0_j + TargetNoise noise_j))^2
//	vb    = mean_j L_j / ln 2, with xhat0 = X0FromXt x_t + X0FromOut out_j,
//	        mu = Mean1 xhat0 + Mean2 x_t, log var from the variance channel
//	        (or MinLogVar when fixed), and L_j = KL(N(Mean1 x0 + Mean2 x_t,
//	        exp PostLogVar) || N(mu, exp logvar)), or at t = 0 (Decoder)
//	        -log of the discretised Gaussian's mass on x0's 8-bit bin
//	loss  = MSE mse + VB vb      (vb is not computed when VB is 0)
//
// It writes terms[i] = (loss, mse, vb), the batch loss loss[0] =
// sum_i Weight_i loss_i, and dout = dloss[0]/dout (the variational term's
// mean gradient dropped when StopMean). x0 and noise are (N, D); out and
// dout are (N, D) or (N, 2D) when Learned; terms (N, 3); coef
// (N, NumLossCoef). Computed in float64 on the CPU.
func (c *CPU) DiffusionLoss(loss, terms, dout, out, x0, noise, coef []float32, d DiffusionLossDims) {
	const op = "DiffusionLoss"
	if !c.sizes(op, d.N, d.D) {
		return
	}
	per := d.D
	if d.Learned {
		per = 2 * d.D
	}
	if !c.has(op, "loss", loss, 1) || !c.has(op, "terms", terms, 3*d.N) || !c.has(op, "dout", dout, d.N*per) ||
		!c.has(op, "out", out, d.N*per) || !c.has(op, "x0", x0, d.N*d.D) || !c.has(op, "noise", noise, d.N*d.D) ||
		!c.has(op, "coef", coef, d.N*NumLossCoef) {
		return
	}
	share := make([]float64, d.N)
	c.parallel(d.N, 1, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			k := coef[i*NumLossCoef : (i+1)*NumLossCoef]
			l, mse, vb := diffusionLossExample(dout[i*per:(i+1)*per], out[i*per:(i+1)*per],
				x0[i*d.D:(i+1)*d.D], noise[i*d.D:(i+1)*d.D], k, d)
			terms[3*i], terms[3*i+1], terms[3*i+2] = float32(l), float32(mse), float32(vb)
			share[i] = float64(k[CoefWeight]) * l
		}
	})
	var sum float64
	for _, s := range share {
		sum += s
	}
	loss[0] = float32(sum)
}

// diffusionLossExample is DiffusionLoss for one example; g receives the
// gradient already scaled by the example's weight.
func diffusionLossExample(g, out, x0, noise, k []float32, d DiffusionLossDims) (loss, mse, vb float64) {
	D := d.D
	coef := func(i int) float64 { return float64(k[i]) }
	tx, tn, sa, sb := coef(CoefTargetX0), coef(CoefTargetNoise), coef(CoefSqrtAB), coef(CoefSqrt1mAB)
	wMSE, wVB, w := coef(CoefMSE), coef(CoefVB), coef(CoefWeight)
	for j := 0; j < D; j++ {
		r := float64(out[j]) - (tx*float64(x0[j]) + tn*float64(noise[j]))
		mse += r * r
		g[j] = float32(w * wMSE * 2 * r / float64(D))
	}
	if d.Learned {
		for j := D; j < 2*D; j++ {
			g[j] = 0
		}
	}
	mse /= float64(D)
	if wVB == 0 {
		return wMSE * mse, mse, 0
	}
	cx, co, c1, c2 := coef(CoefX0FromXt), coef(CoefX0FromOut), coef(CoefMean1), coef(CoefMean2)
	qLogVar, minLog, maxLog := coef(CoefPostLogVar), coef(CoefMinLogVar), coef(CoefMaxLogVar)
	decoder, stopMean := k[CoefDecoder] != 0, k[CoefStopMean] != 0
	norm := w * wVB / (float64(D) * math.Ln2)
	for j := 0; j < D; j++ {
		a, n := float64(x0[j]), float64(noise[j])
		xt := sa*a + sb*n
		mu := c1*(cx*xt+co*float64(out[j])) + c2*xt
		lv, dlv := minLog, 0.0
		if d.Learned {
			v := float64(out[D+j])
			if d.Range {
				f := (v + 1) / 2
				lv, dlv = f*maxLog+(1-f)*minLog, (maxLog-minLog)/2
			} else {
				lv, dlv = v, 1
			}
		}
		var term, dmu, dlogvar float64
		if decoder {
			lp, dm, dls := discretizedGaussianLogLik(a, mu, 0.5*lv)
			term, dmu, dlogvar = -lp, -dm, -0.5*dls
		} else {
			term, dmu, dlogvar = normalKL(c1*a+c2*xt, qLogVar, mu, lv)
		}
		vb += term
		if !stopMean {
			g[j] += float32(norm * dmu * c1 * co)
		}
		if d.Learned {
			g[D+j] = float32(norm * dlogvar * dlv)
		}
	}
	vb /= float64(D) * math.Ln2
	return wMSE*mse + wVB*vb, mse, vb
}

// normalKL is KL(N(m1, exp lv1) || N(m2, exp lv2)) in nats and its
// derivatives with respect to m2 and lv2.
func normalKL(m1, lv1, m2, lv2 float64) (kl, dm2, dlv2 float64) {
	dm := m1 - m2
	iv := math.Exp(-lv2)
	r := math.Exp(lv1 - lv2)
	return 0.5 * (-1 + lv2 - lv1 + r + dm*dm*iv), -dm * iv, 0.5 * (1 - r - dm*dm*iv)
}

// discretizedGaussianLogLik is log of N(mean, exp(logScale)^2)'s mass on
// the 8-bit bin of x in [-1, 1] (edge bins open-ended, floored at 1e-12;
// Ho et al. 2020, Eq. 13) and its derivatives with respect to mean and
// logScale.
func discretizedGaussianLogLik(x, mean, logScale float64) (lp, dMean, dLogScale float64) {
	const half, floor = 1.0 / 255, 1e-12
	cdf := func(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }
	pdf := func(z float64) float64 { return math.Exp(-0.5*z*z) / math.Sqrt(2*math.Pi) }
	inv := math.Exp(-logScale)
	a, b := inv*(x-mean+half), inv*(x-mean-half)
	switch {
	case x < -0.999:
		p := cdf(a)
		if p < floor {
			return math.Log(floor), 0, 0
		}
		r := pdf(a) / p
		return math.Log(p), -inv * r, -a * r
	case x > 0.999:
		p := cdf(-b)
		if p < floor {
			return math.Log(floor), 0, 0
		}
		r := pdf(b) / p
		return math.Log(p), inv * r, b * r
	}
	var p float64
	switch {
	case b > 0:
		p = cdf(-b) - cdf(-a)
	case a < 0:
		p = cdf(a) - cdf(b)
	default:
		p = 1 - cdf(-a) - cdf(b)
	}
	if p < floor {
		return math.Log(floor), 0, 0
	}
	pa, pb := pdf(a), pdf(b)
	return math.Log(p), -inv * (pa - pb) / p, -(a*pa - b*pb) / p
}

// Norm sets dst[0] = sqrt(sum_i x[i]^2) over n values (accumulated in
// float64), leaving the result where the device can read it: gradient-norm
// clipping then needs no round trip to the host.
func (c *CPU) Norm(dst, x []float32, n int) {
	if c.has("Norm", "dst", dst, 1) && c.has("Norm", "x", x, n) {
		dst[0] = float32(math.Sqrt(float64(c.SumSquares(x, n))))
	}
}

// ClipToNorm scales x by maxNorm/norm[0] when norm[0] > maxNorm (global
// gradient-norm clipping with the norm from Norm); otherwise x is left
// as it is.
func (c *CPU) ClipToNorm(x, norm []float32, maxNorm float32, n int) {
	if !c.has("ClipToNorm", "x", x, n) || !c.has("ClipToNorm", "norm", norm, 1) {
		return
	}
	if nv := norm[0]; nv > maxNorm {
		c.Axpby(x, maxNorm/nv, x, 0, n)
	}
}
