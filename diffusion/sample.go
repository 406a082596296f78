package diffusion

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
)

// Progress reports one finished model call of a sampler.
type Progress struct {
	Step     int // 1-based count of model calls done
	Total    int // model calls the whole run makes
	Timestep int // training timestep the model was just called with
}

// Options configures one sampling run. The zero value (plus a shape)
// samples with DDPM over all T steps, seed 0, no guidance.
type Options struct {
	Sampler Sampler `json:"sampler"`
	// Steps is the number of denoising steps: 0 means all T; fewer respaces
	// the process (Nichol & Dhariwal 2021, Sec. 4) with Spacing.
	Steps int `json:"steps,omitempty"`
	// Spacing picks the respaced timesteps: "leading" (default, diffusers'
	// default), "linspace", "trailing", or an improved-diffusion section
	// string such as "ddim50" or "10,15,20" (then Steps is ignored). Each
	// step goes to the previous kept timestep, as improved-diffusion's
	// respacing does; diffusers' DDPM and DDIM schedulers step to t - T/n
	// instead, which is the same for leading spacing but may be off by one
	// from the kept timestep for linspace and trailing.
	Spacing string `json:"spacing,omitempty"`
	// Eta is DDIM's stochasticity in [0, 1] (Song et al. 2021, Eq. 16):
	// 0 is deterministic, 1 has DDPM's posterior variance.
	Eta float64 `json:"eta,omitempty"`
	// ModelEps makes DDIM keep the model's epsilon after the x_0 estimate
	// is clipped or thresholded, as diffusers' DDIMScheduler.step does by
	// default (use_clipped_model_output=False). By default epsilon is
	// re-derived from the clipped x_0, as improved-diffusion's ddim_sample
	// and GLIDE do: with the model's epsilon the update mixes a clipped
	// x_0 with a direction that still points at the unclipped one, which
	// saturates images whenever clipping bites (classifier-free guidance
	// at scales above about 1.5 on the default model).
	ModelEps bool `json:"model_eps,omitempty"`
	// Seed seeds the one random source of the run (PCG): the same seed,
	// model and options give bit-identical output.
	Seed uint64 `json:"seed"`

	N, C, H, W int `json:"-"` // output shape (N, C, H, W); taken from Image when set

	// Labels are class labels, one per image, or nil for an unconditional
	// model; -1 asks for the null class.
	Labels []int `json:"labels,omitempty"`
	// Guidance is the classifier-free guidance scale w (Ho & Salimans
	// 2022): out = out(null) + w (out(y) - out(null)) on the mean channels,
	// with both evaluated in one batched Predict. 0 (or 1) is plain
	// conditional sampling. Requires Labels.
	Guidance float64 `json:"guidance,omitempty"`
	// Clip overrides Config.ClipDenoised when non-nil; with
	// Config.Thresholding it switches thresholding, which takes the
	// clamp's place.
	Clip *bool `json:"clip,omitempty"`

	// Image is the input of img2img (without Mask) or the known image of
	// inpainting (with Mask), (N, C, H, W) in [-1, 1].
	Image *Batch `json:"-"`
	// Strength is SDEdit's noise level in [0, 1] (Meng et al. 2022): the
	// image is noised to the step round(Strength * steps) and denoised from
	// there. 0 returns the image unchanged; 1 starts from (nearly) pure noise.
	Strength float64 `json:"strength,omitempty"`
	// Mask selects the known pixels for inpainting (RePaint, Lugmayr et al.
	// 2022): 1 keeps Image, 0 generates; shape (N, 1, H, W) (broadcast over
	// channels) or (N, C, H, W). DDPM only.
	Mask *Batch `json:"-"`
	// JumpLength and JumpNSample are RePaint's resampling: every
	// JumpLength steps the sample is pushed back JumpLength steps and
	// re-denoised, JumpNSample times in all (1 = no resampling). 0 means 1.
	JumpLength  int `json:"jump_length,omitempty"`
	JumpNSample int `json:"jump_n_sample,omitempty"`

	// Progress, if non-nil, is called after every model call.
	Progress func(Progress) `json:"-"`
}

// maxValues bounds the products of Options.N, C, H and W to keep untrusted
// requests from allocating without bound (2^28 values, 1 GiB of float32).
const maxValues = 1 << 28

// Validate reports the first option outside its allowed range, naming the
// field. Checks that need the model's T happen in Sample.
func (o *Options) Validate() error {
	if o.Sampler != SamplerDDPM && o.Sampler != SamplerDDIM {
		return fmt.Errorf("diffusion: sampler %d: allowed are ddpm, ddim", int(o.Sampler))
	}
	if o.Steps < 0 {
		return fmt.Errorf("diffusion: steps %d: must be >= 1, or 0 for all timesteps", o.Steps)
	}
	if !(o.Eta >= 0 && o.Eta <= 1) {
		return fmt.Errorf("diffusion: eta %v: must be in [0, 1]", o.Eta)
	}
	if o.Eta != 0 && o.Sampler != SamplerDDIM {
		return fmt.Errorf("diffusion: eta %v is for the ddim sampler only (sampler is %s)", o.Eta, o.Sampler)
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
		for i, v := range o.Image.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("diffusion: image value %d is %v: must be finite (in [-1, 1])", i, v)
			}
		}
	}
	if n < 1 || c < 1 || h < 1 || w < 1 {
		return fmt.Errorf("diffusion: shape (N=%d, C=%d, H=%d, W=%d): every size must be >= 1", n, c, h, w)
	}
	if n > maxValues || c > maxValues || h > maxValues || w > maxValues || n*c > maxValues || n*c*h > maxValues || n*c*h*w > maxValues {
		return fmt.Errorf("diffusion: shape (N=%d, C=%d, H=%d, W=%d): at most %d values allowed", n, c, h, w, maxValues)
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
		if o.Sampler != SamplerDDPM {
			return fmt.Errorf("diffusion: mask (inpainting) needs sampler ddpm, have %s", o.Sampler)
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
	} else if o.JumpLength > 1 || o.JumpNSample > 1 {
		return fmt.Errorf("diffusion: jump_length/jump_n_sample are RePaint options: they need a mask")
	}
	return nil
}

