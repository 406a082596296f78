package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/server"
)

// inpaintInputs writes a size x size init image (a colour gradient) and a
// mask keeping (white) the left half and the top quarter into dir, and
// returns their paths and base64 PNGs.
func inpaintInputs(t *testing.T, dir string, size int) (initPath, maskPath, initB64, maskB64 string) {
	t.Helper()
	initIm := image.NewRGBA(image.Rect(0, 0, size, size))
	maskIm := image.NewGray(image.Rect(0, 0, size, size))
	for y := range size {
		for x := range size {
			initIm.Set(x, y, color.RGBA{uint8(255 * x / size), uint8(255 * y / size), uint8(255 - 120*(x+y)/size), 255})
			if x < size/2 || y < size/4 {
				maskIm.SetGray(x, y, color.Gray{255})
			}
		}
	}
	initPath, maskPath = filepath.Join(dir, "init.png"), filepath.Join(dir, "mask.png")
	if err := img.WriteFile(initPath, initIm); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteFile(maskPath, maskIm); err != nil {
		t.Fatal(err)
	}
	b64 := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	return initPath, maskPath, b64(initPath), b64(maskPath)
}

// serveImages posts body to a server over gen and returns its PNGs.
func serveImages(t *testing.T, gen server.Generator, body map[string]any) [][]byte {
	t.Helper()
	s, err := server.New(gen, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	code, out := postServe(t, s.Handler(), body)
	if code != 200 {
		t.Fatalf("status %d: %s", code, out)
	}
	var resp server.ImageResponse
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatal(err)
	}
	var pngs [][]byte
	for _, d := range resp.Data {
		p, err := base64.StdEncoding.DecodeString(d.B64JSON)
		if err != nil {
			t.Fatal(err)
		}
		pngs = append(pngs, p)
	}
	return pngs
}

// samplePNGs runs ddpm sample with args into a fresh --out-dir and returns
// its PNGs in order.
func samplePNGs(t *testing.T, args ...string) [][]byte {
	t.Helper()
	dir := t.TempDir()
	runSampleArgs(t, append(args, "--device", "cpu", "--out-dir", dir)...)
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	sort.Strings(files)
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestServeInpaintMatchesSample: an inpainting request to ddpm serve gives
// the PNGs that ddpm sample --init-image --mask gives for the same model,
// seed, steps and sampler: on a class-conditional model (the sampler
// keeps the known region: RePaint with ddpm, replacement with ddim) and
// on GLIDE's inpainting model (its inpaint inputs and the prompt; the
// known region is then the init image exactly).
func TestServeInpaintMatchesSample(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	check := func(t *testing.T, srv, cli [][]byte, n int) {
		t.Helper()
		if len(srv) != n || len(cli) != n {
			t.Fatalf("server %d images, sample %d; want %d", len(srv), len(cli), n)
		}
		for i := range srv {
			if !bytes.Equal(srv[i], cli[i]) {
				t.Errorf("image %d: the server's PNG and ddpm sample's differ", i)
			}
		}
	}
	t.Run("tiny", func(t *testing.T) {
		model := tinyModelFile(t)
		_, _, initB64, maskB64 := inpaintInputs(t, t.TempDir(), 8)
		dir := t.TempDir()
		initPath, maskPath, _, _ := inpaintInputs(t, dir, 8)
		gen, release, err := loadServeModel(ctx, serveOptions{model: model, device: "cpu"}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if !gen.Info().Inpaint {
			t.Fatal("the served model does not say it inpaints")
		}
		for _, sampler := range []string{"ddpm", "ddim"} {
			t.Run(sampler, func(t *testing.T) {
				srv := serveImages(t, gen, map[string]any{"n": 2, "seed": 9, "steps": 4, "sampler": sampler, "class_label": 1,
					"init_image": initB64, "mask": "data:image/png;base64," + maskB64})
				cli := samplePNGs(t, "sample", "--model", model, "--n", "2", "--seed", "9", "--steps", "4", "--sampler", sampler,
					"--class", "1", "--init-image", initPath, "--mask", maskPath)
				check(t, srv, cli, 2)
			})
		}
	})
	t.Run("glide-inpaint", func(t *testing.T) {
		_, inpaint := glideModels(t)
		dir := t.TempDir()
		initPath, maskPath, initB64, maskB64 := inpaintInputs(t, dir, 32)
		gen, release, err := loadServeModel(ctx, serveOptions{model: inpaint, device: "cpu"}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if info := gen.Info(); !info.Text || !info.Inpaint {
			t.Fatalf("info %+v: want a text model that inpaints", info)
		}
		srv := serveImages(t, gen, map[string]any{"n": 2, "seed": 3, "steps": 3, "sampler": "ddpm", "prompt": "a corgi", "guidance_scale": 3,
			"init_image": initB64, "mask": maskB64})
		cli := samplePNGs(t, "sample", "--model", inpaint, "--n", "2", "--seed", "3", "--steps", "3", "--sampler", "ddpm",
			"--prompt", "a corgi", "--guidance", "3", "--init-image", initPath, "--mask", maskPath)
		check(t, srv, cli, 2)
		want := readPNG(t, initPath)
		for i, p := range srv {
			im, err := png.Decode(bytes.NewReader(p))
			if err != nil {
				t.Fatal(err)
			}
			changed := 0
			for y := range 32 {
				for x := range 32 {
					r, g, b, _ := im.At(x, y).RGBA()
					wr, wg, wb, _ := want.At(x, y).RGBA()
					same := r == wr && g == wg && b == wb
					if (x < 16 || y < 8) && !same {
						t.Fatalf("image %d: kept pixel (%d, %d) = %d,%d,%d, want the init image's %d,%d,%d", i, x, y, r>>8, g>>8, b>>8, wr>>8, wg>>8, wb>>8)
					}
					if !same {
						changed++
					}
				}
			}
			if changed == 0 {
				t.Errorf("image %d: the generated region is the init image", i)
			}
		}
	})
}

// TestServeInpaintFlags: ddpm serve's default body limit makes room for
// init_image and mask (0 lets server.DefaultMaxBody decide).
func TestServeInpaintFlags(t *testing.T) {
	var stderr strings.Builder
	o, err := parseServe([]string{"--test-fake-model"}, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if o.server.MaxBodyBytes != 0 {
		t.Errorf("--max-body default %d, want 0 (server.DefaultMaxBody)", o.server.MaxBodyBytes)
	}
	if got := server.DefaultMaxBody(server.ModelInfo{ImageSize: 64, Inpaint: true}); got <= 64<<10 {
		t.Errorf("DefaultMaxBody of a 64x64 inpainting model = %d, want more than 64 KiB", got)
	}
}
