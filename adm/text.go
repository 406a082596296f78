package adm

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/tokenizer"
)

// TextInputs are the conditioning inputs of a GLIDE network besides x_t
// and t.
type TextInputs struct {
	// Tokens (N, text_ctx), row-major: each item's prompt as
	// tokenizer.PaddedTokensAndMask gives it (see Tokenize).
	Tokens []int
	// Mask (N, text_ctx): true for real tokens, false for padding (needed
	// with xf_padding).
	Mask []bool
	// InpaintImage (N, 3, H, W) and InpaintMask (N, 1, H, W) (1 = keep)
	// of an inpainting model; the model sees InpaintImage * InpaintMask
	// and the mask. Nil means zeros, as InpaintText2ImUNet.forward.
	InpaintImage, InpaintMask *diffusion.Batch
	// LowRes (N, 3, h, w) of a super-resolution model, upsampled
	// bilinearly to x's size.
	LowRes *diffusion.Batch
}

// TextCtx is the number of tokens per prompt a GLIDE model reads
// (text_ctx), 0 for other networks.
func (m *Net[B]) TextCtx() int {
	if m.a.text == nil {
		return 0
	}
	return m.a.text.ctx
}

// Tokenize encodes prompts (one per batch item) with GLIDE's BPE
// tokenizer and pads each to the model's text_ctx: the Tokens and Mask of
// TextInputs. The empty prompt is the unconditional input of
// classifier-free guidance.
func (m *Net[B]) Tokenize(prompts []string) ([]int, []bool, error) {
	if m.a.text == nil {
		return nil, nil, fmt.Errorf("adm: Tokenize on a %s (not a GLIDE model)", m.a.kind)
	}
	return TokenizePrompts(prompts, m.a.text.ctx)
}

// TokenizePrompts encodes prompts with GLIDE's BPE tokenizer, each padded
// to textCtx tokens (tokenizer.BPE.EncodePadded), concatenated.
func TokenizePrompts(prompts []string, textCtx int) ([]int, []bool, error) {
	bpe, err := tokenizer.NewGLIDE()
	if err != nil {
		return nil, nil, fmt.Errorf("adm: tokenizer: %w", err)
	}
	var toks []int
	var mask []bool
	for _, p := range prompts {
		t, mk := bpe.EncodePadded(p, textCtx)
		toks, mask = append(toks, t...), append(mask, mk...)
	}
	return toks, mask, nil
}

// PredictText runs a GLIDE network on x_t (N, 3, H, W) at timesteps t
// of the training schedule, conditioned on in, and returns its output
// (N, 6, H, W): eps, then the variance interpolation v.
func (m *Net[B]) PredictText(ctx context.Context, x diffusion.Batch, t []float64, in TextInputs) (diffusion.Batch, error) {
	if m.a.text == nil {
		return diffusion.Batch{}, fmt.Errorf("adm: PredictText on a %s (not a GLIDE model)", m.a.kind)
	}
	if err := ctx.Err(); err != nil {
		return diffusion.Batch{}, err
	}
	feeds, err := m.textFeeds(x, t, in)
	if err != nil {
		return diffusion.Batch{}, err
	}
	out := diffusion.NewBatch(x.N, m.a.out, x.H, x.W)
	m.textMu.Lock()
	defer m.textMu.Unlock()
	m.tok.IDs, m.tok.Mask = in.Tokens, in.Mask
	defer func() { m.tok.IDs, m.tok.Mask = nil, nil }()
	if err := m.nn.Forward(ctx, Key(x), feeds, out.Data); err != nil {
		return diffusion.Batch{}, fmt.Errorf("adm: %w", err)
	}
	return out, nil
}

