package pipeline

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/schedule"
)

// The second stage of GLIDE's and guided-diffusion's cascades: a base
// model's 64x64 samples upsampled to 256x256 by a super-resolution model
// (glide-text2im's upsample.pt and upsample_inpaint.pt, guided-diffusion's
// 64_256_upsampler.pt), as glide-text2im's text2im notebook and
// guided-diffusion's super_res_sample.py run it.

// Defaults of Upsample.
const (
	// UpsampleSteps is the default number of ancestral steps: glide-text2im
	// samples its upsampler with timestep_respacing "fast27".
	UpsampleSteps = 27
	// GlideUpsampleTemp is glide-text2im's upsample_temp: the upsampler
	// starts from N(0, I) noise scaled by it.
	GlideUpsampleTemp = 0.997
)

// UpsampleOptions configure Upsample. The zero value samples a
// guided-diffusion upsampler without class labels in UpsampleSteps steps.
type UpsampleOptions struct {
	// Prompts are a GLIDE upsampler's text (the base stage's prompts), one
	// per image or one for all; required for GLIDE, an error otherwise.
	// The upsampler runs on the prompts alone, without classifier-free
	// guidance, as glide-text2im's notebooks run it.
	Prompts []string
	// Inpaint holds a GLIDE inpainting upsampler's (upsample_inpaint.pt)
	// known image and mask at the upsampler's size, (N or 1, 3, H, W)
	// and (N or 1, 1, H, W); its LowRes is ignored. nil gives the model
	// zeros (no known region). The result keeps the known region, as
	// glide-text2im's inpaint notebook does.
	Inpaint *TextInputs
	// Labels are the base stage's class labels, one per image: a
	// class-conditional upsampler (guided-diffusion's 64_256, class_cond
	// True) is conditioned on them, as super_res_sample.py passes the
	// base samples' labels; required there, ignored by an unconditional
	// upsampler.
	Labels []int
	// Steps is the number of ancestral (ddpm) steps, 1..T; 0 means
	// UpsampleSteps. 27 steps are glide-text2im's "fast27" timesteps,
	// other counts improved-diffusion's respacing of 0..T-1 into Steps
	// evenly spaced timesteps (see Upsample).
	Steps int
	// Temp scales the starting noise x_T = Temp z, z ~ N(0, I)
	// (glide-text2im's upsample_temp; the per-step noise is not scaled).
	// 0 means GlideUpsampleTemp for a GLIDE upsampler and 1 for
	// guided-diffusion's; it must be finite and >= 0.
	Temp float64
	// Seed seeds the run's random source when Seeds is nil.
	Seed uint64
	// Seeds, when set, gives image i its own random streams seeded by
	// Seeds[i] (its starting noise and its steps' noise), as
	// diffusion.Options.Seeds does.
	Seeds []uint64
	// Progress, if non-nil, is called after every model call.
	Progress func(diffusion.Progress)
}

// IsUpsampler reports whether the pipeline's model is a super-resolution
// model: guided-diffusion's SuperResModel or GLIDE's SuperResText2ImUNet
// and SuperResInpaintText2ImUnet.
func (p *Pipeline) IsUpsampler() bool {
	if p.OpenAI == nil {
		return false
	}
	switch p.OpenAI.Kind() {
	case adm.SuperRes, adm.SuperResText2Im, adm.SuperResInpaintText2Im:
		return true
	}
	return false
}

// LowResSize is the side of the low-resolution images an upsampler takes:
// its small_size, or for GLIDE's upsamplers, whose config has none, a
// quarter of its image size (glide-text2im's upsamplers take the 64x64
// base samples to 256x256). The model itself resizes any low-resolution
// image bilinearly to its output size; Upsample insists on this one.
func (p *Pipeline) LowResSize() (int, error) {
	if !p.IsUpsampler() {
		what := p.kindName()
		if p.IsText() {
			what = "GLIDE's " + string(p.OpenAI.Kind())
		}
		return 0, fmt.Errorf("pipeline: the model is %s, not a super-resolution model (guided-diffusion's 64_256_upsampler.pt, glide-text2im's upsample.pt)", what)
	}
	cfg := p.OpenAI.Config()
	if cfg.SmallSize > 0 {
		return cfg.SmallSize, nil
	}
	return cfg.ImageSize / 4, nil
}

