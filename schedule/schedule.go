package schedule

import (
	"fmt"
	"math"
)

// Schedule holds the float64 tables of a diffusion process with T steps,
// indexed by 0-based timestep t (see the package comment for the notation).
// All slices have length T and are read-only.
type Schedule struct {
	Betas             []float64 // beta_t
	Alphas            []float64 // alpha_t = 1 - beta_t
	AlphasCumprod     []float64 // alphabar_t = prod_{s<=t} alpha_s
	AlphasCumprodPrev []float64 // alphabar_{t-1}, with alphabar_{-1} = 1
	AlphasCumprodNext []float64 // alphabar_{t+1}, with alphabar_T = 0

	SqrtAlphasCumprod           []float64 // sqrt(alphabar_t)
	SqrtOneMinusAlphasCumprod   []float64 // sqrt(1 - alphabar_t)
	LogOneMinusAlphasCumprod    []float64 // log(1 - alphabar_t)
	SqrtRecipAlphasCumprod      []float64 // 1 / sqrt(alphabar_t)
	SqrtRecipM1AlphasCumprod    []float64 // sqrt(1/alphabar_t - 1)
	PosteriorVariance           []float64 // betatilde_t = beta_t (1 - alphabar_{t-1}) / (1 - alphabar_t) (Ho Eq. 7)
	PosteriorLogVarianceClipped []float64 // log betatilde_t, entry 0 (where betatilde_0 = 0) replaced by entry 1 as improved-diffusion does
	PosteriorMeanCoef1          []float64 // beta_t sqrt(alphabar_{t-1}) / (1 - alphabar_t) (Ho Eq. 7)
	PosteriorMeanCoef2          []float64 // (1 - alphabar_{t-1}) sqrt(alpha_t) / (1 - alphabar_t) (Ho Eq. 7)
	SNR                         []float64 // alphabar_t / (1 - alphabar_t) (Kingma et al. 2021)

	// Timesteps maps each index of this schedule to the timestep of the
	// original (training) schedule: the identity for a schedule made by New
	// or FromBetas, the kept subsequence for one made by Respace. Models are
	// always called with Timesteps[t], never with the index t.
	Timesteps []int
}

// New computes the tables of the schedule the spec describes.
func New(s Spec) (*Schedule, error) {
	b, err := ComputeBetas(s)
	if err != nil {
		return nil, err
	}
	return FromBetas(b)
}

// MustNew is New for specs known to be valid at compile time (tests,
// examples); it panics on error.
func MustNew(s Spec) *Schedule {
	sc, err := New(s)
	if err != nil {
		panic(err)
	}
	return sc
}

// FromBetas computes the tables from explicit betas, each in (0, 1). The
// slice is copied.
func FromBetas(betas []float64) (*Schedule, error) {
	if len(betas) < 1 || len(betas) > MaxT {
		return nil, fmt.Errorf("schedule: have %d betas, need 1..%d", len(betas), MaxT)
	}
	if err := checkBetas(betas); err != nil {
		return nil, err
	}
	ts := make([]int, len(betas))
	for i := range ts {
		ts[i] = i
	}
	return fromBetas(append([]float64(nil), betas...), ts), nil
}

func fromBetas(b []float64, ts []int) *Schedule {
	T := len(b)
	mk := func() []float64 { return make([]float64, T) }
	s := &Schedule{
		Betas: b, Alphas: mk(), AlphasCumprod: mk(), AlphasCumprodPrev: mk(), AlphasCumprodNext: mk(),
		SqrtAlphasCumprod: mk(), SqrtOneMinusAlphasCumprod: mk(), LogOneMinusAlphasCumprod: mk(),
		SqrtRecipAlphasCumprod: mk(), SqrtRecipM1AlphasCumprod: mk(), PosteriorVariance: mk(),
		PosteriorLogVarianceClipped: mk(), PosteriorMeanCoef1: mk(), PosteriorMeanCoef2: mk(), SNR: mk(),
		Timesteps: ts,
	}
	prod := 1.0
	for t, beta := range b {
		a := 1 - beta
		s.Alphas[t] = a
		s.AlphasCumprodPrev[t] = prod
		prod *= a
		s.AlphasCumprod[t] = prod
	}
	for t := range b {
		ac, acp, beta := s.AlphasCumprod[t], s.AlphasCumprodPrev[t], b[t]
		if t+1 < T {
			s.AlphasCumprodNext[t] = s.AlphasCumprod[t+1]
		}
		// 1 - alphabar_t computed as -expm1(sum log alpha) would be more
		// accurate for tiny t, but every reference implementation
		// (improved-diffusion, diffusers) uses 1 - alphabar_t directly.
		om := 1 - ac
		s.SqrtAlphasCumprod[t] = math.Sqrt(ac)
		s.SqrtOneMinusAlphasCumprod[t] = math.Sqrt(om)
		s.LogOneMinusAlphasCumprod[t] = math.Log(om)
		s.SqrtRecipAlphasCumprod[t] = math.Sqrt(1 / ac)
		s.SqrtRecipM1AlphasCumprod[t] = math.Sqrt(1/ac - 1)
		s.PosteriorVariance[t] = beta * (1 - acp) / om
		s.PosteriorMeanCoef1[t] = beta * math.Sqrt(acp) / om
		s.PosteriorMeanCoef2[t] = (1 - acp) * math.Sqrt(s.Alphas[t]) / om
		s.SNR[t] = ac / om
	}
	for t := 1; t < T; t++ {
		s.PosteriorLogVarianceClipped[t] = math.Log(s.PosteriorVariance[t])
	}
	if T > 1 {
		s.PosteriorLogVarianceClipped[0] = s.PosteriorLogVarianceClipped[1]
	} else {
		// With one step betatilde_0 = 0 and there is no second entry: use
		// log beta_0, the fixed-large choice.
		s.PosteriorLogVarianceClipped[0] = math.Log(b[0])
	}
	return s
}

