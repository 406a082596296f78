package diffusion

import (
	"fmt"
	"math"
)

// LossTerms holds per-example training loss terms, each a mean over the
// C*H*W dimensions.
type LossTerms struct {
	Loss []float64 // the objective chosen by Config.Loss, before weighting
	MSE  []float64 // L_simple: mean squared error of the prediction
	VB   []float64 // L_t of the variational bound in bits (0 when not computed)
}

// QSample draws x_t ~ q(x_t | x_0) for a batch with one 0-indexed timestep
// per example: x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) noise
// (Ho et al. 2020, Eq. 4). t indexes this process's schedule.
func (d *Diffusion) QSample(x0, noise Batch, t []int) (Batch, error) {
	if err := x0.Check(); err != nil {
		return Batch{}, fmt.Errorf("q_sample x0: %w", err)
	}
	if !sameShape(x0, noise) || len(noise.Data) != len(x0.Data) {
		return Batch{}, fmt.Errorf("diffusion: q_sample noise shape (%d,%d,%d,%d): must equal x0's (%d,%d,%d,%d)", noise.N, noise.C, noise.H, noise.W, x0.N, x0.C, x0.H, x0.W)
	}
	if err := d.checkT(t, x0.N); err != nil {
		return Batch{}, err
	}
	out := NewBatch(x0.N, x0.C, x0.H, x0.W)
	D := x0.C * x0.H * x0.W
	for i := range x0.N {
		a, b := d.s.SqrtAlphasCumprod[t[i]], d.s.SqrtOneMinusAlphasCumprod[t[i]]
		for j := i * D; j < (i+1)*D; j++ {
			out.Data[j] = float32(a*float64(x0.Data[j]) + b*float64(noise.Data[j]))
		}
	}
	return out, nil
}

// TrainingLoss computes the per-example training losses of the model
// output out = model(x_t, t) for x_t = QSample(x0, noise, t) (improved-
// diffusion's training_losses), and dout = d(mean_i w_i Loss_i)/d out, the
// gradient a trainer back-propagates (weights w from importance sampling;
// nil means all 1). t holds 0-indexed timesteps of this process's
// schedule, one per example, and T below is this process's T (as
// improved-diffusion's num_timesteps, also for a respaced process). The
// objectives:
//
//	simple: L_simple = mean_j (target_j - out_j)^2 with target eps, x_0 or
//	        v = sqrt(alphabar_t) eps - sqrt(1 - alphabar_t) x_0
//	vlb:    T * L_t, with L_t = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
//	        for t > 0 and -log p(x_0 | x_1) (discretised decoder) at t = 0,
//	        both as means over dimensions in bits (Ho et al. 2020, Eq. 5)
//	hybrid: L_simple + lambda * T * L_t, the mean's gradient stopped in
//	        L_t (Nichol & Dhariwal 2021, Sec. 3.1); with T = 1000 and
//	        lambda = 0.001 this is improved-diffusion's mse + vb.
//
// With a learned variance L_simple only sees the mean channels. The x_0
// estimate is not clipped here.
func (d *Diffusion) TrainingLoss(out, x0, noise Batch, t []int, weights []float64) (LossTerms, []float32, error) {
	if err := d.checkOut(out, x0, t); err != nil {
		return LossTerms{}, nil, fmt.Errorf("training loss: %w", err)
	}
	if !sameShape(x0, noise) || len(noise.Data) != len(x0.Data) {
		return LossTerms{}, nil, fmt.Errorf("diffusion: training loss: noise shape (%d,%d,%d,%d): must equal x0's (%d,%d,%d,%d)", noise.N, noise.C, noise.H, noise.W, x0.N, x0.C, x0.H, x0.W)
	}
	if weights != nil && len(weights) != x0.N {
		return LossTerms{}, nil, fmt.Errorf("diffusion: training loss: %d weights for a batch of %d: need one per example or nil", len(weights), x0.N)
	}
	D := x0.C * x0.H * x0.W
	per := len(out.Data) / x0.N
	o64 := make([]float64, per)
	g64 := make([]float64, per)
	a64 := make([]float64, D)
	n64 := make([]float64, D)
	terms := LossTerms{Loss: make([]float64, x0.N), MSE: make([]float64, x0.N), VB: make([]float64, x0.N)}
	dout := make([]float32, len(out.Data))
	for i := range x0.N {
		for j := range o64 {
			o64[j] = float64(out.Data[i*per+j])
		}
		for j := range D {
			a64[j] = float64(x0.Data[i*D+j])
			n64[j] = float64(noise.Data[i*D+j])
		}
		l, mse, vb := d.lossExample(o64, a64, n64, t[i], g64)
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return LossTerms{}, nil, fmt.Errorf("diffusion: training loss of example %d at t=%d is %v (model output or data not finite?)", i, t[i], l)
		}
		terms.Loss[i], terms.MSE[i], terms.VB[i] = l, mse, vb
		w := 1.0
		if weights != nil {
			w = weights[i]
		}
		scale := w / float64(x0.N)
		for j, g := range g64 {
			dout[i*per+j] = float32(g * scale)
		}
	}
	return terms, dout, nil
}

