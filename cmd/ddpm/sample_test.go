package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
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