// CheckUpsample checks, before the base stage runs, that up can upsample
// n images of size x size from it with o: up is a super-resolution model
// taking that size, a GLIDE upsampler has prompts (one or n), a
// class-conditional one has n labels in range. Upsample does the same
// checks.
func CheckUpsample(up *Pipeline, n, size int, o UpsampleOptions) error {
	want, err := up.LowResSize()
	if err != nil {
		return err
	}
	if size != want {
		return fmt.Errorf("pipeline: the upsampler takes %dx%d images to %dx%d, but the base stage makes %dx%d", want, want, up.Config.SampleSize, up.Config.SampleSize, size, size)
	}
	if n < 1 {
		return fmt.Errorf("pipeline: upsample %d images: want at least 1", n)
	}
	if up.IsText() {
		switch {
		case o.Prompts == nil:
			return fmt.Errorf("pipeline: the upsampler is GLIDE's %s: it needs the prompts of the images", up.OpenAI.Kind())
		case len(o.Prompts) != 1 && len(o.Prompts) != n:
			return fmt.Errorf("pipeline: upsample: %d prompts for %d images: give one per image or one for all", len(o.Prompts), n)
		}
		if o.Inpaint != nil && up.OpenAI.Kind() != adm.SuperResInpaintText2Im {
			return fmt.Errorf("pipeline: upsample: an inpainting image given, but the %s does not inpaint (glide-text2im's upsample_inpaint.pt does)", up.OpenAI.Kind())
		}
	} else {
		if o.Prompts != nil {
			return fmt.Errorf("pipeline: upsample: prompts given, but the upsampler is %s, not one of GLIDE's", up.kindName())
		}
		if o.Inpaint != nil {
			return fmt.Errorf("pipeline: upsample: an inpainting image given, but the upsampler is %s (glide-text2im's upsample_inpaint.pt inpaints)", up.kindName())
		}
	}
	if k := up.Classes(); k > 0 {
		if len(o.Labels) != n {
			return fmt.Errorf("pipeline: the upsampler is class-conditional (%d classes): it needs the class label of each of the %d images, got %d", k, n, len(o.Labels))
		}
		for i, y := range o.Labels {
			if y < 0 || y >= k {
				return fmt.Errorf("pipeline: upsample: label %d of image %d: the class-conditional upsampler takes 0..%d", y, i, k-1)
			}
		}
	}
	if !(o.Temp >= 0) || math.IsInf(o.Temp, 0) {
		return fmt.Errorf("pipeline: upsample temperature %v: must be a finite number >= 0", o.Temp)
	}
	if T := up.Diffusion.T(); o.Steps < 0 || o.Steps > T {
		return fmt.Errorf("pipeline: upsample steps %d: must be in 1..%d (the upsampler's timesteps), or 0 for %d", o.Steps, T, UpsampleSteps)
	}
	return nil
}

