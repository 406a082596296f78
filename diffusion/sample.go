package diffusion

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// Progress reports one finished model call of a sampler.
type Progress struct {
	Step  int // 1-based count of model calls done
	Total int // model calls the whole run makes
	// Timestep is the training timestep the model was just called with
	// (0-indexed; fractional for the Euler-family solvers).
	Timestep float64
}

// Of maps the calls done onto a count of n steps (0..n, n when the run is
// done): samplers that call the model more than once per step (Heun,
// dpm2, PNDM's warm-up) report calls, and a caller that counts the steps
// it asked for reports this.
func (p Progress) Of(n int) int { return p.Step * n / max(p.Total, 1) }

// Options configures one sampling run. The zero value (plus a shape)
// samples with DDPM over all T steps, seed 0, no guidance.
//
// Which solver runs: Scheduler when set (an explicit diffusers scheduler
// config, e.g. a pipeline folder's scheduler_config.json); else Sampler.
// ddpm and ddim (without Karras) run this package's native samplers:
// improved-diffusion's respacing (Spacing, section strings included),
// learned variances, RePaint inpainting, and DDIM's epsilon re-derived
// from the clipped x_0 (ModelEps). Every other sampler runs the diffusers
// v0.21.4 scheduler SchedulerConfigFor names, with the training schedule,
// prediction, variance and clipping of the Diffusion (Config.SchedulerConfig),
// through the generic loop of a diffusers pipeline:
//
//	x = noise * InitNoiseSigma
//	for i, t := range Timesteps { x = Step(model(ScaleModelInput(x, i), t, y), x, i) }
type Options struct {
	Sampler Sampler `json:"sampler"`
	// Karras switches Karras et al. 2022's noise levels on
	// (use_karras_sigmas) for the solvers that have them: dpm++2m,
	// dpm++3m, dpm++2m-sde, dpm++2s, unipc, deis, euler, heun, lms (and an
	// explicit Scheduler of those classes). It is an error with the others.
	Karras bool `json:"karras,omitempty"`
	// Scheduler, if non-nil, is the diffusers scheduler config to sample
	// with (every key honoured, as NewScheduler reads it); it wins over
	// Sampler. Karras, Spacing (leading, linspace, trailing), Eta (for
	// DDIMScheduler) and Clip still apply on top of it. The config is not
	// modified.
	Scheduler *SchedulerConfig `json:"-"`
	// Steps is the number of denoising steps: 0 means all T; fewer respaces
	// the process (Nichol & Dhariwal 2021, Sec. 4) with Spacing. For the
	// diffusers solvers it is num_inference_steps of set_timesteps (Heun
	// and dpm2 call the model about twice per step).
	Steps int `json:"steps,omitempty"`
	// Spacing picks the respaced timesteps: "leading" (default, diffusers'
	// default), "linspace", "trailing", or an improved-diffusion section
	// string such as "ddim50" or "10,15,20" (then Steps is ignored). Each
	// step goes to the previous kept timestep, as improved-diffusion's
	// respacing does; diffusers' DDPM and DDIM schedulers step to t - T/n
	// instead, which is the same for leading spacing but may be off by one
	// from the kept timestep for linspace and trailing. For the diffusers
	// solvers a non-empty Spacing sets timestep_spacing (leading, linspace
	// or trailing only); empty keeps the class's own default.
	Spacing string `json:"spacing,omitempty"`
	// Eta is DDIM's stochasticity in [0, 1] (Song et al. 2021, Eq. 16):
	// 0 is deterministic, 1 has DDPM's posterior variance. For ddim and a
	// DDIMScheduler config only.
	Eta float64 `json:"eta,omitempty"`
	// ModelEps makes the native DDIM keep the model's epsilon after the x_0
	// estimate is clipped or thresholded, as diffusers' DDIMScheduler.step
	// does by default (use_clipped_model_output=False). By default epsilon is
	// re-derived from the clipped x_0, as improved-diffusion's ddim_sample
	// and GLIDE do: with the model's epsilon the update mixes a clipped
	// x_0 with a direction that still points at the unclipped one, which
	// saturates images whenever clipping bites (classifier-free guidance
	// at scales above about 1.5 on the default model). A DDIMScheduler
	// config says this with its own ClippedModelOutput instead.
	ModelEps bool `json:"model_eps,omitempty"`
	// Seed seeds the one random source of the run (PCG): the same seed,
	// model and options give bit-identical output.
	Seed uint64 `json:"seed"`
	// Seeds, when set (one per image), gives image i a random stream of its
	// own seeded by Seeds[i] (instead of Seed's one stream for the batch):
	// its noise then does not depend on the batch it is drawn in, so image
	// i equals the image of a run with N = 1 and Seed = Seeds[i] (what ddpm
	// serve draws for a request's image i). Classifier-free guidance,
	// img2img and inpainting are unchanged.
	Seeds []uint64 `json:"seeds,omitempty"`

	// N, C, H, W is the output shape (N, C, H, W); taken from Image when
	// set, else from Noise when all four are 0.
	N, C, H, W int `json:"-"`

	// Noise, if non-nil, is the standard-normal starting noise (N, C, H,
	// W), e.g. to reproduce another implementation's run: the diffusers
	// solvers start from Noise * InitNoiseSigma (as diffusers pipelines
	// scale their latents), the native samplers from x_T = Noise; for
	// img2img it is the noise the image is noised with. Without it the
	// noise is drawn from the run's seeded source. Not modified.
	Noise *Batch `json:"-"`

	// Labels are class labels, one per image, or nil for an unconditional
	// model; -1 asks for the null class.
	Labels []int `json:"labels,omitempty"`
	// Guidance is the classifier-free guidance scale w (Ho & Salimans
	// 2022): out = out(null) + w (out(y) - out(null)) on the mean channels,
	// with both evaluated in one batched Predict, before the solver's
	// update (so it works with every sampler). 0 (or 1) is plain
	// conditional sampling. Requires Labels.
	Guidance float64 `json:"guidance,omitempty"`
	// Clip overrides Config.ClipDenoised when non-nil; with
	// Config.Thresholding it switches thresholding, which takes the
	// clamp's place. For the diffusers solvers it sets clip_sample (and
	// false also switches thresholding off).
	Clip *bool `json:"clip,omitempty"`
	// Classifier, if non-nil, adds classifier guidance (Dhariwal & Nichol
	// 2021; see ClassifierGuidance): the native ddpm sampler shifts each
	// step's mean by its variance times the scaled gradient, ddim and the
	// diffusers solvers shift the prediction's epsilon. It combines with
	// Guidance (applied to the classifier-free combination).
	Classifier *ClassifierGuidance `json:"-"`

	// Image is the input of img2img (without Mask) or the known image of
	// inpainting (with Mask), (N, C, H, W) in [-1, 1].
	Image *Batch `json:"-"`
	// Strength is SDEdit's noise level in [0, 1] (Meng et al. 2022): the
	// image is noised to the step round(Strength * steps) and denoised from
	// there. 0 returns the image unchanged; 1 starts from (nearly) pure
	// noise. The diffusers solvers follow diffusers' img2img pipelines:
	// the run keeps the last int(Strength * steps) steps of Timesteps
	// (those calls, for Heun and dpm2), starting from AddNoise(Image,
	// noise, first kept timestep); a singlestep DPM-Solver starts at the
	// start of the block holding that call, and PNDM needs skip_prk_steps.
	Strength float64 `json:"strength,omitempty"`
	// Mask selects the known pixels for inpainting: 1 keeps Image, 0
	// generates; shape (N, 1, H, W) (broadcast over channels) or (N, C, H,
	// W). The native ddpm sampler runs RePaint (Lugmayr et al. 2022); the
	// native ddim and the diffusers solvers replace the known region after
	// every model call that ends at a known noise level t (Scheduler.Level;
	// not a Heun or dpm2 predictor, nor inside a singlestep block) by the
	// image noised to t with fresh noise (q(x_t | x_0), or x_0 + sigma_t
	// noise for the Euler family), and by the image itself after the last
	// call: x = m * known + (1 - m) * x.
	Mask *Batch `json:"-"`
	// JumpLength and JumpNSample are RePaint's resampling: every
	// JumpLength steps the sample is pushed back JumpLength steps and
	// re-denoised, JumpNSample times in all (1 = no resampling). 0 means 1.
	// Native ddpm only.
	JumpLength  int `json:"jump_length,omitempty"`
	JumpNSample int `json:"jump_n_sample,omitempty"`

	// Progress, if non-nil, is called after every model call.
	Progress func(Progress) `json:"-"`
}