// textFeeds checks a GLIDE batch and returns its graph inputs: x, the
// timestep embedding, the masked inpainting image and mask, and the
// upsampled low-resolution image.
func (m *Net[B]) textFeeds(x diffusion.Batch, t []float64, in TextInputs) (map[string][]float32, error) {
	ta := m.a.text
	if err := m.checkInput(x, t); err != nil {
		return nil, err
	}
	if len(in.Tokens) != x.N*ta.ctx {
		return nil, fmt.Errorf("adm: %d tokens for a batch of %d: want %d (text_ctx %d per item)", len(in.Tokens), x.N, x.N*ta.ctx, ta.ctx)
	}
	for i, id := range in.Tokens {
		if id < 0 || id >= Vocab {
			return nil, fmt.Errorf("adm: tokens[%d] = %d: allowed 0..%d", i, id, Vocab-1)
		}
	}
	if ta.padding && len(in.Mask) != len(in.Tokens) {
		return nil, fmt.Errorf("adm: %d mask values for %d tokens (the model uses xf_padding)", len(in.Mask), len(in.Tokens))
	}
	temb := make([]float32, x.N*m.a.model)
	timestepEmbedding(temb, t, m.a.model)
	feeds := map[string][]float32{inputX: x.Data, inputTEmb: temb}
	if !ta.inpaint && (in.InpaintImage != nil || in.InpaintMask != nil) {
		return nil, fmt.Errorf("adm: inpainting inputs given, but the %s does not inpaint", m.a.kind)
	}
	if ta.inpaint {
		v, err := inpaintInput(x, in.InpaintImage, in.InpaintMask)
		if err != nil {
			return nil, err
		}
		feeds[inputInpaint] = v
	}
	switch {
	case ta.superRes && in.LowRes == nil:
		return nil, fmt.Errorf("adm: the %s needs its low-resolution image (low_res)", m.a.kind)
	case !ta.superRes && in.LowRes != nil:
		return nil, fmt.Errorf("adm: a low-resolution image given, but the %s is not a super-resolution model", m.a.kind)
	case ta.superRes:
		lr := *in.LowRes
		if err := lr.Check(); err != nil {
			return nil, fmt.Errorf("adm: low_res: %w", err)
		}
		if lr.N != x.N || lr.C != 3 {
			return nil, fmt.Errorf("adm: low_res has shape (%d, %d, %d, %d), want (%d, 3, h, w)", lr.N, lr.C, lr.H, lr.W, x.N)
		}
		feeds[inputLowRes] = Bilinear(lr, x.H, x.W).Data
	}
	return feeds, nil
}

// inpaintInput is [image * mask, mask] (N, 4, H, W) of
// InpaintText2ImUNet.forward, zeros for a nil image or mask.
func inpaintInput(x diffusion.Batch, img, mask *diffusion.Batch) ([]float32, error) {
	hw := x.H * x.W
	out := make([]float32, x.N*4*hw)
	if img != nil {
		if err := img.Check(); err != nil {
			return nil, fmt.Errorf("adm: inpaint_image: %w", err)
		}
		if img.N != x.N || img.C != 3 || img.H != x.H || img.W != x.W {
			return nil, fmt.Errorf("adm: inpaint_image has shape (%d, %d, %d, %d), want (%d, 3, %d, %d)", img.N, img.C, img.H, img.W, x.N, x.H, x.W)
		}
	}
	if mask != nil {
		if err := mask.Check(); err != nil {
			return nil, fmt.Errorf("adm: inpaint_mask: %w", err)
		}
		if mask.N != x.N || mask.C != 1 || mask.H != x.H || mask.W != x.W {
			return nil, fmt.Errorf("adm: inpaint_mask has shape (%d, %d, %d, %d), want (%d, 1, %d, %d)", mask.N, mask.C, mask.H, mask.W, x.N, x.H, x.W)
		}
	}
	if mask == nil {
		return out, nil // image * 0 and a zero mask
	}
	for n := 0; n < x.N; n++ {
		mk := mask.Data[n*hw : (n+1)*hw]
		dst := out[n*4*hw : (n+1)*4*hw]
		if img != nil {
			for c := 0; c < 3; c++ {
				src := img.Data[(n*3+c)*hw : (n*3+c+1)*hw]
				for p := range hw {
					dst[c*hw+p] = src[p] * mk[p]
				}
			}
		}
		copy(dst[3*hw:], mk)
	}
	return out, nil
}

