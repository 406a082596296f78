package diffusion

import (
	"math"
	"slices"
)

// pndmSched ports diffusers v0.21.4's PNDMScheduler (Liu et al. 2022,
// "Pseudo Numerical Methods for Diffusion Models on Manifolds"): the
// transfer x_t -> x_{t'} of Eq. 9,
//
//	x_{t'} = sqrt(alphabar_{t'} / alphabar_t) x_t
//	         - (alphabar_{t'} - alphabar_t) eps / (alphabar_t sqrt(1 - alphabar_{t'}) + sqrt(alphabar_t (1 - alphabar_t) alphabar_{t'}))
//
// driven by a linear multistep combination of past epsilons (PLMS,
// Eq. 12), warmed up either by three Runge-Kutta steps of four model calls
// each (PRK, Eq. 13) or, with skip_prk_steps, by a Heun-like second call at
// the second timestep. v_prediction and sample outputs are turned into
// epsilon at the transfer, as diffusers does for v (diffusers rejects
// sample; here it is supported the same way).
type pndmSched struct {
	schedRun
	ratio    int // T // n
	n        int // inference steps
	final    float64
	nPRK     int         // number of Runge-Kutta calls (0 with skip_prk_steps)
	counter  int         // diffusers' counter: calls done
	ets      [][]float64 // past model outputs (raw) for PLMS
	curOut   []float64   // Runge-Kutta accumulator
	curX     []float64   // sample at the start of a Runge-Kutta step or the PLMS warm-up
	prkTimes []int
}

func newPNDM(c *SchedulerConfig, tab *trainTables, n int) *pndmSched {
	T := c.NumTrainTimesteps
	s := &pndmSched{schedRun: schedRun{cfg: c, tab: tab}, ratio: T / n, n: n, final: 1}
	if !*c.SetAlphaToOne {
		s.final = tab.ac[0]
	}
	// _timesteps ascending
	asc := reverse(spacedInts(c.TimestepSpacing, T, n, c.StepsOffset))
	var calls []int
	if c.SkipPRKSteps {
		// _timesteps[:-1], _timesteps[-2:-1], _timesteps[-1:]: the second
		// timestep is called twice (predictor and corrector)
		var plms []int
		if len(asc) >= 2 {
			plms = append(slices.Clone(asc[:len(asc)-1]), asc[len(asc)-2])
		}
		plms = append(plms, asc[len(asc)-1])
		calls = reverse(plms)
	} else {
		const order = 4
		last := asc[len(asc)-order:]
		var prk []int
		half := T / n / 2
		for _, t := range last {
			prk = append(prk, t, t+half)
		}
		prk = prk[:len(prk)-1]
		var rep []int
		for _, t := range prk {
			rep = append(rep, t, t)
		}
		rep = reverse(rep[1 : len(rep)-1])
		s.prkTimes = rep
		s.nPRK = len(rep)
		calls = append(slices.Clone(rep), reverse(slices.Clone(asc[:len(asc)-3]))...)
	}
	for _, t := range calls {
		s.ts = append(s.ts, float64(t))
	}
	return s
}

func (s *pndmSched) Level(i int) (float64, bool) {
	if i < 0 || i >= len(s.ts) {
		return 0, false
	}
	t := int(s.ts[i])
	if i < s.nPRK {
		if i%4 != 3 {
			return 0, false
		}
		return s.levelAt(i, float64(t))
	}
	if s.cfg.SkipPRKSteps && i == 0 && len(s.ts) > 1 {
		return 0, false // predictor, redone by call 1
	}
	if s.cfg.SkipPRKSteps && i == 1 {
		return s.levelAt(i, float64(t))
	}
	return s.levelAt(i, float64(t-s.ratio))
}

// transfer is diffusers' _get_prev_sample: the transfer part of PNDM from
// t to prev with the (combined) model output mo.
func (s *pndmSched) transfer(x []float64, t, prev int, mo []float64) []float64 {
	ab, abp := s.abOr(t, 1), s.abOr(prev, s.final)
	bt, btp := 1-ab, 1-abp
	eps := epsFromOutput(s.cfg.PredictionType, mo, x, math.Sqrt(ab), math.Sqrt(bt))
	sc := math.Sqrt(abp / ab)
	den := ab*math.Sqrt(btp) + math.Sqrt(ab*bt*abp)
	out := make([]float64, len(x))
	for j := range out {
		out[j] = sc*x[j] - (abp-ab)*eps[j]/den
	}
	return out
}

func (s *pndmSched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, _, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	xs := toF64(x.Data)
	t := int(s.ts[i])
	var res []float64
	if s.counter < s.nPRK {
		res = s.stepPRK(mo, xs, t)
	} else {
		res = s.stepPLMS(mo, xs, t)
	}
	s.counter++
	s.next++
	return toBatch(x, res), nil
}

// stepPRK is one call of the pseudo Runge-Kutta warm-up (Eq. 13): the
// four calls of a step evaluate at t, t - r/2, t - r/2, t - r and combine
// their epsilons with weights 1/6, 1/3, 1/3, 1/6.
func (s *pndmSched) stepPRK(mo, x []float64, t int) []float64 {
	diff := 0
	if s.counter%2 == 0 {
		diff = s.cfg.NumTrainTimesteps / s.n / 2
	}
	prev := t - diff
	start := s.prkTimes[s.counter/4*4]
	if s.curOut == nil {
		s.curOut = make([]float64, len(mo))
	}
	comb := mo
	switch s.counter % 4 {
	case 0:
		for j := range mo {
			s.curOut[j] += mo[j] / 6
		}
		s.ets = append(s.ets, mo)
		s.curX = x
	case 1, 2:
		for j := range mo {
			s.curOut[j] += mo[j] / 3
		}
	case 3:
		comb = make([]float64, len(mo))
		for j := range mo {
			comb[j] = s.curOut[j] + mo[j]/6
		}
		s.curOut = nil
	}
	cur := s.curX
	if cur == nil {
		cur = x
	}
	return s.transfer(cur, start, prev, comb)
}

// stepPLMS is one call of pseudo linear multistep (Eq. 12): epsilon
// combined from up to four past outputs with the Adams-Bashforth weights
// (55, -59, 37, -9)/24; with skip_prk_steps the first step is a
// predictor-corrector pair at the same timestep.
func (s *pndmSched) stepPLMS(mo, x []float64, t int) []float64 {
	prev := t - s.ratio
	if s.counter != 1 {
		if len(s.ets) > 3 {
			s.ets = s.ets[len(s.ets)-3:]
		}
		s.ets = append(s.ets, mo)
	} else {
		prev = t
		t += s.ratio
	}
	e := s.ets
	k := len(e)
	comb := make([]float64, len(mo))
	sample := x
	switch {
	case k == 1 && s.counter == 0:
		copy(comb, mo)
		s.curX = x
	case k == 1 && s.counter == 1:
		for j := range comb {
			comb[j] = (mo[j] + e[0][j]) / 2
		}
		sample = s.curX
		s.curX = nil
	case k == 2:
		for j := range comb {
			comb[j] = (3*e[1][j] - e[0][j]) / 2
		}
	case k == 3:
		for j := range comb {
			comb[j] = (23*e[2][j] - 16*e[1][j] + 5*e[0][j]) / 12
		}
	default:
		for j := range comb {
			comb[j] = (55*e[k-1][j] - 59*e[k-2][j] + 37*e[k-3][j] - 9*e[k-4][j]) / 24
		}
	}
	return s.transfer(sample, t, prev, comb)
}
