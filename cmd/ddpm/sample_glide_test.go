package main

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/internal/fixtures"
	"github.com/ddpm-go/ddpm/npy"
)

// glideModels returns the small GLIDE fixtures' text-to-image and
// inpainting model.pt files, or skips t when the shared fixtures are
// absent.
func glideModels(t *testing.T) (base, inpaint string) {
	t.Helper()
	root := fixtures.Dir(t, "openai-small")
	return filepath.Join(root, "glide", "model.pt"), filepath.Join(root, "glide-inpaint", "model.pt")
}

// runSampleArgs runs ddpm with args and fails t on an error.
func runSampleArgs(t *testing.T, args ...string) string {
	t.Helper()
	var so, se bytes.Buffer
	if err := run(context.Background(), args, &so, &se); err != nil {
		t.Fatalf("ddpm %s: %v\n%s", strings.Join(args, " "), err, se.String())
	}
	return se.String()
}

// readRawSample reads a --raw .npy file.
func readRawSample(t *testing.T, path string) ([]int, []float32) {
	t.Helper()
	a, err := npy.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return a.Shape, a.Float32s()
}

// readPNG decodes a PNG file.
func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return im
}

// TestSampleGLIDE samples the small GLIDE model with a prompt for all
// images and with one prompt per image (which sets the count): 32x32
// PNGs, one per image.
func TestSampleGLIDE(t *testing.T) {
	base, _ := glideModels(t)
	dir := t.TempDir()
	out1 := filepath.Join(dir, "one")
	se := runSampleArgs(t, "sample", "--model", base, "--device", "cpu", "--prompt", "a corgi", "--guidance", "3", "--steps", "5", "--n", "2", "--seed", "1", "--out-dir", out1)
	if !strings.Contains(se, "sample: ddpm, 5 steps (ancestral sampling") {
		t.Errorf("stderr %q does not say GLIDE samples with ddpm by default", se)
	}
	out2 := filepath.Join(dir, "two")
	runSampleArgs(t, "sample", "--model", base, "--device", "cpu", "--prompt", "a corgi", "--prompt", "a red car", "--steps", "5", "--seed", "1", "--sampler", "ddim", "--out-dir", out2)
	for _, d := range []string{out1, out2} {
		files, err := filepath.Glob(filepath.Join(d, "*.png"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) != 2 {
			t.Fatalf("%s: %d PNGs, want 2", d, len(files))
		}
		for _, f := range files {
			if b := readPNG(t, f).Bounds(); b.Dx() != 32 || b.Dy() != 32 {
				t.Errorf("%s: %dx%d, want 32x32", f, b.Dx(), b.Dy())
			}
		}
	}
}

// TestSampleGLIDEGuidance checks that --guidance 3 changes the sample of
// the same seed and prompt, and --guidance 1 (the conditional pass alone)
// does not.
func TestSampleGLIDEGuidance(t *testing.T) {
	base, _ := glideModels(t)
	dir := t.TempDir()
	sample := func(name, guidance string) []float32 {
		p := filepath.Join(dir, name+".npy")
		runSampleArgs(t, "sample", "--model", base, "--device", "cpu", "--prompt", "a corgi", "--guidance", guidance, "--steps", "4", "--n", "2", "--seed", "7", "--raw", p)
		shape, v := readRawSample(t, p)
		if len(shape) != 4 || shape[0] != 2 || shape[1] != 3 || shape[2] != 32 || shape[3] != 32 {
			t.Fatalf("--raw shape %v, want [2 3 32 32]", shape)
		}
		return v
	}
	plain, one, guided := sample("plain", "0"), sample("one", "1"), sample("guided", "3")
	var diff float64
	for i := range plain {
		if plain[i] != one[i] {
			t.Fatalf("--guidance 1 differs from unguided at %d: %v vs %v", i, one[i], plain[i])
		}
		d := float64(plain[i] - guided[i])
		diff += d * d
	}
	if diff == 0 {
		t.Fatal("--guidance 3 gives the unguided sample")
	}
	t.Logf("sum of squared differences guided vs unguided: %.3g", diff)
}

// TestSampleGLIDEInpaint inpaints with the small GLIDE inpainting model:
// the kept region (white in --mask) is the init image exactly, in the
// --raw floats and in the PNGs, and the generated region is drawn anew.
func TestSampleGLIDEInpaint(t *testing.T) {
	_, inpaint := glideModels(t)
	dir := t.TempDir()
	initIm := image.NewRGBA(image.Rect(0, 0, 32, 32))
	maskIm := image.NewGray(image.Rect(0, 0, 32, 32))
	for y := range 32 {
		for x := range 32 {
			initIm.Set(x, y, color.RGBA{uint8(8 * x), uint8(8 * y), uint8(255 - 4*(x+y)), 255})
			if x < 16 || y < 8 {
				maskIm.SetGray(x, y, color.Gray{255}) // keep
			}
		}
	}
	initPath, maskPath := filepath.Join(dir, "init.png"), filepath.Join(dir, "mask.png")
	if err := img.WriteFile(initPath, initIm); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteFile(maskPath, maskIm); err != nil {
		t.Fatal(err)
	}
	raw, outDir := filepath.Join(dir, "out.npy"), filepath.Join(dir, "out")
	for _, sampler := range []string{"ddpm", "ddim", "euler"} {
		t.Run(sampler, func(t *testing.T) {
			runSampleArgs(t, "sample", "--model", inpaint, "--device", "cpu", "--prompt", "a corgi", "--guidance", "3", "--steps", "5", "--n", "2", "--seed", "3",
				"--sampler", sampler, "--init-image", initPath, "--mask", maskPath, "--raw", raw, "--out-dir", outDir)
			want, err := img.ReadFile(initPath, 3, 32, 32)
			if err != nil {
				t.Fatal(err)
			}
			_, got := readRawSample(t, raw)
			if len(got) != 2*len(want.Data) {
				t.Fatalf("--raw has %d values, want %d", len(got), 2*len(want.Data))
			}
			changed := 0
			for i := range 2 {
				for j, w := range want.Data {
					p := j % 1024
					keep := p%32 < 16 || p/32 < 8
					g := got[i*len(want.Data)+j]
					if keep && g != w {
						t.Fatalf("image %d value %d (kept) = %v, want the init image's %v", i, j, g, w)
					}
					if !keep && img.ToUint8(g) != img.ToUint8(w) {
						changed++
					}
				}
			}
			if changed == 0 {
				t.Error("the generated region is the init image")
			}
			files, err := filepath.Glob(filepath.Join(outDir, "*.png"))
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != 2 {
				t.Fatalf("%d PNGs, want 2", len(files))
			}
			for _, f := range files {
				im := readPNG(t, f)
				for y := range 32 {
					for x := range 32 {
						if !(x < 16 || y < 8) {
							continue
						}
						r, g, b, _ := im.At(x, y).RGBA()
						wr, wg, wb, _ := initIm.At(x, y).RGBA()
						if r != wr || g != wg || b != wb {
							t.Fatalf("%s: kept pixel (%d, %d) = %d,%d,%d, want %d,%d,%d", f, x, y, r>>8, g>>8, b>>8, wr>>8, wg>>8, wb>>8)
						}
					}
				}
			}
		})
	}
}

// TestSampleGLIDEErrors checks the usage errors of prompts and GLIDE
// models.
func TestSampleGLIDEErrors(t *testing.T) {
	base, _ := glideModels(t)
	out := filepath.Join(t.TempDir(), "x.png")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"prompt on a non-text model", []string{"--prompt", "a corgi"}, "--prompt is for GLIDE"},
		{"class on GLIDE", []string{"--model", base, "--prompt", "a corgi", "--class", "3"}, "--class"},
		{"no prompt on GLIDE", []string{"--model", base}, "give its text with --prompt"},
		{"prompt count", []string{"--model", base, "--n", "3", "--prompt", "a", "--prompt", "b"}, "given 2 times for 3 images"},
		{"classifier on GLIDE", []string{"--model", base, "--prompt", "a", "--classifier", base}, "--classifier"},
		{"uncond with prompt", []string{"--model", base, "--prompt", "a", "--uncond"}, "--uncond"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"sample", "--device", "cpu", "--steps", "2", "--seed", "1", "--out", out}, c.args...)
			var so, se bytes.Buffer
			err := run(context.Background(), args, &so, &se)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want one containing %q", err, c.want)
			}
		})
	}
}
