package diffusion

import (
	"math"
	"slices"
)

// The Euler family works in the variance-exploding parameterisation of
// Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based
// Generative Models", EDM): x = x_0 + sigma eps with sigma_t =
// sqrt((1 - alphabar_t) / alphabar_t), which is the VP sample divided by
// sqrt(alphabar_t). The model is called on x / sqrt(sigma^2 + 1) (the VP
// sample) at a possibly fractional training timestep.

// sigmaRun is what the Euler family shares: the sigma of every model call
// (sigmas[i]) and the one after the last (0), float32 as diffusers holds
// them.
type sigmaRun struct {
	schedRun
	sigmas []float64 // per call, then the final sigma
	scale  []float64 // sigma used by ScaleModelInput per call (nil = sigmas)
}

// eulerSigmas are the timesteps and sigmas of EulerDiscrete, Euler
// ancestral, Heun, KDPM2 and LMS set_timesteps: the spaced (fractional)
// timesteps with the training sigmas interpolated linearly at them, or
// (use_karras_sigmas) n Karras sigmas between the first and last of those
// with their fractional timesteps, or (interpolation_type log_linear,
// Euler only) n+1 log-spaced sigmas; then a final 0.
func eulerSigmas(c *SchedulerConfig, tab *trainTables, n int, karras, logLinear bool) (ts, sig []float64) {
	ts = spacedFloats(c.TimestepSpacing, c.NumTrainTimesteps, n, c.StepsOffset)
	if logLinear {
		T := len(tab.sigmas)
		lin := torchLinspace32(f32(math.Log(tab.sigmas[T-1])), f32(math.Log(tab.sigmas[0])), n+1)
		for _, v := range lin {
			sig = append(sig, f32(math.Exp(v)))
		}
	} else {
		for _, t := range ts {
			sig = append(sig, npInterp(t, tab.sigmas))
		}
	}
	if karras {
		sig = karrasSigmas(sig[0], sig[len(sig)-1], n)
		ls := tab.logSigmas32()
		ts = ts[:0]
		for _, s := range sig {
			ts = append(ts, sigmaToT(s, ls))
		}
	}
	sig = append(sig, 0)
	for i, v := range sig {
		sig[i] = f32(v)
	}
	return ts, sig
}

func (r *sigmaRun) InitNoiseSigma() float64 {
	m := float32(slices.Max(r.sigmas))
	if r.cfg.TimestepSpacing == "linspace" || r.cfg.TimestepSpacing == "trailing" {
		return float64(m)
	}
	return float64(float32(math.Sqrt(float64(m*m + 1))))
}

// ScaleModelInput is x / sqrt(sigma_i^2 + 1).
func (r *sigmaRun) ScaleModelInput(x Batch, i int) Batch {
	s := r.scale
	if s == nil {
		s = r.sigmas
	}
	if i < 0 || i >= len(r.ts) {
		return cloneBatch(x)
	}
	return scaleBatch(x, 1/math.Sqrt(s[i]*s[i]+1))
}

// AddNoise is x0 + sigma(t) noise, with sigma(t) the run's sigma when t is
// one of its timesteps and the interpolated training sigma otherwise (0
// for t < 0).
func (r *sigmaRun) AddNoise(x0, noise Batch, t float64) Batch {
	var sg float64
	if k := slices.Index(r.ts, t); k >= 0 {
		sg = r.sigmas[k]
	} else if t >= 0 {
		sg = npInterp(t, r.tab.sigmas)
	}
	out := Batch{N: x0.N, C: x0.C, H: x0.H, W: x0.W, Data: make([]float32, len(x0.Data))}
	for j, v := range x0.Data {
		var z float64
		if j < len(noise.Data) {
			z = float64(noise.Data[j])
		}
		out.Data[j] = float32(float64(v) + sg*z)
	}
	return out
}

