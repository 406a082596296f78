package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// tinyModelFile writes a small random class-conditional model file.
func tinyModelFile(t *testing.T) string {
	t.Helper()
	k, null := 3, 2
	cfg := unet.Config{SampleSize: 8, InChannels: 1, OutChannels: 1, TimeEmbeddingType: "positional", FlipSinToCos: true,
		LayersPerBlock: 1, MidBlockScaleFactor: 1, DownsamplePadding: 1, ActFn: "silu", NormNumGroups: 4, NormEps: 1e-6,
		ResnetTimeScaleShift: "default", BlockOutChannels: []int{8, 8},
		DownBlockTypes: []string{"DownBlock2D", "AttnDownBlock2D"}, UpBlockTypes: []string{"AttnUpBlock2D", "UpBlock2D"},
		NumClassEmbeds: &k, NullClass: &null}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := unet.New(cfg, cpu, 1)
	if err != nil {
		t.Fatal(err)
	}
	dj, _ := json.Marshal(diffusion.DefaultConfig())
	path := filepath.Join(t.TempDir(), "tiny.safetensors")
	ts, err := m.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	if err := weights.WriteModel(path, &weights.Model{UNetConfig: cfg.JSON(), DiffusionConfig: dj, ClassNames: []string{"a", "b"}, Tensors: ts}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSampleDeterministic(t *testing.T) {
	model := tinyModelFile(t)
	dir := t.TempDir()
	gen := func(name string, extra ...string) []byte {
		out := filepath.Join(dir, name)
		args := append([]string{"sample", "--model", model, "--n", "4", "--steps", "5", "--out", out}, extra...)
		var so, se bytes.Buffer
		if err := run(context.Background(), args, &so, &se); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, se.String())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, c := gen("a.png", "--seed", "1"), gen("b.png", "--seed", "1"), gen("c.png", "--seed", "2")
	if !bytes.Equal(a, b) {
		t.Error("the same seed gave different PNG bytes")
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds gave the same image")
	}
	gen("g.png", "--seed", "1", "--class", "1", "--guidance", "2", "--sampler", "ddpm")
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"sample", "--model", model, "--n", "3", "--steps", "3", "--out-dir", filepath.Join(dir, "each")}, &so, &se); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "each", "*.png")); len(files) != 3 {
		t.Errorf("--out-dir wrote %d files, want 3", len(files))
	}
}

func TestSampleErrors(t *testing.T) {
	model := tinyModelFile(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--n", "0"}, "--n"},
		{[]string{"--class", "5"}, "--class"},
		{[]string{"--class", "1,2"}, "--class"},
		{[]string{"--sampler", "plms"}, "--sampler"},
		{[]string{"--sampler", "ddim", "--karras"}, "Karras"},
		{[]string{"--sampler", "euler", "--eta", "0.5"}, "eta"},
		{[]string{"--mask", "m.png"}, "--init-image"},
		{[]string{"--device", "tpu"}, "tpu"},
		{[]string{"--steps", "5000"}, "steps"},
	} {
		var so, se bytes.Buffer
		args := append([]string{"sample", "--model", model, "--out", filepath.Join(t.TempDir(), "x.png")}, tc.args...)
		err := run(context.Background(), args, &so, &se)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

// TestEnormousModelFile: a model file whose config asks for tens of GB
// (with a few small tensors) fails in ddpm sample quickly, with little
// memory and a clear error, before any network is built.
func TestEnormousModelFile(t *testing.T) {
	cfg := []byte(`{"block_out_channels": [8192, 8192, 8192], "layers_per_block": 16, "in_channels": 1, "out_channels": 1,
		"down_block_types": ["DownBlock2D","DownBlock2D","DownBlock2D"], "up_block_types": ["UpBlock2D","UpBlock2D","UpBlock2D"]}`)
	path := filepath.Join(t.TempDir(), "enormous.safetensors")
	if err := weights.WriteModel(path, &weights.Model{UNetConfig: cfg, Tensors: map[string]weights.Tensor{
		"conv_in.weight": {Shape: []int{2}, Data: []float32{1, 2}}}}); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	var so, se bytes.Buffer
	err := run(context.Background(), []string{"sample", "--model", path, "--seed", "1", "--out", filepath.Join(t.TempDir(), "x.png")}, &so, &se)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "parameters") {
		t.Fatalf("enormous model: err %v, want a clear error about its parameters", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %v, want < 30 s", d)
	}
	if grew := after.Sys - before.Sys; grew > 1<<30 {
		t.Errorf("memory grew by %d MiB", grew>>20)
	}
	t.Logf("refused in %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestSampleMatchesServer: ddpm sample and the server's generator give
// byte-identical PNGs for the same request (model, class, steps, sampler,
// seed: image i uses seed+i in both).
func TestSampleMatchesServer(t *testing.T) {
	model := tinyModelFile(t)
	dir := t.TempDir()
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"sample", "--model", model, "--n", "3", "--steps", "5", "--sampler", "ddpm",
		"--class", "1", "--seed", "40", "--guidance", "2", "--device", "cpu", "--out-dir", dir}, &so, &se); err != nil {
		t.Fatalf("%v\n%s", err, se.String())
	}
	p, err := pipeline.Open(context.Background(), model, pipeline.Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info, err := serveInfo(p.Source, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	gen, err := server.NewDiffusionGenerator(p.Model, p.Diffusion, info)
	if err != nil {
		t.Fatal(err)
	}
	items := []server.Item{{Seed: 40, Class: 1}, {Seed: 41, Class: 1}, {Seed: 42, Class: 1}}
	imgs, err := gen.Generate(context.Background(), server.Settings{Steps: 5, Sampler: diffusion.SamplerDDPM, Guidance: 2}, items, nil)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	if len(files) != 3 {
		t.Fatalf("CLI wrote %d files", len(files))
	}
	for i, im := range imgs {
		var buf bytes.Buffer
		if err := img.EncodePNG(&buf, im); err != nil {
			t.Fatal(err)
		}
		cli, err := os.ReadFile(files[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cli, buf.Bytes()) {
			t.Errorf("image %d (seed %d): the CLI's PNG and the server's differ", i, 40+i)
		}
	}
}