// maxValues bounds the products of Options.N, C, H and W to keep untrusted
// requests from allocating without bound (2^28 values, 1 GiB of float32).
const maxValues = 1 << 28

// usesNative reports whether the options run a native sampler (ddpm or
// ddim without an explicit scheduler or Karras sigmas).
func (o *Options) usesNative() bool {
	return o.Scheduler == nil && o.Sampler.native() && !o.Karras
}

// Validate reports the first option outside its allowed range, naming the
// field. Checks that need the model's T or the solver (steps, Karras,
// the scheduler config's keys) happen in Sample.
func (o *Options) Validate() error {
	if !o.Sampler.valid() {
		return fmt.Errorf("diffusion: sampler %d: allowed are %s", int(o.Sampler), samplerList())
	}
	if o.Steps < 0 {
		return fmt.Errorf("diffusion: steps %d: must be >= 1, or 0 for all timesteps", o.Steps)
	}
	if !(o.Eta >= 0 && o.Eta <= 1) {
		return fmt.Errorf("diffusion: eta %v: must be in [0, 1]", o.Eta)
	}
	if o.Eta != 0 {
		switch {
		case o.Scheduler != nil && o.Scheduler.ClassName != ClassDDIM:
			return fmt.Errorf("diffusion: eta %v is for DDIM only (the scheduler is %s)", o.Eta, o.Scheduler.ClassName)
		case o.Scheduler == nil && o.Sampler != SamplerDDIM:
			return fmt.Errorf("diffusion: eta %v is for the ddim sampler only (sampler is %s)", o.Eta, o.Sampler)
		}
	}
	n, c, h, w := o.N, o.C, o.H, o.W
	if o.Image != nil {
		if err := o.Image.Check(); err != nil {
			return fmt.Errorf("diffusion: image: %w", err)
		}
		n, c, h, w = o.Image.N, o.Image.C, o.Image.H, o.Image.W
		if (o.N != 0 && o.N != n) || (o.C != 0 && o.C != c) || (o.H != 0 && o.H != h) || (o.W != 0 && o.W != w) {
			return fmt.Errorf("diffusion: shape (%d,%d,%d,%d) differs from the image's (%d,%d,%d,%d): leave N, C, H, W zero or equal", o.N, o.C, o.H, o.W, n, c, h, w)
		}
		if i, v, ok := firstNonFinite(o.Image.Data); ok {
			return fmt.Errorf("diffusion: image value %d is %v: must be finite (in [-1, 1])", i, v)
		}
	} else if z := o.Noise; z != nil && o.N == 0 && o.C == 0 && o.H == 0 && o.W == 0 {
		n, c, h, w = z.N, z.C, z.H, z.W
	}
	if n < 1 || c < 1 || h < 1 || w < 1 {
		return fmt.Errorf("diffusion: shape (N=%d, C=%d, H=%d, W=%d): every size must be >= 1", n, c, h, w)
	}
	if n > maxValues || c > maxValues || h > maxValues || w > maxValues || n*c > maxValues || n*c*h > maxValues || n*c*h*w > maxValues {
		return fmt.Errorf("diffusion: shape (N=%d, C=%d, H=%d, W=%d): at most %d values allowed", n, c, h, w, maxValues)
	}
	if z := o.Noise; z != nil {
		if err := z.Check(); err != nil {
			return fmt.Errorf("diffusion: noise: %w", err)
		}
		if z.N != n || z.C != c || z.H != h || z.W != w {
			return fmt.Errorf("diffusion: noise shape (%d,%d,%d,%d): must be the sample's (%d,%d,%d,%d)", z.N, z.C, z.H, z.W, n, c, h, w)
		}
		if i, v, ok := firstNonFinite(z.Data); ok {
			return fmt.Errorf("diffusion: noise value %d is %v: must be finite (standard normal)", i, v)
		}
	}
	if o.Labels != nil && len(o.Labels) != n {
		return fmt.Errorf("diffusion: labels: %d given for %d images: need one per image or none", len(o.Labels), n)
	}
	for i, y := range o.Labels {
		if y < -1 {
			return fmt.Errorf("diffusion: labels[%d] = %d: must be >= 0, or -1 for the null class", i, y)
		}
	}
	if math.IsNaN(o.Guidance) || math.IsInf(o.Guidance, 0) || o.Guidance < 0 {
		return fmt.Errorf("diffusion: guidance %v: must be finite and >= 0 (0 = off)", o.Guidance)
	}
	if o.Guidance != 0 && o.Labels == nil {
		return fmt.Errorf("diffusion: guidance %v needs labels (a class-conditional model)", o.Guidance)
	}
	if o.Classifier != nil {
		if err := o.Classifier.validate(n, o.Labels); err != nil {
			return err
		}
	}
	if !(o.Strength >= 0 && o.Strength <= 1) {
		return fmt.Errorf("diffusion: strength %v: must be in [0, 1]", o.Strength)
	}
	if o.Strength != 0 && (o.Image == nil || o.Mask != nil) {
		return fmt.Errorf("diffusion: strength %v is for img2img: it needs an image and no mask", o.Strength)
	}
	if o.JumpLength < 0 || o.JumpNSample < 0 {
		return fmt.Errorf("diffusion: jump_length %d, jump_n_sample %d: must be >= 1 (or 0 for 1)", o.JumpLength, o.JumpNSample)
	}
	if o.Mask != nil {
		if o.Image == nil {
			return fmt.Errorf("diffusion: mask given without an image: inpainting needs the known image")
		}
		m := o.Mask
		if err := m.Check(); err != nil {
			return fmt.Errorf("diffusion: mask: %w", err)
		}
		if m.N != n || m.H != h || m.W != w || (m.C != 1 && m.C != c) {
			return fmt.Errorf("diffusion: mask shape (%d,%d,%d,%d): want (%d,1,%d,%d) or (%d,%d,%d,%d)", m.N, m.C, m.H, m.W, n, h, w, n, c, h, w)
		}
		for i, v := range m.Data {
			if !(v >= 0 && v <= 1) {
				return fmt.Errorf("diffusion: mask value %d is %v: must be in [0, 1] (1 = known)", i, v)
			}
		}
	}
	if o.JumpLength > 1 || o.JumpNSample > 1 {
		if o.Mask == nil {
			return fmt.Errorf("diffusion: jump_length/jump_n_sample are RePaint options: they need a mask")
		}
		if !o.usesNative() || o.Sampler != SamplerDDPM {
			return fmt.Errorf("diffusion: jump_length/jump_n_sample are RePaint options: they need the native ddpm sampler (no scheduler config, no karras)")
		}
	}
	return nil
}