// x0Sigma is the denoised estimate at noise level sigma (the EDM
// preconditioning of a VP model):
//
//	epsilon:      x_0 = x - sigma eps
//	v_prediction: x_0 = -sigma/sqrt(sigma^2+1) v + x/(sigma^2+1)
//	sample:       x_0 = out
func x0Sigma(pred string, out, x []float64, sigma float64) []float64 {
	x0 := make([]float64, len(out))
	for j, o := range out {
		switch pred {
		case "sample":
			x0[j] = o
		case "v_prediction":
			x0[j] = o*(-sigma/math.Sqrt(sigma*sigma+1)) + x[j]/(sigma*sigma+1)
		default:
			x0[j] = x[j] - sigma*o
		}
	}
	return x0
}

// levelNext is the Level of call i of a one-call-per-step solver: the
// next call's timestep, or the data after the last call.
func (r *sigmaRun) levelNext(i int) (float64, bool) {
	if i < 0 || i >= len(r.ts) {
		return 0, false
	}
	if i+1 < len(r.ts) {
		return r.ts[i+1], true
	}
	return -1, true
}

// eulerSched ports diffusers v0.21.4's EulerDiscreteScheduler: Euler's
// method on the probability-flow ODE dx/dsigma = (x - x_0)/sigma (Karras et
// al. 2022, Algorithm 2 with S_churn = 0).
type eulerSched struct{ sigmaRun }

func newEuler(c *SchedulerConfig, tab *trainTables, n int) *eulerSched {
	s := &eulerSched{}
	s.cfg, s.tab = c, tab
	s.ts, s.sigmas = eulerSigmas(c, tab, n, c.UseKarrasSigmas, c.InterpolationType == "log_linear")
	return s
}

func (s *eulerSched) Level(i int) (float64, bool) { return s.levelNext(i) }

func (s *eulerSched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, _, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	xs := toF64(x.Data)
	sg := s.sigmas[i]
	x0 := x0Sigma(s.cfg.PredictionType, mo, xs, sg)
	dt := s.sigmas[i+1] - sg
	res := make([]float64, len(xs))
	for j := range res {
		res[j] = xs[j] + (xs[j]-x0[j])/sg*dt
	}
	s.next++
	return toBatch(x, res), nil
}

// eulerAncestralSched ports diffusers v0.21.4's
// EulerAncestralDiscreteScheduler (k-diffusion's sample_euler_ancestral):
// an Euler step down to sigma_down followed by fresh noise of std
// sigma_up, with sigma_up^2 = sigma_to^2 (sigma_from^2 - sigma_to^2) /
// sigma_from^2 and sigma_down^2 = sigma_to^2 - sigma_up^2 (Song et al.
// 2021b's ancestral sampling in the EDM parameterisation).
type eulerAncestralSched struct{ sigmaRun }

func newEulerAncestral(c *SchedulerConfig, tab *trainTables, n int) *eulerAncestralSched {
	s := &eulerAncestralSched{}
	s.cfg, s.tab = c, tab
	s.ts, s.sigmas = eulerSigmas(c, tab, n, false, false)
	return s
}

func (s *eulerAncestralSched) Level(i int) (float64, bool) { return s.levelNext(i) }

func (s *eulerAncestralSched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, _, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	xs := toF64(x.Data)
	from, to := s.sigmas[i], s.sigmas[i+1]
	x0 := x0Sigma(s.cfg.PredictionType, mo, xs, from)
	up := math.Sqrt(to * to * (from*from - to*to) / (from * from))
	down := math.Sqrt(to*to - up*up)
	dt := down - from
	res := make([]float64, len(xs))
	for j := range res {
		res[j] = xs[j] + (xs[j]-x0[j])/from*dt
	}
	if up > 0 {
		z, err := drawNoise(x, draw)
		if err != nil {
			return Batch{}, err
		}
		for j := range res {
			res[j] += z[j] * up
		}
	}
	s.next++
	return toBatch(x, res), nil
}

// heunSched ports diffusers v0.21.4's HeunDiscreteScheduler: Heun's
// second-order method on the probability-flow ODE (Karras et al. 2022,
// Algorithm 1 with S_churn = 0). Every step but the last calls the model
// twice (an Euler predictor to the next sigma, then the trapezoidal
// corrector); the last is an Euler step to sigma = 0.
type heunSched struct {
	sigmaRun
	dt     float64
	prevD  []float64
	sample []float64
}

