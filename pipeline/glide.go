package pipeline

import (
	"context"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
)

// GLIDE's text-conditional models (adm.Text2Im and its inpainting and
// super-resolution variants, openai/glide-text2im) open like any
// guided-diffusion model, but their Model needs text: WithPrompts binds
// the prompts (and an inpainting model's known image) for a sampler.

// textNet is what WithPrompts needs of a GLIDE network (*adm.Net on any
// device).
type textNet interface {
	Tokenize(prompts []string) ([]int, []bool, error)
	WithText(in adm.TextInputs) (diffusion.Model, error)
}

// TextInputs are the image inputs of a GLIDE model besides its prompts.
// Each batch holds one item per prompt, or one item for all of them.
type TextInputs struct {
	// InpaintImage (N or 1, 3, H, W) in [-1, 1] and InpaintMask (N or 1,
	// 1, H, W), 1 = keep, 0 = generate: the known image of an inpainting
	// model (adm.InpaintText2Im, adm.SuperResInpaintText2Im). Both or
	// neither; neither gives the model zeros, as glide-text2im does when
	// it is not inpainting.
	InpaintImage, InpaintMask *diffusion.Batch
	// LowRes (N or 1, 3, h, w) in [-1, 1] is the low-resolution image of
	// a super-resolution model (adm.SuperResText2Im,
	// adm.SuperResInpaintText2Im); required there.
	LowRes *diffusion.Batch
}

// IsText reports whether the pipeline's model is one of GLIDE's
// text-conditional networks (see WithPrompts).
func (p *Pipeline) IsText() bool {
	return p.OpenAI != nil && p.OpenAI.Kind().IsText()
}

// WithPrompts binds a GLIDE model to n prompts (one per image, or one
// repeated for all n) and in (nil for none) for a sampler. Sample with
// diffusion.Options.Labels = 0..n-1 (label i is image i's prompt): then
// Options.Guidance w is GLIDE's classifier-free guidance, eps = eps("") +
// w (eps(prompt) - eps("")) with the variance from the prompt's pass, as
// glide-text2im's text2im notebook's model_fn.
//
// For an inpainting model with InpaintImage and InpaintMask the model
// also keeps the known region as glide-text2im's inpaint notebook does
// (its denoised_fn): each step's x_0 estimate is x_0 (1 - mask) +
// image mask, applied to the model's epsilon (eps = (x_t - sqrt(abar_t)
// x_0) / sqrt(1 - abar_t)), so it works with every sampler. Call
// KeepKnown on the sample to make the known region exactly the image.
func (p *Pipeline) WithPrompts(prompts []string, n int, in *TextInputs) (diffusion.Model, error) {
	if !p.IsText() {
		return nil, fmt.Errorf("pipeline: prompts given, but the model is not a GLIDE text-conditional model (it is %s)", p.kindName())
	}
	tn, ok := p.OpenAI.(textNet)
	if !ok {
		return nil, fmt.Errorf("pipeline: the %s on this device cannot take a prompt", p.OpenAI.Kind())
	}
	if n < 1 {
		return nil, fmt.Errorf("pipeline: %d images: want at least 1", n)
	}
	switch len(prompts) {
	case n:
	case 1:
		all := make([]string, n)
		for i := range all {
			all[i] = prompts[0]
		}
		prompts = all
	default:
		return nil, fmt.Errorf("pipeline: %d prompts for %d images: give one per image or one for all", len(prompts), n)
	}
	toks, mask, err := tn.Tokenize(prompts)
	if err != nil {
		return nil, fmt.Errorf("pipeline: prompts: %w", err)
	}
	kind := p.OpenAI.Kind()
	inpaints := kind == adm.InpaintText2Im || kind == adm.SuperResInpaintText2Im
	superRes := kind == adm.SuperResText2Im || kind == adm.SuperResInpaintText2Im
	var ti adm.TextInputs
	ti.Tokens, ti.Mask = toks, mask
	if in == nil {
		in = &TextInputs{}
	}
	if (in.InpaintImage == nil) != (in.InpaintMask == nil) {
		return nil, fmt.Errorf("pipeline: inpainting needs both the image and the mask")
	}
	if in.InpaintImage != nil && !inpaints {
		return nil, fmt.Errorf("pipeline: an inpainting image given, but the %s does not inpaint (glide-text2im's base_inpaint.pt does)", kind)
	}
	if superRes && in.LowRes == nil {
		return nil, fmt.Errorf("pipeline: the %s is an upsampler: it needs its low-resolution image", kind)
	}
	if !superRes && in.LowRes != nil {
		return nil, fmt.Errorf("pipeline: a low-resolution image given, but the %s is not an upsampler", kind)
	}
	size := p.Config.SampleSize
	if ti.InpaintImage, err = repeatItems(in.InpaintImage, n, 3, size, "inpainting image"); err != nil {
		return nil, err
	}
	if ti.InpaintMask, err = repeatItems(in.InpaintMask, n, 1, size, "inpainting mask"); err != nil {
		return nil, err
	}
	if in.LowRes != nil {
		if ti.LowRes, err = repeatItems(in.LowRes, n, 3, 0, "low-resolution image"); err != nil {
			return nil, err
		}
	}
	m, err := tn.WithText(ti)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	if ti.InpaintImage == nil {
		return m, nil
	}
	cfg := p.Diffusion.Config()
	if cfg.Prediction != diffusion.PredictEpsilon {
		return nil, fmt.Errorf("pipeline: inpainting: the model predicts %v, want epsilon", cfg.Prediction)
	}
	return &keepKnown{m: m, img: *ti.InpaintImage, mask: *ti.InpaintMask, n: n, abar: p.Diffusion.Schedule().AlphasCumprod}, nil
}