// firstNonFinite returns the index and value of the first NaN or Inf in d.
func firstNonFinite(d []float32) (int, float32, bool) {
	for i, v := range d {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i, v, true
		}
	}
	return 0, 0, false
}

// Sample runs the reverse process with the model and returns the final
// sample x_0 (N, C, H, W) exactly as the loop leaves it: nothing is
// clamped or quantised here (the x_0 estimates inside a step are clipped
// when the config says so; images are clamped to [-1, 1] only when
// written, by package img). Samplers (see Options): DDPM ancestral
// sampling (Ho et al. 2020, Algorithm 2) or DDIM (Song et al. 2021,
// Eq. 12) over all T steps or a respaced subsequence, or any diffusers
// solver (NewScheduler) driven as a diffusers pipeline drives it; each
// with optional classifier-free guidance, img2img (SDEdit) or inpainting
// (RePaint for ddpm). The context is checked before every model call.
func (d *Diffusion) Sample(ctx context.Context, m Model, o Options) (Batch, error) {
	if m == nil {
		return Batch{}, fmt.Errorf("diffusion: sample: model is nil")
	}
	if err := o.Validate(); err != nil {
		return Batch{}, err
	}
	switch {
	case o.Image != nil:
		o.N, o.C, o.H, o.W = o.Image.N, o.Image.C, o.Image.H, o.Image.W
	case o.Noise != nil:
		o.N, o.C, o.H, o.W = o.Noise.N, o.Noise.C, o.Noise.H, o.Noise.W
	}
	rng := newSampleRNG(o.Seed)
	var rngs []*rand.Rand
	if o.Seeds != nil {
		if len(o.Seeds) != o.N {
			return Batch{}, fmt.Errorf("diffusion: seeds: %d given for %d images: need one per image or none", len(o.Seeds), o.N)
		}
		for _, sd := range o.Seeds {
			rngs = append(rngs, newSampleRNG(sd))
		}
	}
	if !o.usesNative() {
		sc, err := d.solverConfig(&o)
		if err != nil {
			return Batch{}, err
		}
		r := &run{m: m, o: &o, rng: rng, rngs: rngs, abar: d.s.AlphasCumprod}
		return r.sampleSolver(ctx, sc)
	}
	steps := o.Steps
	if steps == 0 {
		steps = d.T()
	}
	if o.Steps > d.T() {
		return Batch{}, fmt.Errorf("diffusion: steps %d: must be in 1..%d (the model's timesteps)", o.Steps, d.T())
	}
	sp, err := d.RespaceSteps(steps, o.Spacing)
	if err != nil {
		return Batch{}, err
	}
	clip := d.cfg.ClipDenoised
	if o.Clip != nil {
		clip = *o.Clip
	}
	r := &run{d: sp, m: m, o: &o, clip: clip, rng: rng, rngs: rngs}
	if o.Mask != nil && o.Sampler == SamplerDDPM {
		return r.repaint(ctx)
	}
	n := sp.T()
	start := n - 1
	var x Batch
	if o.Image != nil && o.Mask == nil {
		k := int(math.Round(o.Strength * float64(n)))
		if k == 0 {
			return cloneBatch(*o.Image), nil
		}
		start = k - 1
		x = r.qSample(*o.Image, start, r.startNoise())
	} else {
		x = r.startNoise()
	}
	r.total = start + 1
	for i := start; i >= 0; i-- {
		out, err := r.predict(ctx, x, i)
		if err != nil {
			return Batch{}, err
		}
		sg, err := r.classifierGrad(ctx, x, float64(sp.s.Timesteps[i]))
		if err != nil {
			return Batch{}, err
		}
		if o.Sampler == SamplerDDIM {
			shiftScore(out, sg, sp.s.AlphasCumprod[i], sp.cfg.Prediction)
			x, _, err = sp.ddimStep(out, x, i, o.Eta, r.noiseFor(x, i > 0 && o.Eta > 0), clip, !o.ModelEps)
		} else {
			x, _, err = sp.ddpmStep(out, x, i, r.noiseFor(x, i > 0), clip, sg)
		}
		if err != nil {
			return Batch{}, err
		}
		if o.Mask != nil { // native DDIM: replace the known region at index i-1
			known := *o.Image
			if i > 0 {
				known = r.qSample(known, i-1, r.noiseFor(x, true))
			}
			r.blendKnown(x, known)
		}
	}
	return x, nil
}

