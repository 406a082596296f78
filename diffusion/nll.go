package diffusion

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
)

// NLLResult is the variational bound on the negative log-likelihood of a
// batch, in bits per dimension (improved-diffusion's calc_bpd_loop).
type NLLResult struct {
	BPD      []float64   // per example: PriorBPD + sum over t of Terms[t]
	PriorBPD []float64   // per example: L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim
	Terms    [][]float64 // Terms[t][i]: L_t of example i in bits/dim (t indexes this process's schedule)
}

// MeanBPD is the batch mean of BPD.
func (r *NLLResult) MeanBPD() float64 {
	s := 0.0
	for _, v := range r.BPD {
		s += v
	}
	return s / float64(len(r.BPD))
}

// priorBPD returns L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim for one
// example (improved-diffusion's _prior_bpd; Ho et al. 2020, Eq. 5), with
// q(x_T | x_0) = N(sqrt(alphabar_{T-1}) x_0, 1 - alphabar_{T-1}) in
// 0-indexed steps.
func (d *Diffusion) priorBPD(x0 []float32) float64 {
	T := d.T() - 1
	a, lv := d.s.SqrtAlphasCumprod[T], d.s.LogOneMinusAlphasCumprod[T]
	s := 0.0
	for _, v := range x0 {
		s += NormalKL(a*float64(v), lv, 0, 0)
	}
	return s / (float64(len(x0)) * math.Ln2)
}

// vbTerm is L_t for one example in bits/dim (improved-diffusion's
// _vb_terms_bpd): KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0
// and the discretised decoder's -log p(x_0 | x_1) at t = 0.
func (d *Diffusion) vbTerm(outMean, outVar, x0, xt []float32, t int, clip bool, b *stepBuffers) float64 {
	d.pMeanVariance(outMean, outVar, xt, t, clip, b)
	c1, c2 := d.s.PosteriorMeanCoef1[t], d.s.PosteriorMeanCoef2[t]
	qlv := d.s.PosteriorLogVarianceClipped[t]
	s := 0.0
	for j := range x0 {
		if t == 0 {
			s -= DiscretizedGaussianLogLikelihood(float64(x0[j]), b.mean[j], 0.5*b.logVar[j])
		} else {
			qm := c1*float64(x0[j]) + c2*float64(xt[j])
			s += NormalKL(qm, qlv, b.mean[j], b.logVar[j])
		}
	}
	return s / (float64(len(x0)) * math.Ln2)
}

// NLL estimates the negative log-likelihood of the images x0 (N, C, H, W)
// in [-1, 1] (8-bit values, so that the decoder's bins apply) as the
// variational bound in bits/dim (Ho et al. 2020, Eq. 5; improved-diffusion's
// calc_bpd_loop): for every t = T-1..0 it draws x_t ~ q(x_t | x_0) with rng,
// calls the model once for the batch, and adds L_t; then the prior term L_T.
// The x_0 estimate is clipped as the config says. y holds class labels or
// nil. progress, if non-nil, is called after each of the T model calls.
// The context cancels between model calls.
func (d *Diffusion) NLL(ctx context.Context, m Model, x0 Batch, y []int, rng *rand.Rand, progress func(done, total int)) (*NLLResult, error) {
	if err := x0.Check(); err != nil {
		return nil, fmt.Errorf("nll: %w", err)
	}
	if m == nil || rng == nil {
		return nil, fmt.Errorf("diffusion: nll: model and rng must not be nil")
	}
	if y != nil && len(y) != x0.N {
		return nil, fmt.Errorf("diffusion: nll: %d labels for a batch of %d: need one per example or nil", len(y), x0.N)
	}
	T := d.T()
	D := x0.C * x0.H * x0.W
	res := &NLLResult{BPD: make([]float64, x0.N), PriorBPD: make([]float64, x0.N), Terms: make([][]float64, T)}
	noise := NewBatch(x0.N, x0.C, x0.H, x0.W)
	ts := make([]int, x0.N)
	mts := make([]float64, x0.N)
	b := newStepBuffers(D)
	done := 0
	for t := T - 1; t >= 0; t-- {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("diffusion: nll at t=%d: %w", t, err)
		}
		for i := range noise.Data {
			noise.Data[i] = float32(rng.NormFloat64())
		}
		for i := range ts {
			ts[i], mts[i] = t, float64(d.s.Timesteps[t])
		}
		xt, err := d.QSample(x0, noise, ts)
		if err != nil {
			return nil, err
		}
		out, err := m.Predict(ctx, xt, mts, y)
		if err != nil {
			return nil, fmt.Errorf("diffusion: nll: model at t=%v: %w", mts[0], err)
		}
		if err := d.checkOut(out, x0, ts); err != nil {
			return nil, fmt.Errorf("nll: %w", err)
		}
		res.Terms[t] = make([]float64, x0.N)
		for i := range x0.N {
			om, ov := d.splitOut(out, i, D)
			v := d.vbTerm(om, ov, x0.Data[i*D:(i+1)*D], xt.Data[i*D:(i+1)*D], t, d.cfg.ClipDenoised, b)
			res.Terms[t][i] = v
			res.BPD[i] += v
		}
		done++
		if progress != nil {
			progress(done, T)
		}
	}
	for i := range x0.N {
		p := d.priorBPD(x0.Data[i*D : (i+1)*D])
		res.PriorBPD[i] = p
		res.BPD[i] += p
	}
	return res, nil
}
