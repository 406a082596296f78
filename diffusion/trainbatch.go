package diffusion

import (
	"fmt"
	"math/rand/v2"
)

// TrainingBatch holds the inputs of one training step: the data x_0, the
// timesteps t and importance weights drawn by a TimestepSampler, the noise
// eps ~ N(0, I) and x_t = q_sample(x_0, t, eps) (Ho et al. 2020,
// Algorithm 1). The network is run on (Xt, T); LossFunc then scores its
// output.
type TrainingBatch struct {
	X0, Noise, Xt Batch
	T             []int
	Weights       []float64
}

// NewTrainingBatch draws t (with sampler, or uniformly when sampler is nil)
// and noise from rng and computes x_t. x0 is not copied.
func (d *Diffusion) NewTrainingBatch(x0 Batch, sampler *TimestepSampler, rng *rand.Rand) (*TrainingBatch, error) {
	if err := x0.Check(); err != nil {
		return nil, fmt.Errorf("training batch: %w", err)
	}
	if rng == nil {
		return nil, fmt.Errorf("diffusion: training batch: rng must not be nil")
	}
	tb := &TrainingBatch{X0: x0, Noise: NewBatch(x0.N, x0.C, x0.H, x0.W)}
	if sampler != nil {
		if sampler.T != d.T() {
			return nil, fmt.Errorf("diffusion: training batch: timestep sampler has T = %d, the process %d", sampler.T, d.T())
		}
		tb.T, tb.Weights = sampler.Sample(rng, x0.N)
	} else {
		tb.T = make([]int, x0.N)
		tb.Weights = make([]float64, x0.N)
		for i := range tb.T {
			tb.T[i] = rng.IntN(d.T())
			tb.Weights[i] = 1
		}
	}
	for i := range tb.Noise.Data {
		tb.Noise.Data[i] = float32(rng.NormFloat64())
	}
	xt, err := d.QSample(x0, tb.Noise, tb.T)
	if err != nil {
		return nil, err
	}
	tb.Xt = xt
	return tb, nil
}

// LossFunc is d.LossFunc for this batch: a closure with train.LossFunc's
// signature.
func (tb *TrainingBatch) LossFunc(d *Diffusion, terms *LossTerms) func(out Batch, dout []float32) (float64, error) {
	return d.LossFunc(tb.X0, tb.Noise, tb.T, tb.Weights, terms)
}