// LossFunc returns a closure with the signature of train.LossFunc: given
// the network output it writes dL/dout into dout and returns the weighted
// batch mean of the per-example losses for the fixed x0, noise and
// timesteps. When terms is non-nil it receives the per-example terms of
// the last call (for importance sampling updates and logging).
func (d *Diffusion) LossFunc(x0, noise Batch, t []int, weights []float64, terms *LossTerms) func(out Batch, dout []float32) (float64, error) {
	return func(out Batch, dout []float32) (float64, error) {
		lt, g, err := d.TrainingLoss(out, x0, noise, t, weights)
		if err != nil {
			return 0, err
		}
		if len(dout) != len(g) {
			return 0, fmt.Errorf("diffusion: loss gradient buffer has %d values, the output %d", len(dout), len(g))
		}
		copy(dout, g)
		if terms != nil {
			*terms = lt
		}
		sum := 0.0
		for i, l := range lt.Loss {
			w := 1.0
			if weights != nil {
				w = weights[i]
			}
			sum += w * l
		}
		return sum / float64(len(lt.Loss)), nil
	}
}

// lossExample computes the loss terms of one example in float64 and
// writes dLoss/dout into g (same length as out). t indexes d's schedule.
func (d *Diffusion) lossExample(out, x0, noise []float64, t int, g []float64) (loss, mse, vb float64) {
	D := len(x0)
	s := d.s
	sa, sb := s.SqrtAlphasCumprod[t], s.SqrtOneMinusAlphasCumprod[t]
	for j := range g {
		g[j] = 0
	}
	// L_simple on the mean channels.
	for j := range D {
		var target float64
		switch d.cfg.Prediction {
		case PredictX0:
			target = x0[j]
		case PredictV:
			target = sa*noise[j] - sb*x0[j]
		default:
			target = noise[j]
		}
		r := out[j] - target
		mse += r * r
		g[j] = 2 * r / float64(D)
	}
	mse /= float64(D)

	learned := d.cfg.Variance.IsLearned()
	useVB := d.cfg.Loss == LossVLB || (d.cfg.Loss == LossHybrid && learned)
	if !useVB {
		return mse, mse, 0
	}
	// VLB weight: T for vlb (an unbiased estimate of L_vlb), lambda*T for
	// the hybrid term.
	weight := float64(d.T())
	stopMean := false
	if d.cfg.Loss == LossHybrid {
		weight *= d.cfg.HybridLambda
		stopMean = true
	} else {
		for j := range D {
			g[j] = 0 // vlb alone: no L_simple gradient
		}
	}
	cx, co := d.x0Coefs(t)
	c1, c2 := s.PosteriorMeanCoef1[t], s.PosteriorMeanCoef2[t]
	qLogVar := s.PosteriorLogVarianceClipped[t]
	norm := weight / (float64(D) * math.Ln2)
	for j := range D {
		xt := sa*x0[j] + sb*noise[j]
		x0hat := cx*xt + co*out[j]
		mu := c1*x0hat + c2*xt
		v := 0.0
		if learned {
			v = out[D+j]
		}
		lv, dlv := d.logVariance(t, v)
		var term, dmu, dlogvar float64
		if t == 0 {
			// Decoder NLL: -log p(x_0 | x_1), log scale = logvar/2.
			lp, dm, dls := discretizedGaussianLogLikGrad(x0[j], mu, 0.5*lv)
			term, dmu, dlogvar = -lp, -dm, -0.5*dls
		} else {
			qmu := c1*x0[j] + c2*xt
			term, dmu, dlogvar = normalKLGrad(qmu, qLogVar, mu, lv)
		}
		vb += term
		if !stopMean {
			g[j] += norm * dmu * c1 * co
		}
		if learned {
			g[D+j] += norm * dlogvar * dlv
		}
	}
	vb /= float64(D) * math.Ln2
	if d.cfg.Loss == LossHybrid {
		return mse + weight*vb, mse, vb
	}
	return weight * vb, mse, vb
}