// newSampleRNG is the one random source of a sampling run (PCG).
func newSampleRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

// solverConfig is the diffusers scheduler config the options ask for (not
// the native path): Scheduler, or SchedulerConfigFor(Sampler, Karras) on
// this process's own config, with Karras, Spacing, Eta and Clip applied.
func (d *Diffusion) solverConfig(o *Options) (SchedulerConfig, error) {
	var sc SchedulerConfig
	if o.Scheduler != nil {
		sc = *o.Scheduler
		sc.TrainedBetas = slices.Clone(sc.TrainedBetas)
		sc.DisableCorrector = slices.Clone(sc.DisableCorrector)
		if o.Karras {
			if !slices.Contains(karrasClasses, sc.ClassName) {
				return SchedulerConfig{}, fmt.Errorf("diffusion: karras: scheduler %s has no Karras sigmas: allowed with %s", sc.ClassName, strings.Join(karrasClasses, ", "))
			}
			sc.UseKarrasSigmas = true
		}
	} else {
		base, err := d.cfg.SchedulerConfig()
		if err != nil {
			return SchedulerConfig{}, fmt.Errorf("diffusion: sampler %s: %w", o.Sampler, err)
		}
		if sc, err = SchedulerConfigFor(o.Sampler.String(), o.Karras, base); err != nil {
			return SchedulerConfig{}, err
		}
		if base.BetaSchedule == "squaredcos_cap_v2" && !sc.UseKarrasSigmas {
			// The cosine schedule's last beta is capped at 0.999, which puts
			// alphabar(T-1) near 2e-9 and the noise level sigma there near
			// 2e4: solvers whose spacing starts at T-1 (the linspace default
			// of the Euler and DPM families) leave a residue of that size
			// after their first step. Leading spacing starts at T - T/n
			// (sigma about 32 for n = 50), as the native samplers do.
			sc.TimestepSpacing = "leading"
			if sc.ClassName == ClassDPMSolverMultistep || sc.ClassName == ClassDPMSolverSinglestep {
				// DPMSolverSinglestep spaces over linspace whatever the
				// spacing: drop the capped end by lambda_min_clipped, the
				// value diffusers recommends for this schedule.
				sc.LambdaMinClipped = ptr(-5.1)
			}
		}
	}
	switch o.Spacing {
	case "":
	case "leading", "linspace", "trailing":
		sc.TimestepSpacing = o.Spacing
	default:
		return SchedulerConfig{}, fmt.Errorf("diffusion: spacing %q with the %s solver: allowed are leading, linspace, trailing (section strings are for the native ddpm and ddim)", o.Spacing, sc.ClassName)
	}
	if o.Eta != 0 {
		sc.Eta = o.Eta
	}
	if o.Clip != nil {
		sc.ClipSample = ptr(*o.Clip)
		if !*o.Clip {
			sc.Thresholding = false
		}
	}
	return sc, nil
}