func newHeun(c *SchedulerConfig, tab *trainTables, n int) *heunSched {
	s := &heunSched{}
	s.cfg, s.tab = c, tab
	ts, sig := eulerSigmas(c, tab, n, c.UseKarrasSigmas, false)
	// sigmas: s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0; timesteps t0, t1, t1, ...
	s.sigmas = []float64{sig[0]}
	s.ts = []float64{ts[0]}
	for k := 1; k < len(sig)-1; k++ {
		s.sigmas = append(s.sigmas, sig[k], sig[k])
	}
	s.sigmas = append(s.sigmas, sig[len(sig)-1])
	for k := 1; k < len(ts); k++ {
		s.ts = append(s.ts, ts[k], ts[k])
	}
	return s
}

func (s *heunSched) Level(i int) (float64, bool) {
	if i < 0 || i >= len(s.ts) {
		return 0, false
	}
	if i%2 == 0 && i != len(s.ts)-1 {
		return 0, false // Euler predictor
	}
	return s.levelAt(i, s.ts[i])
}

func (s *heunSched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, _, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	c := s.cfg
	xs := toF64(x.Data)
	first := s.prevD == nil
	var sg, next float64
	if first {
		sg, next = s.sigmas[i], s.sigmas[i+1]
	} else {
		sg, next = s.sigmas[i-1], s.sigmas[i]
	}
	in := sg
	if !first {
		in = next
	}
	x0 := x0Sigma(c.PredictionType, mo, xs, in)
	if *c.ClipSample {
		r := *c.ClipSampleRange
		for j, v := range x0 {
			x0[j] = math.Max(-r, math.Min(r, v))
		}
	}
	res := make([]float64, len(xs))
	if first {
		d := make([]float64, len(xs))
		for j := range d {
			d[j] = (xs[j] - x0[j]) / sg
		}
		s.dt = next - sg
		for j := range res {
			res[j] = xs[j] + d[j]*s.dt
		}
		s.prevD, s.sample = d, xs
	} else {
		for j := range res {
			d := ((xs[j]-x0[j])/next + s.prevD[j]) / 2
			res[j] = s.sample[j] + d*s.dt
		}
		s.prevD, s.sample = nil, nil
	}
	s.next++
	return toBatch(x, res), nil
}

// kdpm2Sched ports diffusers v0.21.4's KDPM2DiscreteScheduler
// (k-diffusion's sample_dpm_2, Karras et al. 2022's DPM-Solver-2 variant):
// each step takes an Euler step to the geometric midpoint sigma_mid =
// sqrt(sigma_i sigma_{i+1}), calls the model there, and steps from sigma_i
// to sigma_{i+1} with that derivative; the last step is Euler to 0.
type kdpm2Sched struct {
	sigmaRun
	mid    []float64 // per call: sigma_mid of the step (second calls)
	sample []float64
}

func newKDPM2(c *SchedulerConfig, tab *trainTables, n int) *kdpm2Sched {
	s := &kdpm2Sched{}
	s.cfg, s.tab = c, tab
	ts, sig := eulerSigmas(c, tab, n, false, false) // sig: n+1 values, last 0
	// sigmas_interpol[k] = exp(lerp(log sig[k], log sig[k-1], 0.5)) in
	// float32; k = 0 is never used, k = n is 0.
	interp := make([]float64, n+1)
	for k := 1; k <= n; k++ {
		if sig[k] == 0 {
			continue
		}
		a, b := float32(math.Log(sig[k])), float32(math.Log(sig[k-1]))
		interp[k] = f32(math.Exp(float64(b - (b-a)*0.5)))
	}
	ls := tab.logSigmas32()
	// calls: t0, (tmid_1, t1), (tmid_2, t2), ..., (tmid_{n-1}, t_{n-1})
	s.ts = []float64{ts[0]}
	s.sigmas = []float64{sig[0]}
	s.scale = []float64{sig[0]}
	s.mid = []float64{interp[1]}
	for k := 1; k < n; k++ {
		s.ts = append(s.ts, f32(sigmaToT(interp[k], ls)), ts[k])
		s.sigmas = append(s.sigmas, sig[k-1], sig[k])
		s.scale = append(s.scale, interp[k], sig[k])
		s.mid = append(s.mid, interp[k], interp[k+1])
	}
	s.sigmas = append(s.sigmas, 0)
	return s
}

