package diffusion

import (
	"fmt"
	"math"
	"sort"
)

// The functions in this file work on one example: D = C*H*W values, with
// the model output split into its mean part (D values) and, for a learned
// variance, its variance part (the next D values), as the (N, 2C, H, W)
// layout puts them. t is an index into d's schedule.

// x0Coefs returns (a, b) with xhat_0 = a x_t + b out for the mean channels,
// so b is dxhat_0/dout:
//
//	epsilon: xhat_0 = sqrt(1/alphabar_t) x_t - sqrt(1/alphabar_t - 1) eps   (Ho Eq. 15)
//	x0:      xhat_0 = out
//	v:       xhat_0 = sqrt(alphabar_t) x_t - sqrt(1 - alphabar_t) v        (Salimans & Ho 2022)
func (d *Diffusion) x0Coefs(t int) (cx, cout float64) {
	s := d.s
	switch d.cfg.Prediction {
	case PredictX0:
		return 0, 1
	case PredictV:
		return s.SqrtAlphasCumprod[t], -s.SqrtOneMinusAlphasCumprod[t]
	default:
		return s.SqrtRecipAlphasCumprod[t], -s.SqrtRecipM1AlphasCumprod[t]
	}
}

// epsCoefs returns (a, b) with eps = a x_t + b out for the mean channels:
// the epsilon implied by the raw output.
func (d *Diffusion) epsCoefs(t int) (cx, cout float64) {
	s := d.s
	switch d.cfg.Prediction {
	case PredictX0:
		// eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)
		return 1 / s.SqrtOneMinusAlphasCumprod[t], -s.SqrtAlphasCumprod[t] / s.SqrtOneMinusAlphasCumprod[t]
	case PredictV:
		// eps = sqrt(1 - ab) x_t + sqrt(ab) v
		return s.SqrtOneMinusAlphasCumprod[t], s.SqrtAlphasCumprod[t]
	default:
		return 0, 1
	}
}

// logVariance returns log Sigma_theta for one value of the variance
// channels (ignored when fixed) and dlogSigma/dv.
//
//	fixed_small:   log betatilde_t (clipped at t = 0)
//	fixed_large:   log beta_t (betatilde_1 at t = 0)
//	learned:       v
//	learned_range: (v+1)/2 log beta_t + (1-v)/2 log betatilde_t   (Nichol & Dhariwal Eq. 15)
func (d *Diffusion) logVariance(t int, v float64) (lv, dlv float64) {
	switch d.cfg.Variance {
	case FixedLarge:
		return d.largeLogVar[t], 0
	case Learned:
		return v, 1
	case LearnedRange:
		minLog := d.s.PosteriorLogVarianceClipped[t]
		maxLog := math.Log(d.s.Betas[t])
		frac := (v + 1) / 2
		return frac*maxLog + (1-frac)*minLog, (maxLog - minLog) / 2
	default:
		return d.s.PosteriorLogVarianceClipped[t], 0
	}
}

// processX0 clips or thresholds the x_0 estimate in place, per the config.
func (d *Diffusion) processX0(x0 []float64, clip bool) {
	if !clip {
		return
	}
	if d.cfg.Thresholding {
		dynamicThreshold(x0, d.cfg.ThresholdRatio, d.cfg.ThresholdMax)
		return
	}
	r := d.cfg.ClipRange
	for i, v := range x0 {
		x0[i] = math.Max(-r, math.Min(r, v))
	}
}

// dynamicThreshold applies Saharia et al. 2022's dynamic thresholding to
// one example: s = quantile(|x|, ratio) (linear interpolation between
// order statistics, as numpy and torch), s = clamp(s, 1, maxValue), then
// x <- clamp(x, -s, s) / s.
func dynamicThreshold(x []float64, ratio, maxValue float64) {
	a := make([]float64, len(x))
	for i, v := range x {
		a[i] = math.Abs(v)
	}
	sort.Float64s(a)
	pos := ratio * float64(len(a)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(a)-1)
	s := a[lo] + (pos-float64(lo))*(a[hi]-a[lo])
	s = math.Max(1, math.Min(maxValue, s))
	for i, v := range x {
		x[i] = math.Max(-s, math.Min(s, v)) / s
	}
}

// stepBuffers are the per-example float64 results of p_mean_variance.
type stepBuffers struct {
	x0, mean, logVar, eps []float64
}

