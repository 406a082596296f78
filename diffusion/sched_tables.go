package diffusion

import (
	"math"
)

// This file computes the tables of the diffusers schedulers as diffusers
// v0.21.4 computes them: betas, alphas and alphas_cumprod as float32 torch
// tensors, the sigma tables through numpy, timesteps through numpy's
// linspace/arange and round-half-to-even. The values are kept in float64
// slices, but each holds exactly the float32 (or float64) number diffusers
// holds, so the solvers, whose own arithmetic is float64, start from the
// same tables as the reference. All timesteps are 0-indexed training
// timesteps, t = 0..T-1.

// f32 rounds x to float32 precision.
func f32(x float64) float64 { return float64(float32(x)) }

// torchLinspace32 is torch.linspace(start, end, n, dtype=torch.float32) on
// the CPU (PyTorch 1.13, RangeFactoriesKernel.cpp): step = (end-start)/(n-1)
// in float32; the first half counts up from start, the second half down
// from end, each as one fused multiply-add (start + step*idx). The AVX2
// kernel fills vectors of 8 from their first element as base + j*step
// (unfused), two vectors per iteration; the tail after the last full pair
// is scalar. This reproduces the fixture's betas bit for bit.
func torchLinspace32(start, end float64, n int) []float64 {
	out := make([]float64, n)
	if n == 1 {
		out[0] = f32(start)
		return out
	}
	s, e := float32(start), float32(end)
	step := (e - s) / float32(n-1)
	half := n / 2
	fma := func(a, b, c float32) float32 { return float32(math.FMA(float64(a), float64(b), float64(c))) }
	scalar := func(idx int) float32 {
		if idx < half {
			return fma(step, float32(idx), s)
		}
		return fma(-step, float32(n-idx-1), e)
	}
	const vec = 8
	i := 0
	for ; i <= n-2*vec; i += vec {
		base := scalar(i)
		for j := range vec {
			out[i+j] = float64(base + float32(float32(j)*step))
		}
	}
	for ; i < n; i++ {
		out[i] = float64(scalar(i))
	}
	return out
}

// betasForAlphaBar is diffusers' betas_for_alpha_bar: beta_i =
// min(1 - abar((i+1)/T) / abar(i/T), 0.999) in float64, then float32;
// "cosine" is Nichol & Dhariwal 2021, Eq. 17 (squaredcos_cap_v2), "exp" is
// abar(t) = exp(-12 t).
func betasForAlphaBar(T int, exp bool) []float64 {
	f := func(t float64) float64 {
		if exp {
			return math.Exp(t * -12.0)
		}
		c := math.Cos((t + 0.008) / 1.008 * math.Pi / 2)
		return c * c
	}
	b := make([]float64, T)
	for i := range b {
		t1, t2 := float64(i)/float64(T), float64(i+1)/float64(T)
		b[i] = f32(math.Min(1-f(t2)/f(t1), 0.999))
	}
	return b
}

// trainTables are the training-schedule tables of a diffusers scheduler,
// float32 values as diffusers holds them.
type trainTables struct {
	betas []float64 // beta_t
	ac    []float64 // alphabar_t = prod_{s<=t} (1 - beta_s)
	// VP solvers (DPM-Solver, DEIS, UniPC): alpha_t = sqrt(alphabar_t),
	// sigma_t = sqrt(1 - alphabar_t), lambda_t = log alpha_t - log sigma_t
	// (Lu et al. 2022, "DPM-Solver", Sec. 2: the half log-SNR).
	alphaT, sigmaT, lambdaT []float64
	// sigmas are the Karras et al. 2022 (EDM) noise levels of the training
	// timesteps, sqrt((1 - alphabar_t) / alphabar_t), ascending in t.
	sigmas []float64
}