// diffusersOrder is a solver's scheduler.order in diffusers: the model
// calls per step that its img2img pipelines skip per skipped step.
func diffusersOrder(s Scheduler) int {
	switch s.(type) {
	case *heunSched, *kdpm2Sched:
		return 2
	}
	return 1
}

// runState gives the sampling loop the shared state of every solver run.
func (r *schedRun) runState() *schedRun { return r }

// startAt makes a fresh solver run begin at call index k, as diffusers'
// img2img pipelines do by slicing timesteps (the solver's step index then
// starts at k with an empty history, so multistep solvers warm up with
// lower orders again), and returns the call index it begins at:
// singlestep DPM-Solver moves back to the start of the block holding
// call k (diffusers would start inside the block at a lowered order);
// LMS counts the missing past derivatives as zero, as diffusers' zip over
// its shorter history does; PNDM's PLMS starts its predictor-corrector
// pair on the second copy of its doubled timestep (diffusers, at k = 1,
// would pair it with the first); PNDM with the Runge-Kutta warm-up cannot
// start late (an error). Heun and dpm2 are given even k (their first,
// Euler calls), as diffusers' order 2 gives.
func startAt(s Scheduler, k int, x Batch) (int, error) {
	switch v := s.(type) {
	case *dpmSinglestep:
		for k > 0 && v.orders[k] != 1 {
			k--
		}
	case *lmsSched:
		for range min(k, lmsOrder-1) {
			v.derivs = append(v.derivs, make([]float64, x.Len()))
		}
	case *pndmSched:
		if k > 0 && v.nPRK > 0 {
			return 0, fmt.Errorf("diffusion: img2img with %s needs skip_prk_steps true (the Runge-Kutta warm-up cannot start at step %d)", ClassPNDM, k)
		}
		if k == 1 && len(v.ts) > 2 {
			k = 2
		}
	}
	st, ok := s.(interface{ runState() *schedRun })
	if !ok {
		return 0, fmt.Errorf("diffusion: img2img: solver %T cannot start late", s)
	}
	st.runState().next = k
	return k, nil
}

