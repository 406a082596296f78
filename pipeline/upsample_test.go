package pipeline

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/schedule"
)

// Small random-weight networks for the upsampling tests, built with adm's
// flags (no shared fixtures needed).
const (
	// tinyGlideFlags is a GLIDE text model at 8x8 (adm's tinyGlide).
	tinyGlideFlags = "--image_size 8 --num_channels 32 --num_res_blocks 1 --channel_mult 1 --attention_resolutions 8 --num_head_channels 16 --text_ctx 4 --xf_width 16 --xf_layers 1 --xf_heads 2 --dropout 0"
	// tinyGlideUpFlags is a GLIDE upsampler 8 -> 32.
	tinyGlideUpFlags = "--image_size 32 --num_channels 32 --num_res_blocks 1 --channel_mult 1,1,1 --attention_resolutions 8 --num_head_channels 16 --text_ctx 4 --xf_width 16 --xf_layers 1 --xf_heads 2 --dropout 0 --super_res True"
	// tinySRFlags is a guided-diffusion SuperResModel 16 -> 64.
	tinySRFlags = "--large_size 64 --small_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,1 --attention_resolutions 16 --num_heads 2 --learn_sigma True"
)

// saveTiny builds a random-weight network from flags and saves it as a
// model file in a temporary folder.
func saveTiny(t testing.TB, flags string, seed uint64) string {
	t.Helper()
	cfg, err := adm.ParseFlags(flags)
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := adm.New(cfg, cpu, seed)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// openTiny opens saveTiny's model on the CPU.
func openTiny(t testing.TB, flags string, seed uint64) *Pipeline {
	t.Helper()
	p, err := Open(context.Background(), saveTiny(t, flags, seed), Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// lowImages returns n smooth images (n, 3, s, s) in [-1, 1] with phase ph.
func lowImages(n, s int, ph float64) diffusion.Batch {
	b := diffusion.NewBatch(n, 3, s, s)
	for i := range b.Data {
		b.Data[i] = float32(0.9 * math.Sin(0.37*float64(i)+ph))
	}
	return b
}

// maxAbsDiff is max_i |a_i - b_i|.
func maxAbsDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// TestUpsampleGLIDE runs GLIDE's second stage 8 -> 32 with a prompt: the
// upsampler's size, finite values in [-1, 1]-ish range, bit-identical at
// a fixed seed, and a different base image (or prompt) changes the output
// at that seed, so the low-resolution image and the text reach the model.
func TestUpsampleGLIDE(t *testing.T) {
	up := openTiny(t, tinyGlideUpFlags, 3)
	if !up.IsUpsampler() || up.OpenAI.Kind() != adm.SuperResText2Im {
		t.Fatalf("kind %v, want an upsampler", up.OpenAI.Kind())
	}
	if s, err := up.LowResSize(); err != nil || s != 8 {
		t.Fatalf("LowResSize %d, %v; want 8", s, err)
	}
	ctx := context.Background()
	o := UpsampleOptions{Prompts: []string{"a corgi"}, Steps: 3, Seeds: []uint64{7, 8}}
	run := func(low diffusion.Batch, o UpsampleOptions) diffusion.Batch {
		t.Helper()
		out, err := Upsample(ctx, up, low, o)
		if err != nil {
			t.Fatal(err)
		}
		if out.N != 2 || out.C != 3 || out.H != 32 || out.W != 32 || len(out.Data) != 2*3*32*32 {
			t.Fatalf("output (%d, %d, %d, %d), want (2, 3, 32, 32)", out.N, out.C, out.H, out.W)
		}
		for i, v := range out.Data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("output[%d] = %v", i, v)
			}
		}
		return out
	}
	low := lowImages(2, 8, 0)
	keep := append([]float32(nil), low.Data...)
	a := run(low, o)
	if maxAbsDiff(low.Data, keep) != 0 {
		t.Error("Upsample modified the low-resolution images")
	}
	if d := maxAbsDiff(a.Data, run(low, o).Data); d != 0 {
		t.Errorf("same seed: outputs differ by %g, want bit-identical", d)
	}
	if d := maxAbsDiff(a.Data, run(lowImages(2, 8, 1.5), o).Data); d < 1e-3 {
		t.Errorf("another base image: outputs differ by %g, want > 1e-3 (the low-resolution image does not reach the model)", d)
	}
	o2 := o
	o2.Prompts = []string{"a red bus"}
	if d := maxAbsDiff(a.Data, run(low, o2).Data); d < 1e-4 {
		t.Errorf("another prompt: outputs differ by %g, want > 1e-4", d)
	}
	// Temp scales only x_T: 1 against the default 0.997 moves the result
	// a little.
	o3 := o
	o3.Temp = 1
	if d := maxAbsDiff(a.Data, run(low, o3).Data); d == 0 {
		t.Error("Temp 1: the same output as the default 0.997")
	}
}

// TestUpsampleSuperRes runs guided-diffusion's SuperResModel 16 -> 64,
// unconditional and class-conditional: the labels reach the model.
func TestUpsampleSuperRes(t *testing.T) {
	ctx := context.Background()
	low := lowImages(1, 16, 0)
	t.Run("unconditional", func(t *testing.T) {
		up := openTiny(t, tinySRFlags, 4)
		if s, err := up.LowResSize(); err != nil || s != 16 {
			t.Fatalf("LowResSize %d, %v; want 16", s, err)
		}
		o := UpsampleOptions{Steps: 2, Seed: 1, Labels: []int{5}} // labels ignored
		a, err := Upsample(ctx, up, low, o)
		if err != nil {
			t.Fatal(err)
		}
		if a.N != 1 || a.C != 3 || a.H != 64 || a.W != 64 {
			t.Fatalf("output (%d, %d, %d, %d), want (1, 3, 64, 64)", a.N, a.C, a.H, a.W)
		}
		b, err := Upsample(ctx, up, lowImages(1, 16, 2), o)
		if err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(a.Data, b.Data); d < 1e-3 {
			t.Errorf("another base image: outputs differ by %g, want > 1e-3", d)
		}
	})
	t.Run("class-conditional", func(t *testing.T) {
		up := openTiny(t, tinySRFlags+" --class_cond True", 4)
		if up.Classes() != adm.NumClasses {
			t.Fatalf("classes %d, want %d", up.Classes(), adm.NumClasses)
		}
		if _, err := Upsample(ctx, up, low, UpsampleOptions{Steps: 2}); err == nil || !strings.Contains(err.Error(), "class label") {
			t.Fatalf("no labels: %v, want an error asking for the class labels", err)
		}
		if _, err := Upsample(ctx, up, low, UpsampleOptions{Steps: 2, Labels: []int{-1}}); err == nil || !strings.Contains(err.Error(), "takes 0..999") {
			t.Fatalf("label -1: %v, want an error naming the range", err)
		}
		a, err := Upsample(ctx, up, low, UpsampleOptions{Steps: 2, Seed: 1, Labels: []int{3}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := Upsample(ctx, up, low, UpsampleOptions{Steps: 2, Seed: 1, Labels: []int{4}})
		if err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(a.Data, b.Data); d < 1e-4 {
			t.Errorf("another label: outputs differ by %g, want > 1e-4", d)
		}
	})
}

// TestUpsampleErrors checks Upsample's errors: not an upsampler, a
// low-resolution size other than the upsampler's (both named), a text
// upsampler without prompts, and bad options.
func TestUpsampleErrors(t *testing.T) {
	ctx := context.Background()
	base := openTiny(t, tinyGlideFlags, 1)
	glideUp := openTiny(t, tinyGlideUpFlags, 2)
	sr := openTiny(t, tinySRFlags, 3)
	low8 := lowImages(1, 8, 0)
	bad := lowImages(1, 8, 0)
	bad.Data[5] = float32(math.NaN())
	for _, c := range []struct {
		name string
		up   *Pipeline
		low  diffusion.Batch
		o    UpsampleOptions
		want string
	}{
		{"not an upsampler", base, low8, UpsampleOptions{Prompts: []string{"a"}}, "not a super-resolution model"},
		{"size", glideUp, lowImages(1, 16, 0), UpsampleOptions{Prompts: []string{"a"}}, "takes 8x8 images to 32x32, but the base stage makes 16x16"},
		{"size superres", sr, low8, UpsampleOptions{}, "takes 16x16 images to 64x64, but the base stage makes 8x8"},
		{"no prompts", glideUp, low8, UpsampleOptions{}, "needs the prompts"},
		{"prompt count", glideUp, lowImages(3, 8, 0), UpsampleOptions{Prompts: []string{"a", "b"}}, "2 prompts for 3 images"},
		{"prompts on superres", sr, lowImages(1, 16, 0), UpsampleOptions{Prompts: []string{"a"}}, "not one of GLIDE's"},
		{"temp", glideUp, low8, UpsampleOptions{Prompts: []string{"a"}, Temp: -1}, "temperature"},
		{"steps", glideUp, low8, UpsampleOptions{Prompts: []string{"a"}, Steps: 1001}, "steps 1001"},
		{"seeds", glideUp, low8, UpsampleOptions{Prompts: []string{"a"}, Seeds: []uint64{1, 2}}, "2 seeds for 1 images"},
		{"channels", glideUp, diffusion.NewBatch(1, 1, 8, 8), UpsampleOptions{Prompts: []string{"a"}}, "want (N, 3, h, h)"},
		{"nan", glideUp, bad, UpsampleOptions{Prompts: []string{"a"}}, "must be finite"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Upsample(ctx, c.up, c.low, c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestQuantize8 checks the 8-bit rounding of the low-resolution input:
// GLIDE's round half to even without clamp, guided-diffusion's uint8
// truncation with clamp.
func TestQuantize8(t *testing.T) {
	in := diffusion.Batch{N: 1, C: 1, H: 1, W: 5, Data: []float32{-1, 1, 0.5 / 127.5, 1.5, 0.9}}
	g, a := quantize8(in, true), quantize8(in, false)
	// (x+1)*127.5: 0, 255, 128 (127.5+0.5 = 128 exactly), 318.75, 242.25.
	wantG := []float64{0, 255, 128, 319, 242}
	wantA := []float64{0, 255, 128, 255, 242}
	for i := range in.Data {
		if e := math.Abs(float64(g.Data[i]) - (wantG[i]/127.5 - 1)); e > 1e-6 {
			t.Errorf("glide[%d] = %v, want %v/127.5-1", i, g.Data[i], wantG[i])
		}
		if e := math.Abs(float64(a.Data[i]) - (wantA[i]/127.5 - 1)); e > 1e-6 {
			t.Errorf("adm[%d] = %v, want %v/127.5-1", i, a.Data[i], wantA[i])
		}
	}
}

// TestUpsampleSpacing: 27 steps are fast27 (27 evenly spaced where T is
// too small for it); other counts are section strings.
func TestUpsampleSpacing(t *testing.T) {
	steps, sp := upsampleSpacing(1000, 0)
	if steps != 27 || sp != "fast27" {
		t.Errorf("default: %d, %q; want 27, fast27", steps, sp)
	}
	if steps, sp := upsampleSpacing(40, 27); steps != 27 || sp != "27" {
		t.Errorf("T = 40: %d, %q; want 27, \"27\"", steps, sp)
	}
	if steps, sp := upsampleSpacing(1000, 5); steps != 5 || sp != "5" {
		t.Errorf("5 steps: %d, %q", steps, sp)
	}
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.RespaceSteps(steps, sp)
	if err != nil {
		t.Fatal(err)
	}
	want, err := schedule.SectionTimesteps(1000, "fast27")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Schedule().Timesteps; !slices.Equal(got, want) {
		t.Errorf("respaced timesteps %v, want fast27's %v", got, want)
	}
}

// TestUpsampleGLIDEInpaint runs the inpainting upsampler
// (upsample_inpaint.pt) with a known image and mask at its size: the
// result keeps the known region exactly, as the inpaint notebook does.
// The plain upsampler refuses them.
func TestUpsampleGLIDEInpaint(t *testing.T) {
	up := openTiny(t, tinyGlideUpFlags+" --inpaint True", 6)
	if up.OpenAI.Kind() != adm.SuperResInpaintText2Im {
		t.Fatalf("kind %v", up.OpenAI.Kind())
	}
	known := lowImages(1, 32, 0.3)
	mask := diffusion.NewBatch(1, 1, 32, 32)
	for i := range mask.Data {
		if i%32 < 16 {
			mask.Data[i] = 1
		}
	}
	in := &TextInputs{InpaintImage: &known, InpaintMask: &mask}
	ctx := context.Background()
	out, err := Upsample(ctx, up, lowImages(2, 8, 0), UpsampleOptions{Prompts: []string{"a"}, Steps: 2, Seed: 1, Inpaint: in})
	if err != nil {
		t.Fatal(err)
	}
	hw := 32 * 32
	for i := range 2 {
		for c := range 3 {
			for p := range hw {
				j := (i*3+c)*hw + p
				if mask.Data[p] == 1 && out.Data[j] != known.Data[c*hw+p] {
					t.Fatalf("image %d channel %d pixel %d: %v, want the known %v", i, c, p, out.Data[j], known.Data[c*hw+p])
				}
			}
		}
	}
	plain := openTiny(t, tinyGlideUpFlags, 7)
	if _, err := Upsample(ctx, plain, lowImages(1, 8, 0), UpsampleOptions{Prompts: []string{"a"}, Inpaint: in}); err == nil || !strings.Contains(err.Error(), "does not inpaint") {
		t.Errorf("inpainting inputs on the plain upsampler: %v, want an error", err)
	}
}