// Upsample is the second stage of a cascade: it samples up's output (N,
// 3, H, W) conditioned on low (N, 3, h, w), the base stage's final
// samples in [-1, 1] (not modified), with ancestral (ddpm) sampling and
// the x_0 estimate clipped to [-1, 1], as glide-text2im's text2im
// notebook samples its upsampler (p_sample_loop with clip_denoised) and
// guided-diffusion's super_res_sample.py its 64_256 model:
//
//   - low is quantised to 8 bits first, as both feed the upsampler: GLIDE
//     round((x + 1) 127.5) / 127.5 - 1, guided-diffusion the uint8 PNG
//     values floor(clamp((x + 1) 127.5, 0, 255)) / 127.5 - 1. The network
//     resizes it to H x W itself (bilinear, adm.Bilinear).
//   - a GLIDE upsampler takes o.Prompts without guidance; a
//     class-conditional guided-diffusion one o.Labels.
//   - with the default 27 steps the process is respaced to glide-text2im's
//     "fast27" timesteps (schedule.SectionTimesteps: sections
//     "10,10,3,2,2" with T-3 in place of T-1), or, where T is too small
//     for them (T < 50), 27 evenly spaced ones; with other counts to
//     o.Steps evenly spaced timesteps (improved-diffusion's
//     space_timesteps(T, "Steps"), which keeps 0 and T-1).
//   - x_T is o.Temp times standard-normal noise (upsample_temp).
//
// The checks are CheckUpsample's, with h = w = size and N = n.
func Upsample(ctx context.Context, up *Pipeline, low diffusion.Batch, o UpsampleOptions) (diffusion.Batch, error) {
	if err := low.Check(); err != nil {
		return diffusion.Batch{}, fmt.Errorf("pipeline: upsample: low-resolution images: %w", err)
	}
	if low.C != 3 || low.H != low.W {
		return diffusion.Batch{}, fmt.Errorf("pipeline: upsample: low-resolution images (%d, %d, %d, %d): want (N, 3, h, h)", low.N, low.C, low.H, low.W)
	}
	for i, v := range low.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return diffusion.Batch{}, fmt.Errorf("pipeline: upsample: low-resolution value %d is %v: must be finite", i, v)
		}
	}
	if err := CheckUpsample(up, low.N, low.H, o); err != nil {
		return diffusion.Batch{}, err
	}
	if o.Seeds != nil && len(o.Seeds) != low.N {
		return diffusion.Batch{}, fmt.Errorf("pipeline: upsample: %d seeds for %d images: give one per image or none", len(o.Seeds), low.N)
	}
	n, size := low.N, up.Config.SampleSize
	text := up.IsText()
	q := quantize8(low, text)

	var model diffusion.Model
	var in *TextInputs
	so := diffusion.Options{Sampler: diffusion.SamplerDDPM, Seed: o.Seed, Seeds: o.Seeds, N: n, C: 3, H: size, W: size, Progress: o.Progress}
	if text {
		in = &TextInputs{LowRes: &q}
		if o.Inpaint != nil {
			in.InpaintImage, in.InpaintMask = o.Inpaint.InpaintImage, o.Inpaint.InpaintMask
		}
		m, err := up.WithPrompts(o.Prompts, n, in)
		if err != nil {
			return diffusion.Batch{}, err
		}
		model = m
		so.Labels = make([]int, n) // image i takes prompt i; no guidance
		for i := range so.Labels {
			so.Labels[i] = i
		}
	} else {
		m, err := up.OpenAI.WithLowRes(q)
		if err != nil {
			return diffusion.Batch{}, fmt.Errorf("pipeline: upsample: %w", err)
		}
		model = m
		if up.Classes() > 0 {
			so.Labels = o.Labels
		}
	}
	clip := true
	so.Clip = &clip
	so.Steps, so.Spacing = upsampleSpacing(up.Diffusion.T(), o.Steps)
	temp := o.Temp
	if temp == 0 {
		temp = 1
		if text {
			temp = GlideUpsampleTemp
		}
	}
	z := upsampleNoise(n, size, o.Seed, o.Seeds)
	for i := range z.Data {
		z.Data[i] = float32(float64(z.Data[i]) * temp)
	}
	so.Noise = &z
	out, err := up.Diffusion.Sample(ctx, model, so)
	if err != nil {
		return diffusion.Batch{}, fmt.Errorf("pipeline: upsample: %w", err)
	}
	if in != nil && in.InpaintImage != nil {
		if err := in.KeepKnown(out); err != nil {
			return diffusion.Batch{}, err
		}
	}
	return out, nil
}

// upsampleSpacing returns diffusion.Options' Steps and Spacing for steps
// (0: UpsampleSteps) over T timesteps: "fast27" for 27 steps where
// schedule.SectionTimesteps accepts it (T >= 50), else the section string
// "steps" (steps evenly spaced timesteps from 0 to T-1).
func upsampleSpacing(T, steps int) (int, string) {
	if steps == 0 {
		steps = UpsampleSteps
	}
	if steps == 27 {
		if ts, err := schedule.SectionTimesteps(T, "fast27"); err == nil && len(ts) == 27 {
			return steps, "fast27"
		}
	}
	return steps, strconv.Itoa(steps)
}

// quantize8 returns low (in [-1, 1]) at 8 bits, as the reference scripts
// give it to the upsampler: glide-text2im rounds (half to even, as
// torch.round) without clamping; guided-diffusion's samples pass through
// uint8 (clamp to 0..255, truncate).
func quantize8(low diffusion.Batch, glide bool) diffusion.Batch {
	q := diffusion.NewBatch(low.N, low.C, low.H, low.W)
	for i, v := range low.Data {
		u := (float64(v) + 1) * 127.5
		if glide {
			u = math.RoundToEven(u)
		} else {
			u = math.Floor(min(max(u, 0), 255))
		}
		q.Data[i] = float32(u/127.5 - 1)
	}
	return q
}

// upsampleNoise draws the starting noise (n, 3, size, size) ~ N(0, I):
// image i from its own stream when seeds is set, else all from one
// stream of seed. The streams differ from the sampler's (another PCG
// increment), so x_T does not repeat the first step's noise.
func upsampleNoise(n, size int, seed uint64, seeds []uint64) diffusion.Batch {
	const inc = 0x6a09e667f3bcc909 // not the sampler's PCG increment
	z := diffusion.NewBatch(n, 3, size, size)
	per := 3 * size * size
	r := rand.New(rand.NewPCG(seed, inc))
	for i := range n {
		if seeds != nil {
			r = rand.New(rand.NewPCG(seeds[i], inc))
		}
		for j := range per {
			z.Data[i*per+j] = float32(r.NormFloat64())
		}
	}
	return z
}
