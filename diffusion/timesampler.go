package diffusion

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/ddpm-go/ddpm/schedule"
)

// TimestepSampler draws training timesteps t in 0..T-1 and the importance
// weights that keep the loss estimate unbiased (improved-diffusion's
// resample.py). The uniform sampler gives weight 1; the loss-second-moment
// sampler (Nichol & Dhariwal 2021, Eq. 18) draws t with probability
// proportional to sqrt(E[L_t^2]) over the last HistoryPerTerm losses of
// each t, mixed with UniformProb of the uniform distribution, once every t
// has a full history, and weights by 1 / (T p_t). It is not safe for
// concurrent use.
type TimestepSampler struct {
	T              int         `json:"timesteps"`
	SecondMoment   bool        `json:"second_moment"`
	HistoryPerTerm int         `json:"history_per_term"`
	UniformProb    float64     `json:"uniform_prob"`
	History        [][]float64 `json:"history,omitempty"` // per t, up to HistoryPerTerm recent losses, oldest first
}

// NewUniformSampler samples t uniformly from 0..T-1 with weight 1.
func NewUniformSampler(T int) (*TimestepSampler, error) {
	if err := checkSamplerT(T); err != nil {
		return nil, err
	}
	return &TimestepSampler{T: T}, nil
}

// NewLossSecondMomentSampler is improved-diffusion's
// LossSecondMomentResampler: historyPerTerm (10 there) recent losses per
// timestep, uniformProb (0.001 there) of uniform mixing.
func NewLossSecondMomentSampler(T, historyPerTerm int, uniformProb float64) (*TimestepSampler, error) {
	if err := checkSamplerT(T); err != nil {
		return nil, err
	}
	if historyPerTerm < 1 || historyPerTerm > maxHistoryPerTerm {
		return nil, fmt.Errorf("diffusion: timestep sampler: history per term %d: must be in 1..%d", historyPerTerm, maxHistoryPerTerm)
	}
	if !(uniformProb > 0 && uniformProb <= 1) {
		return nil, fmt.Errorf("diffusion: timestep sampler: uniform probability %v: must be in (0, 1]", uniformProb)
	}
	return &TimestepSampler{T: T, SecondMoment: true, HistoryPerTerm: historyPerTerm, UniformProb: uniformProb, History: make([][]float64, T)}, nil
}

// maxHistoryPerTerm bounds HistoryPerTerm (improved-diffusion uses 10) so
// that a restored state cannot ask for unbounded memory.
const maxHistoryPerTerm = 10000

func checkSamplerT(T int) error {
	if T < 1 || T > schedule.MaxT {
		return fmt.Errorf("diffusion: timestep sampler: timesteps %d: must be in 1..%d", T, schedule.MaxT)
	}
	return nil
}

// warmedUp reports whether every timestep has a full loss history.
func (s *TimestepSampler) warmedUp() bool {
	if !s.SecondMoment || len(s.History) != s.T {
		return false
	}
	for _, h := range s.History {
		if len(h) < s.HistoryPerTerm {
			return false
		}
	}
	return true
}

// Probabilities returns p_t for every t (they sum to 1).
func (s *TimestepSampler) Probabilities() []float64 {
	p := make([]float64, s.T)
	if !s.warmedUp() {
		for i := range p {
			p[i] = 1 / float64(s.T)
		}
		return p
	}
	sum := 0.0
	for t, h := range s.History {
		m := 0.0
		for _, v := range h {
			m += v * v
		}
		p[t] = math.Sqrt(m / float64(len(h)))
		sum += p[t]
	}
	for t := range p {
		if sum > 0 {
			p[t] = p[t]/sum*(1-s.UniformProb) + s.UniformProb/float64(s.T)
		} else {
			p[t] = 1 / float64(s.T)
		}
	}
	return p
}

// Sample draws n timesteps with rng and their importance weights
// 1 / (T p_t), so that mean_i w_i L_{t_i} is unbiased for the uniform mean.
func (s *TimestepSampler) Sample(rng *rand.Rand, n int) (t []int, weights []float64) {
	t = make([]int, n)
	weights = make([]float64, n)
	if !s.warmedUp() {
		for i := range t {
			t[i] = rng.IntN(s.T)
			weights[i] = 1
		}
		return
	}
	p := s.Probabilities()
	cdf := make([]float64, len(p))
	c := 0.0
	for i, v := range p {
		c += v
		cdf[i] = c
	}
	for i := range t {
		u := rng.Float64() * c
		k := sort.SearchFloat64s(cdf, u)
		if k >= len(p) {
			k = len(p) - 1
		}
		t[i] = k
		weights[i] = 1 / (float64(s.T) * p[k])
	}
	return
}

// Update records the per-example losses of timesteps t (the unweighted
// LossTerms.Loss of a training step). The uniform sampler ignores it.
func (s *TimestepSampler) Update(t []int, losses []float64) error {
	if len(t) != len(losses) {
		return fmt.Errorf("diffusion: timestep sampler update: %d timesteps, %d losses: must match", len(t), len(losses))
	}
	if !s.SecondMoment {
		return nil
	}
	for i, tt := range t {
		if tt < 0 || tt >= s.T {
			return fmt.Errorf("diffusion: timestep sampler update: t[%d] = %d: must be in 0..%d", i, tt, s.T-1)
		}
		if math.IsNaN(losses[i]) || math.IsInf(losses[i], 0) {
			return fmt.Errorf("diffusion: timestep sampler update: loss[%d] = %v: must be finite", i, losses[i])
		}
		h := s.History[tt]
		if len(h) == s.HistoryPerTerm {
			copy(h, h[1:])
			h[len(h)-1] = losses[i]
		} else {
			s.History[tt] = append(h, losses[i])
		}
	}
	return nil
}

// MarshalState returns the sampler as JSON, for checkpoints.
func (s *TimestepSampler) MarshalState() ([]byte, error) { return json.Marshal(s) }

// UnmarshalTimestepSampler restores a sampler saved by MarshalState,
// validating it.
func UnmarshalTimestepSampler(data []byte) (*TimestepSampler, error) {
	var s TimestepSampler
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("diffusion: timestep sampler state: %w", err)
	}
	if err := checkSamplerT(s.T); err != nil {
		return nil, fmt.Errorf("%w (restoring its state)", err)
	}
	if s.SecondMoment {
		if s.HistoryPerTerm < 1 || s.HistoryPerTerm > maxHistoryPerTerm || !(s.UniformProb > 0 && s.UniformProb <= 1) {
			return nil, fmt.Errorf("diffusion: timestep sampler state: history_per_term %d, uniform_prob %v: need 1..%d and (0, 1]", s.HistoryPerTerm, s.UniformProb, maxHistoryPerTerm)
		}
		if s.History == nil {
			s.History = make([][]float64, s.T)
		}
		if len(s.History) != s.T {
			return nil, fmt.Errorf("diffusion: timestep sampler state: history for %d timesteps, want %d", len(s.History), s.T)
		}
		for t, h := range s.History {
			if len(h) > s.HistoryPerTerm {
				return nil, fmt.Errorf("diffusion: timestep sampler state: history[%d] has %d losses, at most %d allowed", t, len(h), s.HistoryPerTerm)
			}
		}
	}
	return &s, nil
}