// T is the number of steps; valid timesteps are 0..T-1.
func (s *Schedule) T() int { return len(s.Betas) }

func (s *Schedule) check(t int) error {
	if t < 0 || t >= len(s.Betas) {
		return fmt.Errorf("schedule: timestep %d: must be in 0..%d", t, len(s.Betas)-1)
	}
	return nil
}

// QMeanVariance returns the mean coefficient, variance and log variance of
// q(x_t | x_0) = N(sqrt(alphabar_t) x_0, (1 - alphabar_t) I) (Ho et al.
// 2020, Eq. 4) at the 0-indexed timestep t in 0..T-1: the mean is
// meanCoef * x_0.
func (s *Schedule) QMeanVariance(t int) (meanCoef, variance, logVariance float64, err error) {
	if err := s.check(t); err != nil {
		return 0, 0, 0, err
	}
	return s.SqrtAlphasCumprod[t], 1 - s.AlphasCumprod[t], s.LogOneMinusAlphasCumprod[t], nil
}

// QSample writes x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) noise
// into dst (Ho et al. 2020, Eq. 4 reparameterised), a draw from q(x_t | x_0)
// when noise ~ N(0, I); t is 0-indexed, in 0..T-1. dst, x0 and noise must
// have the same length; dst may alias either input.
func (s *Schedule) QSample(dst, x0, noise []float64, t int) error {
	if err := s.check(t); err != nil {
		return err
	}
	if len(x0) != len(dst) || len(noise) != len(dst) {
		return fmt.Errorf("schedule: q_sample lengths dst %d, x0 %d, noise %d: must be equal", len(dst), len(x0), len(noise))
	}
	a, b := s.SqrtAlphasCumprod[t], s.SqrtOneMinusAlphasCumprod[t]
	for i := range dst {
		dst[i] = a*x0[i] + b*noise[i]
	}
	return nil
}

// PosteriorMeanVariance writes the mean of q(x_{t-1} | x_t, x_0),
// mutilde_t = coef1_t x_0 + coef2_t x_t, into dst and returns its variance
// betatilde_t and the clipped log variance (Ho et al. 2020, Eqs. 6-7); t
// is 0-indexed, in 0..T-1. At t = 0 the posterior is the point mass at x_0
// (variance 0). dst may alias either input.
func (s *Schedule) PosteriorMeanVariance(dst, x0, xt []float64, t int) (variance, logVarianceClipped float64, err error) {
	if err := s.check(t); err != nil {
		return 0, 0, err
	}
	if len(x0) != len(dst) || len(xt) != len(dst) {
		return 0, 0, fmt.Errorf("schedule: posterior lengths dst %d, x0 %d, xt %d: must be equal", len(dst), len(x0), len(xt))
	}
	c1, c2 := s.PosteriorMeanCoef1[t], s.PosteriorMeanCoef2[t]
	for i := range dst {
		dst[i] = c1*x0[i] + c2*xt[i]
	}
	return s.PosteriorVariance[t], s.PosteriorLogVarianceClipped[t], nil
}

// LogSNR returns a new slice with log SNR(t) = log(alphabar_t / (1 -
// alphabar_t)) (Kingma et al. 2021, "Variational Diffusion Models")
// for every 0-indexed t = 0..T-1; it decreases with t.
func (s *Schedule) LogSNR() []float64 {
	out := make([]float64, len(s.SNR))
	for i, v := range s.SNR {
		out[i] = math.Log(v)
	}
	return out
}