// sampleSolver runs a diffusers solver as a diffusers pipeline does (see
// Options): noise * InitNoiseSigma, then per call the model on
// ScaleModelInput at the real-valued timestep, guidance, Step with the
// run's seeded noise; img2img and inpainting as Options.Strength and
// Options.Mask describe.
func (r *run) sampleSolver(ctx context.Context, sc SchedulerConfig) (Batch, error) {
	o := r.o
	steps := o.Steps
	if steps == 0 {
		rc, err := sc.resolve()
		if err != nil {
			return Batch{}, err
		}
		steps = rc.NumTrainTimesteps
	}
	s, err := NewScheduler(sc, steps)
	if err != nil {
		return Batch{}, err
	}
	ts := s.Timesteps()
	start := 0
	var x Batch
	if o.Image != nil && o.Mask == nil {
		// diffusers' img2img get_timesteps
		keep := min(int(float64(steps)*o.Strength), steps)
		start = max(steps-keep, 0) * diffusersOrder(s)
		if keep == 0 || start >= len(ts) {
			return cloneBatch(*o.Image), nil
		}
		if start, err = startAt(s, start, *o.Image); err != nil {
			return Batch{}, err
		}
		x = s.AddNoise(*o.Image, r.startNoise(), ts[start])
	} else {
		x = scaleBatch(r.startNoise(), s.InitNoiseSigma())
	}
	draw := func(z Batch) { r.fillNoise(z.Data) }
	r.total = len(ts) - start
	pred, err := ParsePrediction(sc.PredictionType)
	if sc.PredictionType == "" {
		pred, err = PredictEpsilon, nil
	}
	if err != nil {
		return Batch{}, err
	}
	for i := start; i < len(ts); i++ {
		xin := s.ScaleModelInput(x, i)
		out, err := r.predictAt(ctx, xin, ts[i])
		if err != nil {
			return Batch{}, err
		}
		sg, err := r.classifierGrad(ctx, xin, ts[i])
		if err != nil {
			return Batch{}, err
		}
		shiftScore(out, sg, AlphaBarAt(r.abar, ts[i]), pred)
		if x, err = s.Step(out, x, i, draw); err != nil {
			return Batch{}, err
		}
		if o.Mask != nil {
			if lvl, ok := s.Level(i); ok {
				known := *o.Image
				if lvl >= 0 {
					known = s.AddNoise(known, r.noiseFor(x, true), lvl)
				}
				r.blendKnown(x, known)
			}
		}
	}
	return x, nil
}

// run is the state of one Sample call.
type run struct {
	d     *Diffusion // respaced process (native samplers only)
	m     Model
	o     *Options
	clip  bool
	rng   *rand.Rand
	rngs  []*rand.Rand // per image (Options.Seeds), or nil
	abar  []float64    // the training alphabar table (diffusers solvers' classifier guidance)
	total int
	done  int
}

// fillNoise fills dst (one value per element of the batch) with N(0, 1)
// draws: from the run's stream, or image i's share from its own stream
// when Options.Seeds is set.
func (r *run) fillNoise(dst []float32) {
	if r.rngs != nil && len(dst)%len(r.rngs) == 0 {
		per := len(dst) / len(r.rngs)
		for i, g := range r.rngs {
			for j := i * per; j < (i+1)*per; j++ {
				dst[j] = float32(g.NormFloat64())
			}
		}
		return
	}
	for i := range dst {
		dst[i] = float32(r.rng.NormFloat64())
	}
}

// startNoise is the run's starting noise: a copy of Options.Noise, or
// fresh N(0, I) noise of the sample's shape.
func (r *run) startNoise() Batch {
	if r.o.Noise != nil {
		return cloneBatch(*r.o.Noise)
	}
	z := NewBatch(r.o.N, r.o.C, r.o.H, r.o.W)
	r.fillNoise(z.Data)
	return z
}

// noiseFor returns fresh N(0, I) noise shaped like x, or an empty batch
// when no noise is needed (so no random numbers are drawn).
func (r *run) noiseFor(x Batch, need bool) Batch {
	if !need {
		return Batch{}
	}
	z := NewBatch(x.N, x.C, x.H, x.W)
	r.fillNoise(z.Data)
	return z
}

// qSample noises img to index i of the respaced process with noise z.
func (r *run) qSample(img Batch, i int, z Batch) Batch {
	ts := make([]int, img.N)
	for k := range ts {
		ts[k] = i
	}
	x, _ := r.d.QSample(img, z, ts) // shapes and i are valid by construction
	return x
}

// blendKnown sets x = m * known + (1 - m) * x in place, m = Options.Mask
// broadcast over channels when it has one; where m is exactly 1 or 0 the
// value is copied bit for bit.
func (r *run) blendKnown(x, known Batch) {
	mask := *r.o.Mask
	D := x.C * x.H * x.W
	HW := x.H * x.W
	for i := range x.N {
		for j := range D {
			var m float32
			if mask.C == 1 {
				m = mask.Data[i*HW+j%HW]
			} else {
				m = mask.Data[i*D+j]
			}
			p := i*D + j
			switch m {
			case 1:
				x.Data[p] = known.Data[p]
			case 0:
			default:
				x.Data[p] = m*known.Data[p] + (1-m)*x.Data[p]
			}
		}
	}
}