// Sample runs the reverse process with the model and returns x_0
// (N, C, H, W), in [-1, 1] when clipping is on: DDPM ancestral sampling
// (Ho et al. 2020, Algorithm 2) or DDIM (Song et al. 2021, Eq. 12), over
// all T steps or a respaced subsequence, with optional classifier-free
// guidance, img2img (SDEdit) or inpainting (RePaint). The context is
// checked before every model call.
func (d *Diffusion) Sample(ctx context.Context, m Model, o Options) (Batch, error) {
	if m == nil {
		return Batch{}, fmt.Errorf("diffusion: sample: model is nil")
	}
	if err := o.Validate(); err != nil {
		return Batch{}, err
	}
	if o.Image != nil {
		o.N, o.C, o.H, o.W = o.Image.N, o.Image.C, o.Image.H, o.Image.W
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
	r := &run{d: sp, m: m, o: &o, clip: clip, rng: rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))}
	if o.Mask != nil {
		return r.repaint(ctx)
	}
	n := sp.T()
	start := n - 1
	var x Batch
	if o.Image != nil {
		k := int(math.Round(o.Strength * float64(n)))
		if k == 0 {
			return Batch{N: o.N, C: o.C, H: o.H, W: o.W, Data: append([]float32(nil), o.Image.Data...)}, nil
		}
		start = k - 1
		x = r.qSample(*o.Image, start)
	} else {
		x = NewBatch(o.N, o.C, o.H, o.W)
		r.fillNoise(x.Data)
	}
	r.total = start + 1
	for i := start; i >= 0; i-- {
		out, err := r.predict(ctx, x, i)
		if err != nil {
			return Batch{}, err
		}
		if o.Sampler == SamplerDDIM {
			x, _, err = sp.ddimStep(out, x, i, o.Eta, r.noiseFor(x, i > 0 && o.Eta > 0), clip, !o.ModelEps)
		} else {
			x, _, err = sp.ddpmStep(out, x, i, r.noiseFor(x, i > 0), clip)
		}
		if err != nil {
			return Batch{}, err
		}
	}
	return x, nil
}

// run is the state of one Sample call.
type run struct {
	d     *Diffusion // respaced process
	m     Model
	o     *Options
	clip  bool
	rng   *rand.Rand
	total int
	done  int
}

func (r *run) fillNoise(dst []float32) {
	for i := range dst {
		dst[i] = float32(r.rng.NormFloat64())
	}
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

// qSample noises img to index i of the respaced process with fresh noise.
func (r *run) qSample(img Batch, i int) Batch {
	z := r.noiseFor(img, true)
	ts := make([]int, img.N)
	for k := range ts {
		ts[k] = i
	}
	x, _ := r.d.QSample(img, z, ts) // shapes and i are valid by construction
	return x
}

// predict calls the model at index i (with the original timestep),
// batching the conditional and null-class passes for guidance.
func (r *run) predict(ctx context.Context, x Batch, i int) (Batch, error) {
	if err := ctx.Err(); err != nil {
		return Batch{}, fmt.Errorf("diffusion: sampling cancelled at step %d of %d: %w", r.done, r.total, err)
	}
	tt := r.d.s.Timesteps[i]
	n := x.N
	guide := r.o.Guidance != 0 && r.o.Guidance != 1
	xin, labels := x, r.o.Labels
	if guide {
		xin = NewBatch(2*n, x.C, x.H, x.W)
		copy(xin.Data, x.Data)
		copy(xin.Data[len(x.Data):], x.Data)
		labels = make([]int, 2*n)
		copy(labels, r.o.Labels)
		for k := n; k < 2*n; k++ {
			labels[k] = -1
		}
	}
	ts := make([]float64, xin.N)
	for k := range ts {
		ts[k] = float64(tt)
	}
	out, err := r.m.Predict(ctx, xin, ts, labels)
	if err != nil {
		return Batch{}, fmt.Errorf("diffusion: model at timestep %d: %w", tt, err)
	}
	idx := make([]int, xin.N)
	for k := range idx {
		idx[k] = i
	}
	if err := r.d.checkOut(out, xin, idx); err != nil {
		return Batch{}, fmt.Errorf("sample: %w", err)
	}
	if guide {
		out = guideOutput(out, n, x.C*x.H*x.W, r.d.cfg.Variance.IsLearned(), r.o.Guidance)
	}
	r.done++
	if r.o.Progress != nil {
		r.o.Progress(Progress{Step: r.done, Total: r.total, Timestep: tt})
	}
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
	return d.ddpmStep(out, x, t, noise, d.cfg.ClipDenoised)
}

func (d *Diffusion) ddpmStep(out, x Batch, t int, noise Batch, clip bool) (prev, predX0 Batch, err error) {
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