// newTrainTables computes the tables of a resolved config (the schedule
// keys are validated by then).
func newTrainTables(c *SchedulerConfig) *trainTables {
	T := c.NumTrainTimesteps
	var b []float64
	switch {
	case len(c.TrainedBetas) > 0:
		b = make([]float64, len(c.TrainedBetas))
		for i, v := range c.TrainedBetas {
			b[i] = f32(v)
		}
	case c.BetaSchedule == "scaled_linear":
		b = torchLinspace32(math.Sqrt(*c.BetaStart), math.Sqrt(*c.BetaEnd), T)
		for i, v := range b {
			x := float32(v)
			b[i] = float64(x * x)
		}
	case c.BetaSchedule == "squaredcos_cap_v2":
		b = betasForAlphaBar(T, false)
	case c.BetaSchedule == "exp":
		b = betasForAlphaBar(T, true)
	case c.BetaSchedule == "sigmoid":
		z := torchLinspace32(-6, 6, T)
		b = make([]float64, T)
		lo, span := float32(*c.BetaStart), float32(*c.BetaEnd-*c.BetaStart)
		for i, v := range z {
			sig := float32(1 / (1 + math.Exp(-v)))
			b[i] = float64(float32(sig*span) + lo)
		}
	default: // linear
		b = torchLinspace32(*c.BetaStart, *c.BetaEnd, T)
	}
	if c.ClassName == ClassDDIM && c.RescaleBetasZeroSNR {
		b = rescaleZeroTerminalSNR(b)
	}
	t := &trainTables{betas: b, ac: cumprod32(b)}
	n := len(b)
	t.alphaT, t.sigmaT, t.lambdaT, t.sigmas = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i, a := range t.ac {
		a32 := float32(a)
		al := float32(math.Sqrt(float64(a32)))
		sg := float32(math.Sqrt(float64(1 - a32)))
		t.alphaT[i], t.sigmaT[i] = float64(al), float64(sg)
		t.lambdaT[i] = float64(float32(math.Log(float64(al))) - float32(math.Log(float64(sg))))
		t.sigmas[i] = f32(math.Sqrt(float64((1 - a32) / a32)))
	}
	return t
}

// cumprod32 is alphas = 1 - betas (float32) and torch.cumprod on the CPU,
// which accumulates in double and rounds each output to float32.
func cumprod32(betas []float64) []float64 {
	ac := make([]float64, len(betas))
	acc := 1.0
	for i, b := range betas {
		acc *= float64(1 - float32(b))
		ac[i] = f32(acc)
	}
	return ac
}

// rescaleZeroTerminalSNR is diffusers' rescale_zero_terminal_snr (Lin et
// al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
// Algorithm 1): shift and scale sqrt(alphabar) so that it ends at 0 and
// keeps its first value, then return the implied betas (float32).
func rescaleZeroTerminalSNR(betas []float64) []float64 {
	ac := cumprod32(betas)
	n := len(ac)
	s := make([]float32, n)
	for i, a := range ac {
		s[i] = float32(math.Sqrt(a))
	}
	s0, sT := s[0], s[n-1]
	for i := range s {
		s[i] -= sT
	}
	k := s0 / (s0 - sT)
	for i := range s {
		s[i] *= k
	}
	out := make([]float64, n)
	prev := float32(0)
	for i := range s {
		ab := s[i] * s[i]
		a := ab
		if i > 0 {
			a = ab / prev
		}
		prev = ab
		out[i] = float64(1 - a)
	}
	return out
}

// npLinspace is numpy.linspace(start, stop, n) in float64: start + i*step
// with the last value set to stop.
func npLinspace(start, stop float64, n int) []float64 {
	out := make([]float64, n)
	if n == 1 {
		out[0] = start
		return out
	}
	step := (stop - start) / float64(n-1)
	for i := range out {
		out[i] = float64(i)*step + start
	}
	out[n-1] = stop
	return out
}

// npArange is numpy.arange(start, stop, step) for floats: the length is
// ceil((stop-start)/step); numpy fills from the first two values.
func npArange(start, stop, step float64) []float64 {
	n := int(math.Ceil((stop - start) / step))
	if n <= 0 {
		return nil
	}
	out := make([]float64, n)
	out[0] = start
	if n > 1 {
		out[1] = start + step
		d := out[1] - start
		for i := 2; i < n; i++ {
			out[i] = start + float64(i)*d
		}
	}
	return out
}

// npInterp is numpy.interp(x, arange(len(fp)), fp): linear interpolation
// of fp at fractional index x, clamped to the ends.
func npInterp(x float64, fp []float64) float64 {
	n := len(fp)
	if !(x > 0) {
		return fp[0]
	}
	if x >= float64(n-1) {
		return fp[n-1]
	}
	j := int(math.Floor(x))
	if float64(j) == x {
		return fp[j]
	}
	slope := (fp[j+1] - fp[j]) / 1.0
	return slope*(x-float64(j)) + fp[j]
}

// reverse reverses s in place and returns it.
func reverse[T any](s []T) []T {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
	return s
}