// guidedInput returns the model input of x: x itself, or with guidance
// x twice with the labels then the null class (-1), and whether guidance
// is on.
func (r *run) guidedInput(x Batch) (Batch, []int, bool) {
	n := x.N
	if r.o.Guidance == 0 || r.o.Guidance == 1 {
		return x, r.o.Labels, false
	}
	xin := NewBatch(2*n, x.C, x.H, x.W)
	copy(xin.Data, x.Data)
	copy(xin.Data[len(x.Data):], x.Data)
	labels := make([]int, 2*n)
	copy(labels, r.o.Labels)
	for k := n; k < 2*n; k++ {
		labels[k] = -1
	}
	return xin, labels, true
}

// callModel checks the context and calls the model on xin at timestep t.
func (r *run) callModel(ctx context.Context, xin Batch, t float64, labels []int) (Batch, error) {
	if err := ctx.Err(); err != nil {
		return Batch{}, fmt.Errorf("diffusion: sampling cancelled at step %d of %d: %w", r.done, r.total, err)
	}
	ts := make([]float64, xin.N)
	for k := range ts {
		ts[k] = t
	}
	out, err := r.m.Predict(ctx, xin, ts, labels)
	if err != nil {
		return Batch{}, fmt.Errorf("diffusion: model at timestep %v: %w", t, err)
	}
	return out, nil
}

func (r *run) reportProgress(t float64) {
	r.done++
	if r.o.Progress != nil {
		r.o.Progress(Progress{Step: r.done, Total: r.total, Timestep: t})
	}
}

// predict calls the model at index i of the native process (with the
// original timestep), batching the conditional and null-class passes for
// guidance.
func (r *run) predict(ctx context.Context, x Batch, i int) (Batch, error) {
	tt := r.d.s.Timesteps[i]
	xin, labels, guide := r.guidedInput(x)
	out, err := r.callModel(ctx, xin, float64(tt), labels)
	if err != nil {
		return Batch{}, err
	}
	idx := make([]int, xin.N)
	for k := range idx {
		idx[k] = i
	}
	if err := r.d.checkOut(out, xin, idx); err != nil {
		return Batch{}, fmt.Errorf("sample: %w", err)
	}
	if guide {
		out = guideOutput(out, x.N, x.C*x.H*x.W, r.d.cfg.Variance.IsLearned(), r.o.Guidance)
	}
	r.reportProgress(float64(tt))
	return out, nil
}

// predictAt calls the model of a diffusers solver at the real-valued
// training timestep t on its (scaled) input x, with guidance as predict;
// variance channels (2C outputs) are kept for the solver.
func (r *run) predictAt(ctx context.Context, x Batch, t float64) (Batch, error) {
	xin, labels, guide := r.guidedInput(x)
	out, err := r.callModel(ctx, xin, t, labels)
	if err != nil {
		return Batch{}, err
	}
	if err := out.Check(); err != nil {
		return Batch{}, fmt.Errorf("diffusion: model output at timestep %v: %w", t, err)
	}
	if out.N != xin.N || out.H != x.H || out.W != x.W || (out.C != x.C && out.C != 2*x.C) {
		return Batch{}, fmt.Errorf("diffusion: model output shape (%d,%d,%d,%d) at timestep %v: want (%d,%d or %d,%d,%d)", out.N, out.C, out.H, out.W, t, xin.N, x.C, 2*x.C, x.H, x.W)
	}
	if guide {
		out = guideOutput(out, x.N, x.C*x.H*x.W, out.C == 2*x.C, r.o.Guidance)
	}
	r.reportProgress(t)
	return out, nil
}

// guideOutput combines a (2N, C', H, W) output of conditional then null
// passes: mean channels u + w (c - u); variance channels from the
// conditional pass.
func guideOutput(out Batch, n, D int, learned bool, w float64) Batch {
	per := len(out.Data) / out.N
	g := Batch{N: n, C: out.C, H: out.H, W: out.W, Data: make([]float32, n*per)}
	for i := range n {
		c := out.Data[i*per : (i+1)*per]
		u := out.Data[(n+i)*per : (n+i+1)*per]
		dst := g.Data[i*per : (i+1)*per]
		for j := range D {
			dst[j] = float32(float64(u[j]) + w*(float64(c[j])-float64(u[j])))
		}
		if learned {
			copy(dst[D:], c[D:])
		}
	}
	return g
}

// DDPMStep is one step of ancestral sampling (Ho et al. 2020, Algorithm 2,
// generalised by p_mean_variance): x_{t-1} = mu_theta(x_t, t) +
// exp(0.5 log Sigma_theta) z, with no noise at t = 0. t is a 0-indexed
// timestep of this process's schedule, in 0..T()-1; out is the model output on x; noise is N(0, I)
// shaped like x (ignored and may be empty at t = 0). It also returns the x_0
// estimate. The x_0 estimate is clipped per the config.
func (d *Diffusion) DDPMStep(out, x Batch, t int, noise Batch) (prev, predX0 Batch, err error) {
	return d.ddpmStep(out, x, t, noise, d.cfg.ClipDenoised, Batch{})
}