// kindName names the pipeline's model for errors.
func (p *Pipeline) kindName() string {
	if p.OpenAI != nil {
		return "a guided-diffusion " + string(p.OpenAI.Kind())
	}
	if p.Source != nil && p.Source.Path != "" {
		return "the UNet of " + p.Source.Path
	}
	return "a UNet"
}

// repeatItems checks b (1 or n items of c channels; size x size unless
// size is 0) and returns it with n items (nil for nil).
func repeatItems(b *diffusion.Batch, n, c, size int, what string) (*diffusion.Batch, error) {
	if b == nil {
		return nil, nil
	}
	if err := b.Check(); err != nil {
		return nil, fmt.Errorf("pipeline: %s: %w", what, err)
	}
	if (b.N != 1 && b.N != n) || b.C != c || (size > 0 && (b.H != size || b.W != size)) {
		want := fmt.Sprintf("(1 or %d, %d, %d, %d)", n, c, size, size)
		if size == 0 {
			want = fmt.Sprintf("(1 or %d, %d, h, w)", n, c)
		}
		return nil, fmt.Errorf("pipeline: %s has shape (%d, %d, %d, %d), want %s", what, b.N, b.C, b.H, b.W, want)
	}
	for i, v := range b.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("pipeline: %s value %d is %v: must be finite", what, i, v)
		}
	}
	if b.N == n {
		return b, nil
	}
	out := diffusion.NewBatch(n, b.C, b.H, b.W)
	for i := range n {
		copy(out.Data[i*len(b.Data):], b.Data)
	}
	return &out, nil
}

// keepKnown is an inpainting GLIDE model whose x_0 estimate keeps the
// known region (glide-text2im's denoised_fn), by rewriting its epsilon.
type keepKnown struct {
	m         diffusion.Model
	img, mask diffusion.Batch // n items each
	n         int
	abar      []float64 // the training schedule's alphabar
}

func (k *keepKnown) Predict(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	out, err := k.m.Predict(ctx, x, t, y)
	if err != nil {
		return diffusion.Batch{}, err
	}
	if out.N != x.N || out.H != x.H || out.W != x.W || out.C < x.C || len(t) != x.N {
		return diffusion.Batch{}, fmt.Errorf("pipeline: model output (%d, %d, %d, %d) for input (%d, %d, %d, %d)", out.N, out.C, out.H, out.W, x.N, x.C, x.H, x.W)
	}
	hw := x.H * x.W
	D := x.C * hw
	per := out.C * hw
	for r := range x.N {
		src := r
		if y != nil {
			if src = y[r]; src < 0 {
				src = r % k.n
			}
		}
		if src < 0 || src >= k.n {
			return diffusion.Batch{}, fmt.Errorf("pipeline: row %d takes item %d of %d", r, src, k.n)
		}
		ab := diffusion.AlphaBarAt(k.abar, t[r])
		sa, sb := math.Sqrt(ab), math.Sqrt(1-ab)
		if sb == 0 {
			continue
		}
		mk := k.mask.Data[src*hw : (src+1)*hw]
		im := k.img.Data[src*D : (src+1)*D]
		xr := x.Data[r*D : (r+1)*D]
		eps := out.Data[r*per : r*per+D]
		for j := range D {
			m := float64(mk[j%hw])
			if m == 0 {
				continue
			}
			xt := float64(xr[j])
			x0 := (xt - sb*float64(eps[j])) / sa
			x0 = x0*(1-m) + float64(im[j])*m
			eps[j] = float32((xt - sa*x0) / sb)
		}
	}
	return out, nil
}

// KeepKnown sets the known region of an inpainted sample x (N, 3, H, W)
// to the inpainting image exactly: x = mask image + (1 - mask) x, where
// the mask is 0 or 1 bit for bit. It is a no-op when in has no
// inpainting image.
func (in *TextInputs) KeepKnown(x diffusion.Batch) error {
	if in == nil || in.InpaintImage == nil || in.InpaintMask == nil {
		return nil
	}
	img, err := repeatItems(in.InpaintImage, x.N, 3, 0, "inpainting image")
	if err != nil {
		return err
	}
	mask, err := repeatItems(in.InpaintMask, x.N, 1, 0, "inpainting mask")
	if err != nil {
		return err
	}
	if x.C != 3 || img.H != x.H || img.W != x.W || mask.H != x.H || mask.W != x.W || len(x.Data) != x.N*3*x.H*x.W {
		return fmt.Errorf("pipeline: sample (%d, %d, %d, %d) does not match the inpainting image (%d, 3, %d, %d)", x.N, x.C, x.H, x.W, img.N, img.H, img.W)
	}
	hw := x.H * x.W
	for i := range x.N {
		for c := range 3 {
			for p := range hw {
				m := mask.Data[i*hw+p]
				j := (i*3+c)*hw + p
				switch m {
				case 0:
				case 1:
					x.Data[j] = img.Data[j]
				default:
					x.Data[j] = m*img.Data[j] + (1-m)*x.Data[j]
				}
			}
		}
	}
	return nil
}