// spacedInts are the integer timesteps of the DDPM, DDIM and PNDM
// schedulers' set_timesteps for n inference steps out of T, descending
// (diffusers' timestep_spacing; Lin et al. 2023, Table 2):
//
//	linspace: round(linspace(0, T-1, n))
//	leading:  arange(n) * (T // n) + steps_offset
//	trailing: round(arange(T, 0, -T/n)) - 1
func spacedInts(spacing string, T, n, offset int) []int {
	out := make([]int, 0, n)
	switch spacing {
	case "linspace":
		for _, v := range npLinspace(0, float64(T-1), n) {
			out = append(out, int(math.RoundToEven(v)))
		}
		reverse(out)
	case "trailing":
		for _, v := range npArange(float64(T), 0, -float64(T)/float64(n)) {
			out = append(out, int(math.RoundToEven(v))-1)
		}
	default: // leading
		r := T / n
		for i := n - 1; i >= 0; i-- {
			out = append(out, i*r+offset)
		}
	}
	return out
}

// spacedIntsPlusOne are the integer timesteps of DPMSolverMultistep, DEIS
// and UniPC (and, with linspace, DPMSolverSinglestep): n+1 points of which
// the last (0) is dropped, over the first last timesteps (last = T unless
// lambda_min_clipped cuts the schedule); trailing is as spacedInts but
// starts at last.
func spacedIntsPlusOne(spacing string, T, last, n, offset int) []int {
	out := make([]int, 0, n)
	switch spacing {
	case "linspace":
		v := npLinspace(0, float64(last-1), n+1)
		for i := n; i >= 1; i-- {
			out = append(out, int(math.RoundToEven(v[i])))
		}
	case "trailing":
		for _, v := range npArange(float64(last), 0, -float64(T)/float64(n)) {
			out = append(out, int(math.RoundToEven(v))-1)
		}
	default: // leading
		r := last / (n + 1)
		for i := n; i >= 1; i-- {
			out = append(out, i*r+offset)
		}
	}
	return out
}

// spacedFloats are the timesteps of the Euler family (Euler, Euler
// ancestral, Heun, KDPM2, LMS): as spacedInts but float32, and linspace
// is not rounded.
func spacedFloats(spacing string, T, n, offset int) []float64 {
	out := make([]float64, 0, n)
	switch spacing {
	case "linspace":
		for _, v := range npLinspace(0, float64(T-1), n) {
			out = append(out, f32(v))
		}
		reverse(out)
	case "trailing":
		for _, v := range npArange(float64(T), 0, -float64(T)/float64(n)) {
			out = append(out, float64(float32(math.RoundToEven(v))-1))
		}
	default: // leading
		r := T / n
		for i := n - 1; i >= 0; i-- {
			out = append(out, float64(float32(i*r)+float32(offset)))
		}
	}
	return out
}

// karrasSigmas is diffusers' _convert_to_karras (Karras et al. 2022,
// "Elucidating the Design Space...", Eq. 5 with rho = 7): n noise levels
// from in[0] to in[len-1], evenly spaced in sigma^(1/rho).
func karrasSigmas(first, last float64, n int) []float64 {
	const rho = 7.0
	ramp := npLinspace(0, 1, n)
	a, b := math.Pow(first, 1/rho), math.Pow(last, 1/rho)
	out := make([]float64, n)
	for i, r := range ramp {
		out[i] = math.Pow(a+r*(b-a), rho)
	}
	return out
}

// sigmaToT is diffusers' _sigma_to_t: the fractional training timestep
// whose log sigma interpolates log sigma linearly between the two
// neighbouring training timesteps (logSigmas ascending in t, float32
// values as numpy holds them).
func sigmaToT(sigma float64, logSigmas []float64) float64 {
	ls := math.Log(sigma)
	n := len(logSigmas)
	lo := 0
	for i, v := range logSigmas {
		if ls-v >= 0 {
			lo = i
		}
	}
	lo = min(lo, n-2)
	hi := lo + 1
	low, high := logSigmas[lo], logSigmas[hi]
	w := (low - ls) / f32(low-high)
	w = math.Max(0, math.Min(1, w))
	return (1-w)*float64(lo) + w*float64(hi)
}

// logSigmas32 is np.log of the float32 training sigmas (a float32 array).
func (t *trainTables) logSigmas32() []float64 {
	out := make([]float64, len(t.sigmas))
	for i, s := range t.sigmas {
		out[i] = f32(math.Log(s))
	}
	return out
}

// interpAC is alphabar at a possibly fractional training timestep t
// (linear interpolation; 1 for t < 0, as the data).
func (t *trainTables) interpAC(ts float64) float64 {
	if ts < 0 {
		return 1
	}
	return npInterp(ts, t.ac)
}