// ddpmStep is DDPMStep with the clipping given and, when sg is not empty,
// the mean shifted by Sigma_theta sg (classifier guidance, Algorithm 1).
func (d *Diffusion) ddpmStep(out, x Batch, t int, noise Batch, clip bool, sg Batch) (prev, predX0 Batch, err error) {
	if err = d.checkStep(out, x, t, noise, t > 0); err != nil {
		return
	}
	D := x.C * x.H * x.W
	prev, predX0 = NewBatch(x.N, x.C, x.H, x.W), NewBatch(x.N, x.C, x.H, x.W)
	b := newStepBuffers(D)
	for i := range x.N {
		om, ov := d.splitOut(out, i, D)
		d.pMeanVariance(om, ov, x.Data[i*D:(i+1)*D], t, clip, b)
		for j := range D {
			v := b.mean[j]
			if len(sg.Data) > 0 {
				v += math.Exp(b.logVar[j]) * float64(sg.Data[i*D+j])
			}
			if t > 0 {
				v += math.Exp(0.5*b.logVar[j]) * float64(noise.Data[i*D+j])
			}
			prev.Data[i*D+j] = float32(v)
			predX0.Data[i*D+j] = float32(b.x0[j])
		}
	}
	return
}

// DDIMStep is one step of DDIM (Song et al. 2021, Eq. 12) from the
// 0-indexed timestep t to t-1 of this process's schedule (alphabar_{-1} = 1,
// so the step from t = 0 lands on the data):
//
//	x_{t-1} = sqrt(alphabar_{t-1}) xhat_0 + sqrt(1 - alphabar_{t-1} - sigma_t^2) epshat + sigma_t z
//	sigma_t = eta sqrt((1 - alphabar_{t-1}) / (1 - alphabar_t)) sqrt(1 - alphabar_t / alphabar_{t-1})   (Eq. 16)
//
// xhat_0 is clipped per the config; epshat is the model's epsilon, or with
// clippedEps the one implied by the clipped xhat_0 (improved-diffusion).
// noise may be empty when sigma_t = 0. It also returns xhat_0.
func (d *Diffusion) DDIMStep(out, x Batch, t int, eta float64, noise Batch, clippedEps bool) (prev, predX0 Batch, err error) {
	return d.ddimStep(out, x, t, eta, noise, d.cfg.ClipDenoised, clippedEps)
}

func (d *Diffusion) ddimStep(out, x Batch, t int, eta float64, noise Batch, clip, clippedEps bool) (prev, predX0 Batch, err error) {
	if !(eta >= 0 && eta <= 1) {
		return Batch{}, Batch{}, fmt.Errorf("diffusion: ddim eta %v: must be in [0, 1]", eta)
	}
	s := d.s
	ab, abp := s.AlphasCumprod[min(max(t, 0), d.T()-1)], s.AlphasCumprodPrev[min(max(t, 0), d.T()-1)]
	sigma := eta * math.Sqrt((1-abp)/(1-ab)) * math.Sqrt(1-ab/abp)
	if err = d.checkStep(out, x, t, noise, sigma > 0); err != nil {
		return
	}
	D := x.C * x.H * x.W
	prev, predX0 = NewBatch(x.N, x.C, x.H, x.W), NewBatch(x.N, x.C, x.H, x.W)
	b := newStepBuffers(D)
	dir := math.Sqrt(math.Max(0, 1-abp-sigma*sigma))
	for i := range x.N {
		om, ov := d.splitOut(out, i, D)
		xs := x.Data[i*D : (i+1)*D]
		d.pMeanVariance(om, ov, xs, t, clip, b)
		for j := range D {
			eps := b.eps[j]
			if clippedEps {
				eps = (float64(xs[j])*s.SqrtRecipAlphasCumprod[t] - b.x0[j]) / s.SqrtRecipM1AlphasCumprod[t]
			}
			v := math.Sqrt(abp)*b.x0[j] + dir*eps
			if sigma > 0 {
				v += sigma * float64(noise.Data[i*D+j])
			}
			prev.Data[i*D+j] = float32(v)
			predX0.Data[i*D+j] = float32(b.x0[j])
		}
	}
	return
}

func (d *Diffusion) checkStep(out, x Batch, t int, noise Batch, needNoise bool) error {
	idx := make([]int, max(x.N, 0))
	for i := range idx {
		idx[i] = t
	}
	if err := d.checkOut(out, x, idx); err != nil {
		return fmt.Errorf("step: %w", err)
	}
	if needNoise && (!sameShape(noise, x) || len(noise.Data) != len(x.Data)) {
		return fmt.Errorf("diffusion: step noise shape (%d,%d,%d,%d): must equal x's (%d,%d,%d,%d)", noise.N, noise.C, noise.H, noise.W, x.N, x.C, x.H, x.W)
	}
	return nil
}