func (s *kdpm2Sched) Level(i int) (float64, bool) {
	if i < 0 || i >= len(s.ts) {
		return 0, false
	}
	if i%2 == 0 && i != len(s.ts)-1 {
		return 0, false // step to the midpoint
	}
	return s.levelNext(i)
}

func (s *kdpm2Sched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, _, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	xs := toF64(x.Data)
	res := make([]float64, len(xs))
	mid := s.mid[i]
	if i%2 == 0 { // first order: from sigma_i to the midpoint (or 0)
		sg := s.sigmas[i]
		x0 := x0Sigma(s.cfg.PredictionType, mo, xs, sg)
		for j := range res {
			res[j] = xs[j] + (xs[j]-x0[j])/sg*(mid-sg)
		}
		s.sample = xs
	} else { // from the saved sample at sigma_i to sigma_{i+1}
		sg, next := s.sigmas[i], s.sigmas[i+1]
		x0 := x0Sigma(s.cfg.PredictionType, mo, xs, mid)
		for j := range res {
			res[j] = s.sample[j] + (xs[j]-x0[j])/mid*(next-sg)
		}
		s.sample = nil
	}
	s.next++
	return toBatch(x, res), nil
}

// lmsSched ports diffusers v0.21.4's LMSDiscreteScheduler (k-diffusion's
// sample_lms): a linear multistep method on dx/dsigma with up to four past
// derivatives, each weighted by the integral over [sigma_i, sigma_{i+1}]
// of its Lagrange basis polynomial in sigma.
type lmsSched struct {
	sigmaRun
	derivs [][]float64 // oldest first, at most lmsOrder
}

const lmsOrder = 4 // diffusers' step(order=4)

func newLMS(c *SchedulerConfig, tab *trainTables, n int) *lmsSched {
	s := &lmsSched{}
	s.cfg, s.tab = c, tab
	s.ts, s.sigmas = eulerSigmas(c, tab, n, c.UseKarrasSigmas, false)
	return s
}

func (s *lmsSched) Level(i int) (float64, bool) { return s.levelNext(i) }

// lmsCoef is the integral from sigma_i to sigma_{i+1} of the Lagrange
// basis polynomial of sigma_{i-cur} over sigma_i, ..., sigma_{i-order+1}
// (exact: 3-point Gauss-Legendre integrates degree <= 5).
func (s *lmsSched) lmsCoef(order, i, cur int) float64 {
	sg := s.sigmas
	f := func(tau float64) float64 {
		p := 1.0
		for k := range order {
			if k == cur {
				continue
			}
			p *= (tau - sg[i-k]) / (sg[i-cur] - sg[i-k])
		}
		return p
	}
	a, b := sg[i], sg[i+1]
	mid, half := (a+b)/2, (b-a)/2
	q := math.Sqrt(3.0 / 5.0)
	return half * (5.0/9.0*f(mid-half*q) + 8.0/9.0*f(mid) + 5.0/9.0*f(mid+half*q))
}

func (s *lmsSched) Step(out, x Batch, i int, draw func(Batch)) (Batch, error) {
	mo, _, err := s.begin(out, x, i)
	if err != nil {
		return Batch{}, err
	}
	xs := toF64(x.Data)
	sg := s.sigmas[i]
	x0 := x0Sigma(s.cfg.PredictionType, mo, xs, sg)
	d := make([]float64, len(xs))
	for j := range d {
		d[j] = (xs[j] - x0[j]) / sg
	}
	s.derivs = append(s.derivs, d)
	if len(s.derivs) > lmsOrder {
		s.derivs = s.derivs[1:]
	}
	order := min(i+1, lmsOrder)
	res := slices.Clone(xs)
	for cur := range order {
		c := s.lmsCoef(order, i, cur)
		dv := s.derivs[len(s.derivs)-1-cur]
		for j := range res {
			res[j] += c * dv[j]
		}
	}
	s.next++
	return toBatch(x, res), nil
}
