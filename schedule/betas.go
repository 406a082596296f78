package schedule

import (
	"fmt"
	"math"
)

// Spec describes a beta schedule. The zero value of BetaStart/BetaEnd means
// the kind's default.
type Spec struct {
	Kind      Kind      `json:"kind"`
	T         int       `json:"timesteps"`            // number of diffusion steps, >= 1
	BetaStart float64   `json:"beta_start,omitempty"` // linear, scaled-linear, sigmoid; 0 = default
	BetaEnd   float64   `json:"beta_end,omitempty"`   // linear, scaled-linear, sigmoid; 0 = default
	Betas     []float64 `json:"betas,omitempty"`      // Custom only: the T betas, each in (0, 1)
}

// MaxT bounds the number of timesteps accepted (far above the 1000-4000
// of published models), to keep the tables of
// untrusted configs a sane size.
const MaxT = 100000

// CosineOffset is s in Nichol & Dhariwal 2021, Eq. 17.
const CosineOffset = 0.008

// CosineMaxBeta is the clip applied to cosine betas (Nichol & Dhariwal
// 2021, Sec. 3.2) to avoid singularities near t = T.
const CosineMaxBeta = 0.999

// ComputeBetas returns the T betas the spec describes.
func ComputeBetas(s Spec) ([]float64, error) {
	if s.Kind == Custom {
		if s.T != 0 && s.T != len(s.Betas) {
			return nil, fmt.Errorf("schedule: custom betas: timesteps is %d but %d betas were given (they must agree, or leave timesteps 0)", s.T, len(s.Betas))
		}
		if len(s.Betas) < 1 || len(s.Betas) > MaxT {
			return nil, fmt.Errorf("schedule: custom betas: have %d, need 1..%d", len(s.Betas), MaxT)
		}
		b := append([]float64(nil), s.Betas...)
		return b, checkBetas(b)
	}
	if s.T < 1 || s.T > MaxT {
		return nil, fmt.Errorf("schedule: timesteps %d: must be in 1..%d", s.T, MaxT)
	}
	if len(s.Betas) != 0 {
		return nil, fmt.Errorf("schedule: betas given for schedule %q: explicit betas need kind custom", s.Kind)
	}
	if math.IsNaN(s.BetaStart) || math.IsNaN(s.BetaEnd) || s.BetaStart < 0 || s.BetaEnd < 0 || s.BetaStart >= 1 || s.BetaEnd >= 1 {
		return nil, fmt.Errorf("schedule: beta_start %v, beta_end %v: each must be in (0, 1), or 0 for the default", s.BetaStart, s.BetaEnd)
	}
	T := s.T
	b := make([]float64, T)
	start, end := s.BetaStart, s.BetaEnd
	switch s.Kind {
	case Linear:
		if start == 0 && end == 0 {
			// improved-diffusion's rescaling; for T < 20 the scaled end
			// would reach 1, so betas are capped at CosineMaxBeta.
			scale := 1000 / float64(T)
			start, end = scale*1e-4, scale*0.02
			linspace(b, start, end)
			for i := range b {
				b[i] = math.Min(b[i], CosineMaxBeta)
			}
		} else {
			start, end = orDefault(start, 1e-4), orDefault(end, 0.02)
			linspace(b, start, end)
		}
	case ScaledLinear:
		start, end = orDefault(start, 0.00085), orDefault(end, 0.012)
		linspace(b, math.Sqrt(start), math.Sqrt(end))
		for i := range b {
			b[i] *= b[i]
		}
	case Sigmoid:
		start, end = orDefault(start, 1e-4), orDefault(end, 0.02)
		linspace(b, -6, 6)
		for i, z := range b {
			b[i] = start + (end-start)/(1+math.Exp(-z))
		}
	case Cosine:
		f := func(u float64) float64 {
			c := math.Cos((u + CosineOffset) / (1 + CosineOffset) * math.Pi / 2)
			return c * c
		}
		for i := range b {
			b[i] = math.Min(1-f(float64(i+1)/float64(T))/f(float64(i)/float64(T)), CosineMaxBeta)
		}
	default:
		return nil, fmt.Errorf("schedule: unknown kind %v: allowed are linear, cosine, scaled-linear, sigmoid, custom", s.Kind)
	}
	if err := checkBetas(b); err != nil {
		return nil, fmt.Errorf("schedule %s with T=%d (beta_start %v, beta_end %v): %w", s.Kind, T, start, end, err)
	}
	return b, nil
}

func orDefault(v, d float64) float64 {
	if v == 0 {
		return d
	}
	return v
}

// linspace fills dst with len(dst) evenly spaced values from a to b
// inclusive (a alone when len(dst) == 1), as numpy.linspace.
func linspace(dst []float64, a, b float64) {
	n := len(dst)
	if n == 1 {
		dst[0] = a
		return
	}
	step := (b - a) / float64(n-1)
	for i := range dst {
		dst[i] = a + float64(i)*step
	}
	dst[n-1] = b
}

// checkBetas reports a beta outside (0, 1) or NaN.
func checkBetas(b []float64) error {
	for i, v := range b {
		if !(v > 0 && v < 1) {
			return fmt.Errorf("schedule: betas[%d] = %v: every beta must be in (0, 1)", i, v)
		}
	}
	return nil
}
