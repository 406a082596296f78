package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// tinyRGBModelFile is tinyModelFile's diffusers UNet with RGB images of
// size x size, class-conditional (3 classes and a null class) or not.
func tinyRGBModelFile(t *testing.T, size int, classes bool) string {
	t.Helper()
	k, null := 4, 3
	cfg := unet.Config{SampleSize: size, InChannels: 3, OutChannels: 3, TimeEmbeddingType: "positional", FlipSinToCos: true,
		LayersPerBlock: 1, MidBlockScaleFactor: 1, DownsamplePadding: 1, ActFn: "silu", NormNumGroups: 4, NormEps: 1e-6,
		ResnetTimeScaleShift: "default", BlockOutChannels: []int{8, 8},
		DownBlockTypes: []string{"DownBlock2D", "AttnDownBlock2D"}, UpBlockTypes: []string{"AttnUpBlock2D", "UpBlock2D"},
		NumClassEmbeds: &k, NullClass: &null}
	if !classes {
		cfg.NumClassEmbeds, cfg.NullClass = nil, nil
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := unet.New(cfg, cpu, 3)
	if err != nil {
		t.Fatal(err)
	}
	dj, _ := json.Marshal(diffusion.DefaultConfig())
	ts, err := m.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tinyrgb.safetensors")
	if err := weights.WriteModel(path, &weights.Model{UNetConfig: cfg.JSON(), DiffusionConfig: dj, Tensors: ts}); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveModelsMeta reads the model object of /v1/models from h: its ddpm
// extension, with its id under "id".
func serveModelsMeta(t *testing.T, h http.Handler) map[string]any {
	t.Helper()
	ts := httptest.NewServer(h)
	defer ts.Close()
	r, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var body struct {
		Data []struct {
			ID   string         `json:"id"`
			DDPM map[string]any `json:"ddpm"`
		} `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Data) != 1 {
		t.Fatalf("/v1/models: %v, %+v", err, body)
	}
	body.Data[0].DDPM["id"] = body.Data[0].ID
	return body.Data[0].DDPM
}

// TestServeUpsampleMatchesSample: ddpm serve --upsample answers the
// upsampler's 32x32 images (so says /v1/models), byte-identical to ddpm
// sample --upsample's PNGs for the same model, prompt, seed and steps;
// an image does not depend on its batch (a request for the second seed
// alone gives the second image); inpainting requests are a 422; a
// cluster's api replica describes the chain without loading it; progress
// counts the upsampler's steps after the base model's.
func TestServeUpsampleMatchesSample(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	base, up := upsampleModelFile(t, upGlideBase, 1), upsampleModelFile(t, upGlideUp, 2)
	o := serveOptions{model: base, device: "cpu", up: upsampleFlags{model: up, steps: 3}}
	gen, release, err := loadServeModel(ctx, o, log)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	info := gen.Info()
	if !info.Text || info.ImageSize != 32 || info.Inpaint {
		t.Fatalf("info %+v: want a 32x32 text model that does not inpaint", info)
	}

	cli := samplePNGs(t, "sample", "--model", base, "--upsample", up, "--upsample-steps", "3", "--prompt", "a corgi",
		"--n", "2", "--steps", "2", "--seed", "5", "--guidance", "3")
	srv := serveImages(t, gen, map[string]any{"n": 2, "seed": 5, "steps": 2, "sampler": "ddpm", "prompt": "a corgi", "guidance_scale": 3})
	if len(srv) != 2 || len(cli) != 2 {
		t.Fatalf("server %d images, sample %d; want 2", len(srv), len(cli))
	}
	for i := range srv {
		im, err := png.Decode(bytes.NewReader(srv[i]))
		if err != nil {
			t.Fatal(err)
		}
		if b := im.Bounds(); b.Dx() != 32 || b.Dy() != 32 {
			t.Errorf("image %d is %dx%d, want the upsampler's 32x32", i, b.Dx(), b.Dy())
		}
		if !bytes.Equal(srv[i], cli[i]) {
			t.Errorf("image %d (seed %d): the server's PNG and ddpm sample --upsample's differ", i, 5+i)
		}
	}
	if bytes.Equal(srv[0], srv[1]) {
		t.Error("the two images are the same")
	}
	one := serveImages(t, gen, map[string]any{"n": 1, "seed": 6, "steps": 2, "sampler": "ddpm", "prompt": "a corgi", "guidance_scale": 3})
	if len(one) != 1 || !bytes.Equal(one[0], srv[1]) {
		t.Error("seed 6 alone: not the second image of the batch of two")
	}

	s, err := server.New(gen, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	meta := serveModelsMeta(t, s.Handler())
	if meta["image_size"] != 32.0 || meta["inpaint"] != false || meta["id"] != info.Name || meta["upsample_steps"] != 3.0 {
		t.Errorf("/v1/models: %v: want image_size 32, inpaint false, upsample_steps 3, id %q", meta, info.Name)
	}
	_, _, initB64, maskB64 := inpaintInputs(t, t.TempDir(), 32)
	code, msg := postServe(t, s.Handler(), map[string]any{"prompt": "a corgi", "steps": 2, "init_image": initB64, "mask": maskB64})
	if code != 422 || !strings.Contains(msg, "does not inpaint") {
		t.Errorf("inpainting request: status %d: %s; want 422 saying the server does not inpaint", code, msg)
	}

	ri, err := serveModelInfo(ctx, o, log)
	if err != nil || ri.ImageSize != 32 || ri.Name != info.Name || ri.Inpaint || ri.UpsampleSteps != 3 {
		t.Errorf("serveModelInfo: %+v, %v; want %q at 32x32 with 3 upsampling steps, not inpainting", ri, err, info.Name)
	}

	// Progress: the base stage's 2 steps, then the upsampler's 3, out of 5.
	var steps []int
	if _, err := gen.Generate(ctx, server.Settings{Steps: 2, Sampler: diffusion.SamplerDDPM, Guidance: 3},
		[]server.Item{{Seed: 5, Prompt: "a corgi", Class: -1}}, func(step, total int) {
			steps = append(steps, step)
			if total != 5 {
				t.Errorf("progress total %d, want 2 + 3", total)
			}
		}); err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2, 3, 4, 5}; !slices.Equal(steps, want) {
		t.Errorf("progress %v, want %v", steps, want)
	}
}

// TestServeUpsampleClass: a class-conditional base model followed by a
// class-conditional guided-diffusion upsampler (16 -> 64): the request's
// class_label reaches the upsampler, as ddpm sample --class passes it.
func TestServeUpsampleClass(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	base, up := tinyRGBModelFile(t, 16, true), upsampleModelFile(t, upADMUp, 2)
	gen, release, err := loadServeModel(ctx, serveOptions{model: base, device: "cpu", up: upsampleFlags{model: up, steps: 2}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if info := gen.Info(); info.ImageSize != 64 || info.NumClasses != 3 {
		t.Fatalf("info %+v: want 64x64 with 3 classes", info)
	}
	req := map[string]any{"n": 1, "seed": 3, "steps": 2, "sampler": "ddim", "class_label": 1}
	srv := serveImages(t, gen, req)
	cli := samplePNGs(t, "sample", "--model", base, "--upsample", up, "--upsample-steps", "2", "--class", "1",
		"--n", "1", "--steps", "2", "--seed", "3", "--sampler", "ddim")
	if len(srv) != 1 || len(cli) != 1 || !bytes.Equal(srv[0], cli[0]) {
		t.Errorf("class 1: the server's PNG and ddpm sample --upsample's differ (%d and %d images)", len(srv), len(cli))
	}
	// Another class gives another image.
	req["class_label"] = 2
	if other := serveImages(t, gen, req); bytes.Equal(other[0], srv[0]) {
		t.Error("class 2 gives class 1's image")
	}
}

// TestServeUpsampleErrors: ddpm serve --upsample's mistakes are errors at
// startup (flags, then the models), before anything is served.
func TestServeUpsampleErrors(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	glideBase, glideUp := upsampleModelFile(t, upGlideBase, 1), upsampleModelFile(t, upGlideUp, 2)
	glideBase16 := upsampleModelFile(t, strings.NewReplacer("--image_size 8", "--image_size 16", "--channel_mult 1 ", "--channel_mult 1,1 ").Replace(upGlideBase), 3)
	admUp := upsampleModelFile(t, upADMUp, 4)
	rgb8, rgb16 := tinyRGBModelFile(t, 8, true), tinyRGBModelFile(t, 16, true)
	rgbUncond := tinyRGBModelFile(t, 16, false)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"steps without upsample", []string{"--model", glideBase, "--upsample-steps", "3"}, "need --upsample"},
		{"temp", []string{"--model", glideBase, "--upsample", glideUp, "--upsample-temp", "-1"}, "--upsample-temp -1"},
		{"steps 0", []string{"--model", glideBase, "--upsample", glideUp, "--upsample-steps", "0"}, "want an integer >= 1"},
		{"fake", []string{"--test-fake-model", "--upsample", glideUp}, "exclude each other"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			_, err := parseServe(c.args, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), c.want) {
				t.Fatalf("err %v (%s), want one containing %q", err, stderr.String(), c.want)
			}
		})
	}
	cases := []struct {
		name     string
		base, up string
		steps    int
		want     string
	}{
		{"not an upsampler", glideBase, glideBase, 3, "not a super-resolution model"},
		{"diffusers upsampler", glideBase, rgb16, 3, "not a super-resolution model"},
		{"size", glideBase16, glideUp, 3, "takes 8x8 images to 32x32, but the base model makes 16x16"},
		{"text upsampler without text", rgb8, glideUp, 3, "conditioned on text, but the base model is not a GLIDE text model"},
		{"GLIDE base, no-text upsampler", glideBase16, admUp, 3, "which takes no text"},
		{"unconditional base", rgbUncond, admUp, 3, "the base model is unconditional"},
		{"more classes", rgb16, upsampleModelFile(t, upADMUp+" --num_classes 2", 6), 3, "the base model has 3 classes, the class-conditional upsampler 2"},
		{"steps > T", glideBase, glideUp, 2000, "--upsample-steps 2000: must be in 1..1000"},
		{"1-channel base", tinyModelFile(t), glideUp, 3, "1-channel images"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := serveOptions{model: c.base, device: "cpu", up: upsampleFlags{model: c.up, steps: c.steps}}
			if _, _, err := loadServeModel(ctx, o, log); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("loadServeModel: err %v, want one containing %q", err, c.want)
			}
			if _, err := serveModelInfo(ctx, o, log); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("serveModelInfo: err %v, want one containing %q", err, c.want)
			}
		})
	}
}