// WithText binds a GLIDE network to the conditioning inputs of N items
// for a sampler. The result's Predict(x, t, y) calls PredictText:
//
//   - y nil: x has the N items, each with its own inputs;
//   - y given (one per row of x): row k takes the prompt of item y[k], or
//     for y[k] = -1 the empty prompt (all padding, the unconditional text
//     of classifier-free guidance), and the image inputs (inpainting,
//     low_res) of item y[k], or of item k mod N for -1.
//
// So diffusion's classifier-free guidance (Options.Labels 0..N-1 and
// Options.Guidance w, which batches the rows with y then with -1) is
// GLIDE's: eps = eps(empty) + w (eps(prompt) - eps(empty)), the variance
// from the prompt's pass.
func (m *Net[B]) WithText(in TextInputs) (diffusion.Model, error) {
	if m.a.text == nil {
		return nil, fmt.Errorf("adm: WithText on a %s (not a GLIDE model)", m.a.kind)
	}
	ctx := m.a.text.ctx
	if len(in.Tokens) == 0 || len(in.Tokens)%ctx != 0 {
		return nil, fmt.Errorf("adm: %d tokens: want text_ctx (%d) per batch item", len(in.Tokens), ctx)
	}
	n := len(in.Tokens) / ctx
	if m.a.text.padding && len(in.Mask) != len(in.Tokens) {
		return nil, fmt.Errorf("adm: %d mask values for %d tokens (the model uses xf_padding)", len(in.Mask), len(in.Tokens))
	}
	for _, b := range []struct {
		name string
		b    *diffusion.Batch
	}{{"inpaint_image", in.InpaintImage}, {"inpaint_mask", in.InpaintMask}, {"low_res", in.LowRes}} {
		if b.b == nil {
			continue
		}
		if err := b.b.Check(); err != nil {
			return nil, fmt.Errorf("adm: %s: %w", b.name, err)
		}
		if b.b.N != n {
			return nil, fmt.Errorf("adm: %s has %d items for %d prompts", b.name, b.b.N, n)
		}
	}
	return textModel[B]{m, in, n}, nil
}

type textModel[B any] struct {
	m  *Net[B]
	in TextInputs
	n  int // items bound
}

func (l textModel[B]) Predict(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	if y == nil {
		if x.N != l.n {
			return diffusion.Batch{}, fmt.Errorf("adm: a batch of %d for a model bound to %d prompts", x.N, l.n)
		}
		return l.m.PredictText(ctx, x, t, l.in)
	}
	if len(y) != x.N {
		return diffusion.Batch{}, fmt.Errorf("adm: %d labels for a batch of %d", len(y), x.N)
	}
	tc := l.m.a.text.ctx
	nullT, nullM := tokenizer.PaddedTokensAndMask(nil, tc)
	src := make([]int, x.N) // the bound item whose image inputs row k takes
	var in TextInputs
	for k, v := range y {
		if v < -1 || v >= l.n {
			return diffusion.Batch{}, fmt.Errorf("adm: label [%d] = %d: allowed -1 (the empty prompt) or 0..%d (the bound prompts)", k, v, l.n-1)
		}
		if v == -1 {
			src[k] = k % l.n
			in.Tokens, in.Mask = append(in.Tokens, nullT...), append(in.Mask, nullM...)
			continue
		}
		src[k] = v
		in.Tokens = append(in.Tokens, l.in.Tokens[v*tc:(v+1)*tc]...)
		if l.in.Mask != nil {
			in.Mask = append(in.Mask, l.in.Mask[v*tc:(v+1)*tc]...)
		} else {
			in.Mask = append(in.Mask, nullM...) // unused without xf_padding
		}
	}
	in.InpaintImage, in.InpaintMask, in.LowRes = gather(l.in.InpaintImage, src), gather(l.in.InpaintMask, src), gather(l.in.LowRes, src)
	return l.m.PredictText(ctx, x, t, in)
}

// gather returns the items src of b (nil for nil).
func gather(b *diffusion.Batch, src []int) *diffusion.Batch {
	if b == nil {
		return nil
	}
	out := diffusion.NewBatch(len(src), b.C, b.H, b.W)
	per := b.C * b.H * b.W
	for k, i := range src {
		copy(out.Data[k*per:(k+1)*per], b.Data[i*per:(i+1)*per])
	}
	return &out
}
