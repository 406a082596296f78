package diffusion

import (
	"fmt"
	"math"
)

// ddpmSched ports diffusers v0.21.4's DDPMScheduler: ancestral sampling
// from p(x_{t-1} | x_t) (Ho et al. 2020, Algorithm 2; learned variances
// after Nichol & Dhariwal 2021, Eq. 15) over the spaced timesteps, each
// step going from t to t - T/n (diffusers' previous_timestep, which is not
// the next call's timestep for linspace or trailing spacing).
type ddpmSched struct {
	schedRun
	ratio int // T // n
}

func newDDPM(c *SchedulerConfig, tab *trainTables, n int) *ddpmSched {
	s := &ddpmSched{schedRun: schedRun{cfg: c, tab: tab}, ratio: c.NumTrainTimesteps / n}
	for _, t := range spacedInts(c.TimestepSpacing, c.NumTrainTimesteps, n, c.StepsOffset) {
		s.ts = append(s.ts, float64(t))
	}
	return s
}

func (s *ddpmSched) Level(i int) (float64, bool) {
	if i < 0 || i >= len(s.ts) {
		return 0, false
	}
	return s.levelAt(i, s.ts[i]-float64(s.ratio))
}

// abOr returns alphabar_t, or final for t < 0.
func (s *schedRun) abOr(t int, final float64) float64 {
	if t < 0 {
		return final
	}
	return s.tab.ac[min(t, len(s.tab.ac)-1)]
}

func (s *ddpmSched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, mv, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	c := s.cfg
	vt := *c.VarianceType
	learned := vt == "learned" || vt == "learned_range"
	if learned && mv == nil {
		return Batch{}, errLearnedChannels(c, x)
	}
	t := int(s.ts[i])
	prev := t - s.ratio
	ab, abp := s.abOr(t, 1), s.abOr(prev, 1)
	bt, btp := 1-ab, 1-abp
	alphaT := ab / abp
	betaT := 1 - alphaT
	xs := toF64(x.Data)
	x0 := x0FromOutput(c.PredictionType, mo, xs, math.Sqrt(ab), math.Sqrt(bt))
	c.clipOrThreshold(x0, x.N)
	c0 := math.Sqrt(abp) * betaT / bt
	c1 := math.Sqrt(alphaT) * btp / bt
	res := make([]float64, len(xs))
	for j := range res {
		res[j] = c0*x0[j] + c1*xs[j]
	}
	if t > 0 {
		z, err := drawNoise(x, draw)
		if err != nil {
			return Batch{}, err
		}
		// posterior variance betatilde_t (Ho Eq. 7), clamped as diffusers does
		small := math.Max(btp/bt*betaT, 1e-20)
		for j := range res {
			var std float64
			switch vt {
			case "fixed_large", "fixed_large_log":
				// diffusers' fixed_large_log takes the square root of
				// log(beta_t), a NaN; the intended sqrt(beta_t) is used.
				std = math.Sqrt(betaT)
			case "learned":
				if c.LearnedLogVariance {
					std = math.Exp(0.5 * mv[j])
				} else {
					std = math.Sqrt(mv[j])
				}
			case "learned_range":
				frac := (mv[j] + 1) / 2
				std = math.Exp(0.5 * (frac*math.Log(betaT) + (1-frac)*math.Log(small)))
			default: // fixed_small, fixed_small_log
				std = math.Sqrt(small)
			}
			res[j] += std * z[j]
		}
	}
	s.next++
	return toBatch(x, res), nil
}

func errLearnedChannels(c *SchedulerConfig, x Batch) error {
	return fmt.Errorf("diffusion: %s: variance_type %s needs a model output with 2C = %d channels (mean, then variance), got %d", c.ClassName, *c.VarianceType, 2*x.C, x.C)
}

// ddimSched ports diffusers v0.21.4's DDIMScheduler (Song et al. 2021,
// "Denoising Diffusion Implicit Models", Eq. 12 with sigma_t from Eq. 16):
//
//	x_{t'} = sqrt(alphabar_{t'}) xhat_0 + sqrt(1 - alphabar_{t'} - sigma_t^2) epshat + sigma_t z
//	sigma_t = eta sqrt((1 - alphabar_{t'}) / (1 - alphabar_t) (1 - alphabar_t / alphabar_{t'}))
//
// with t' = t - T/n and alphabar_{t'} = 1 (set_alpha_to_one) or
// alphabar_0 below 0. epshat is the model's epsilon, or with
// ClippedModelOutput the one implied by the clipped xhat_0.
type ddimSched struct {
	schedRun
	ratio int
	final float64
}

func newDDIM(c *SchedulerConfig, tab *trainTables, n int) *ddimSched {
	s := &ddimSched{schedRun: schedRun{cfg: c, tab: tab}, ratio: c.NumTrainTimesteps / n, final: 1}
	if !*c.SetAlphaToOne {
		s.final = tab.ac[0]
	}
	for _, t := range spacedInts(c.TimestepSpacing, c.NumTrainTimesteps, n, c.StepsOffset) {
		s.ts = append(s.ts, float64(t))
	}
	return s
}

func (s *ddimSched) Level(i int) (float64, bool) {
	if i < 0 || i >= len(s.ts) {
		return 0, false
	}
	return s.levelAt(i, s.ts[i]-float64(s.ratio))
}

func (s *ddimSched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, _, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	c := s.cfg
	t := int(s.ts[i])
	prev := t - s.ratio
	ab, abp := s.abOr(t, 1), s.abOr(prev, s.final)
	bt := 1 - ab
	xs := toF64(x.Data)
	x0 := x0FromOutput(c.PredictionType, mo, xs, math.Sqrt(ab), math.Sqrt(bt))
	eps := epsFromOutput(c.PredictionType, mo, xs, math.Sqrt(ab), math.Sqrt(bt))
	c.clipOrThreshold(x0, x.N)
	variance := (1 - abp) / bt * (1 - ab/abp)
	std := c.Eta * math.Sqrt(variance)
	if c.ClippedModelOutput {
		for j := range eps {
			eps[j] = (xs[j] - math.Sqrt(ab)*x0[j]) / math.Sqrt(bt)
		}
	}
	dir := math.Sqrt(1 - abp - std*std)
	res := make([]float64, len(xs))
	for j := range res {
		res[j] = math.Sqrt(abp)*x0[j] + dir*eps[j]
	}
	if c.Eta > 0 && std > 0 {
		z, err := drawNoise(x, draw)
		if err != nil {
			return Batch{}, err
		}
		for j := range res {
			res[j] += std * z[j]
		}
	}
	s.next++
	return toBatch(x, res), nil
}