func newStepBuffers(D int) *stepBuffers {
	return &stepBuffers{x0: make([]float64, D), mean: make([]float64, D), logVar: make([]float64, D), eps: make([]float64, D)}
}

// pMeanVariance computes p(x_{t-1} | x_t) for one example (improved-
// diffusion's p_mean_variance): xhat_0 from the mean channels (clipped or
// thresholded when clip), mu_theta = coef1_t xhat_0 + coef2_t x_t (Ho
// Eq. 7), log Sigma_theta, and the raw-output epsilon (before clipping).
// outVar is nil for a fixed variance.
func (d *Diffusion) pMeanVariance(outMean, outVar, x []float32, t int, clip bool, b *stepBuffers) {
	cx, co := d.x0Coefs(t)
	ex, eo := d.epsCoefs(t)
	for i := range outMean {
		xi, oi := float64(x[i]), float64(outMean[i])
		b.x0[i] = cx*xi + co*oi
		b.eps[i] = ex*xi + eo*oi
	}
	d.processX0(b.x0, clip)
	c1, c2 := d.s.PosteriorMeanCoef1[t], d.s.PosteriorMeanCoef2[t]
	for i := range outMean {
		b.mean[i] = c1*b.x0[i] + c2*float64(x[i])
		v := 0.0
		if outVar != nil {
			v = float64(outVar[i])
		}
		b.logVar[i], _ = d.logVariance(t, v)
	}
}

// PMeanVariance is p(x_{t-1} | x_t) = N(mean, exp(logVar)) for a batch
// (improved-diffusion's p_mean_variance; Ho et al. 2020, Eqs. 1, 7, 11):
// out is the model output on x (N, C or 2C, H, W), t holds 0-indexed
// timesteps of this process's schedule, in 0..T()-1, one per example. It returns the mean, log
// variance and x_0 estimate (clipped or thresholded when clip), each
// (N, C, H, W).
func (d *Diffusion) PMeanVariance(out, x Batch, t []int, clip bool) (mean, logVar, predX0 Batch, err error) {
	if err = d.checkOut(out, x, t); err != nil {
		return
	}
	mean, logVar, predX0 = NewBatch(x.N, x.C, x.H, x.W), NewBatch(x.N, x.C, x.H, x.W), NewBatch(x.N, x.C, x.H, x.W)
	D := x.C * x.H * x.W
	b := newStepBuffers(D)
	for i := range x.N {
		om, ov := d.splitOut(out, i, D)
		d.pMeanVariance(om, ov, x.Data[i*D:(i+1)*D], t[i], clip, b)
		for j := range D {
			mean.Data[i*D+j] = float32(b.mean[j])
			logVar.Data[i*D+j] = float32(b.logVar[j])
			predX0.Data[i*D+j] = float32(b.x0[j])
		}
	}
	return
}

// splitOut returns example i's mean channels and variance channels (nil
// for a fixed variance).
func (d *Diffusion) splitOut(out Batch, i, D int) (mean, variance []float32) {
	if d.cfg.Variance.IsLearned() {
		base := i * 2 * D
		return out.Data[base : base+D], out.Data[base+D : base+2*D]
	}
	return out.Data[i*D : (i+1)*D], nil
}

// checkOut validates a model output against the input batch and indices.
func (d *Diffusion) checkOut(out, x Batch, t []int) error {
	if err := x.Check(); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	if err := out.Check(); err != nil {
		return fmt.Errorf("model output: %w", err)
	}
	wantC := d.OutChannels(x.C)
	if out.N != x.N || out.C != wantC || out.H != x.H || out.W != x.W {
		return fmt.Errorf("diffusion: model output shape (%d,%d,%d,%d): want (%d,%d,%d,%d) for variance %s", out.N, out.C, out.H, out.W, x.N, wantC, x.H, x.W, d.cfg.Variance)
	}
	return d.checkT(t, x.N)
}

func (d *Diffusion) checkT(t []int, n int) error {
	if len(t) != n {
		return fmt.Errorf("diffusion: %d timesteps for a batch of %d: need one per example", len(t), n)
	}
	for i, v := range t {
		if v < 0 || v >= d.T() {
			return fmt.Errorf("diffusion: timesteps[%d] = %d: must be in 0..%d", i, v, d.T()-1)
		}
	}
	return nil
}

func sameShape(a, b Batch) bool { return a.N == b.N && a.C == b.C && a.H == b.H && a.W == b.W }