// LossCoefs are the constants of TrainingLoss for one example at
// timestep t, for executing the loss elsewhere (a GPU kernel): with
// x_t = SqrtAB x0 + Sqrt1mAB noise,
//
//	target = TargetX0 x0 + TargetNoise noise            (epsilon, x0 or v)
//	xhat0  = X0FromXt x_t + X0FromOut out                (the mean channels)
//	mu     = Mean1 xhat0 + Mean2 x_t                     (Ho Eq. 7)
//	log Sigma = MinLogVar (fixed variance), the variance channel (learned),
//	            or f MaxLogVar + (1-f) MinLogVar, f = (v+1)/2 (learned range)
//	L_t    = KL(N(Mean1 x0 + Mean2 x_t, exp PostLogVar) || N(mu, Sigma)),
//	         or -log p(x0 | x1) when Decoder (t = 0)
//	loss   = MSE mean_j (out_j - target_j)^2 + VB mean_j L_t,j / ln 2
//
// VB is 0 when the objective has no variational term; StopMean keeps the
// term from moving the mean channels (hybrid).
type LossCoefs struct {
	TargetX0, TargetNoise, SqrtAB, Sqrt1mAB float64
	X0FromXt, X0FromOut, Mean1, Mean2       float64
	PostLogVar, MinLogVar, MaxLogVar        float64
	MSE, VB                                 float64
	Decoder, StopMean                       bool
}

// LossCoefs returns the constants of TrainingLoss at 0-indexed timestep t
// of this process (see the type).
func (d *Diffusion) LossCoefs(t int) (LossCoefs, error) {
	if t < 0 || t >= d.T() {
		return LossCoefs{}, fmt.Errorf("diffusion: loss coefficients: timestep %d: must be in 0..%d", t, d.T()-1)
	}
	s := d.s
	c := LossCoefs{SqrtAB: s.SqrtAlphasCumprod[t], Sqrt1mAB: s.SqrtOneMinusAlphasCumprod[t],
		Mean1: s.PosteriorMeanCoef1[t], Mean2: s.PosteriorMeanCoef2[t], PostLogVar: s.PosteriorLogVarianceClipped[t],
		MSE: 1, Decoder: t == 0}
	switch d.cfg.Prediction {
	case PredictX0:
		c.TargetX0 = 1
	case PredictV:
		c.TargetX0, c.TargetNoise = -c.Sqrt1mAB, c.SqrtAB
	default:
		c.TargetNoise = 1
	}
	c.X0FromXt, c.X0FromOut = d.x0Coefs(t)
	switch d.cfg.Variance {
	case LearnedRange:
		c.MinLogVar, c.MaxLogVar = s.PosteriorLogVarianceClipped[t], math.Log(s.Betas[t])
	default:
		c.MinLogVar, _ = d.logVariance(t, 0) // the fixed variances; ignored for learned
	}
	learned := d.cfg.Variance.IsLearned()
	switch {
	case d.cfg.Loss == LossVLB:
		c.MSE, c.VB = 0, float64(d.T())
	case d.cfg.Loss == LossHybrid && learned:
		c.VB, c.StopMean = d.cfg.HybridLambda*float64(d.T()), true
	}
	return c, nil
}
