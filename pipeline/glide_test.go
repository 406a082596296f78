package pipeline

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/internal/fixtures"
)

// TestOpenGLIDE opens the small GLIDE fixtures: the config samplers read,
// a Model that asks for prompts, WithPrompts' checks, and a bound model
// that samples (DDIM, guided).
func TestOpenGLIDE(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	ctx := context.Background()
	p, err := Open(ctx, filepath.Join(root, "glide", "model.pt"), Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !p.IsText() || p.OpenAI.Kind() != adm.Text2Im {
		t.Fatalf("IsText %v, kind %v", p.IsText(), p.OpenAI.Kind())
	}
	if p.Config.InChannels != 3 || p.Config.OutChannels != 6 || p.Config.SampleSize != 32 || p.Classes() != 0 {
		t.Errorf("config %+v, classes %d", p.Config, p.Classes())
	}
	if c := p.Diffusion.Config(); c.Variance != diffusion.LearnedRange {
		t.Errorf("variance %v, want learned range", c.Variance)
	}
	x := diffusion.NewBatch(1, 3, 32, 32)
	if _, err := p.Model.Predict(ctx, x, []float64{10}, nil); err == nil || !strings.Contains(err.Error(), "WithPrompts") {
		t.Errorf("Model.Predict: %v, want an error naming WithPrompts", err)
	}
	if _, err := p.WithPrompts([]string{"a", "b"}, 3, nil); err == nil {
		t.Error("2 prompts for 3 images: no error")
	}
	img := diffusion.NewBatch(1, 3, 32, 32)
	if _, err := p.WithPrompts([]string{"a"}, 2, &TextInputs{InpaintImage: &img, InpaintMask: &img}); err == nil {
		t.Error("inpainting inputs on a Text2ImUNet: no error")
	}
	m, err := p.WithPrompts([]string{"a red square"}, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Diffusion.Sample(ctx, m, diffusion.Options{Steps: 3, Seed: 1, N: 2, C: 3, H: 32, W: 32, Labels: []int{0, 1}, Guidance: 3})
	if err != nil {
		t.Fatal(err)
	}
	if b.N != 2 || b.C != 3 {
		t.Errorf("sample shape (%d, %d, %d, %d)", b.N, b.C, b.H, b.W)
	}
}

// TestGLIDEInpaintKeepsKnown checks the inpainting model's denoised_fn:
// the x_0 estimate implied by the rewritten epsilon is the known image in
// the known region; KeepKnown pastes the image into a sample.
func TestGLIDEInpaintKeepsKnown(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	ctx := context.Background()
	p, err := Open(ctx, filepath.Join(root, "glide-inpaint", "model.pt"), Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	img := diffusion.NewBatch(1, 3, 32, 32)
	mask := diffusion.NewBatch(1, 1, 32, 32)
	for i := range img.Data {
		img.Data[i] = float32(math.Sin(float64(i))) * 0.8
	}
	for i := range mask.Data {
		if i%32 < 16 {
			mask.Data[i] = 1
		}
	}
	in := &TextInputs{InpaintImage: &img, InpaintMask: &mask}
	m, err := p.WithPrompts([]string{"a dog"}, 1, in)
	if err != nil {
		t.Fatal(err)
	}
	x := diffusion.NewBatch(1, 3, 32, 32)
	for i := range x.Data {
		x.Data[i] = float32(math.Cos(float64(3 * i)))
	}
	const tt = 500
	out, err := m.Predict(ctx, x, []float64{tt}, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	ab := p.Diffusion.Schedule().AlphasCumprod[tt]
	for j := range 3 * 32 * 32 {
		if mask.Data[j%1024] != 1 {
			continue
		}
		x0 := (float64(x.Data[j]) - math.Sqrt(1-ab)*float64(out.Data[j])) / math.Sqrt(ab)
		if math.Abs(x0-float64(img.Data[j])) > 1e-4 {
			t.Fatalf("x0[%d] = %v, want the known %v", j, x0, img.Data[j])
		}
	}
	// Sampled ancestrally (as glide-text2im), the known region comes out
	// as the image up to rounding before KeepKnown pastes it.
	for _, sampler := range []diffusion.Sampler{diffusion.SamplerDDPM, diffusion.SamplerDDIM} {
		b, err := p.Diffusion.Sample(ctx, m, diffusion.Options{Sampler: sampler, Steps: 4, Seed: 2, N: 1, C: 3, H: 32, W: 32, Labels: []int{0}, Guidance: 3})
		if err != nil {
			t.Fatal(err)
		}
		var worst float64
		for j := range b.Data {
			if mask.Data[j%1024] == 1 {
				worst = max(worst, math.Abs(float64(b.Data[j]-img.Data[j])))
			}
		}
		t.Logf("%v: largest deviation from the known image in the kept region %.3g", sampler, worst)
		if worst > 1e-4 {
			t.Errorf("%v: the kept region deviates from the image by %v", sampler, worst)
		}
	}
	s := diffusion.NewBatch(2, 3, 32, 32)
	if err := in.KeepKnown(s); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		for j := range 3 * 1024 {
			want := float32(0)
			if mask.Data[j%1024] == 1 {
				want = img.Data[j]
			}
			if s.Data[i*3*1024+j] != want {
				t.Fatalf("KeepKnown: item %d value %d = %v, want %v", i, j, s.Data[i*3*1024+j], want)
			}
		}
	}
}
