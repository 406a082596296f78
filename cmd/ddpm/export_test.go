package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/npy"

	"github.com/ddpm-go/ddpm/weights"
)

func TestExportCheckpoint(t *testing.T) {
	model := tinyModelFile(t)
	src, err := weights.Open(model)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "ckpt.safetensors")
	c := &weights.Checkpoint{Model: src.Model, Raw: src.Tensors, AdamM: src.Tensors, AdamV: src.Tensors, TrainState: []byte(`{"step":1}`)}
	if err := weights.WriteCheckpoint(ckpt, c); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "m.safetensors")
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"export", ckpt, out}, &so, &se); err != nil {
		t.Fatal(err)
	}
	got, err := weights.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Format == src.Format && len(got.Tensors) != len(src.Tensors) {
		t.Errorf("exported %d tensors, want %d", len(got.Tensors), len(src.Tensors))
	}
	if _, err := weights.ReadCheckpoint(out); err == nil {
		t.Error("the exported model file still carries training state")
	}
	if err := run(context.Background(), []string{"export", ckpt}, &so, &se); err == nil {
		t.Error("one argument: no error")
	}
}

// TestExportToDirectory: an existing folder (or a trailing slash) as OUT
// receives OUT/model.safetensors; flags may follow the arguments; -h
// succeeds.
func TestExportToDirectory(t *testing.T) {
	model := tinyModelFile(t)
	dir := t.TempDir()
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"export", model, dir}, &so, &se); err != nil {
		t.Fatalf("export into a folder: %v", err)
	}
	if _, err := weights.Open(filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "new") + string(os.PathSeparator)
	if err := run(context.Background(), []string{"export", model, sub}, &so, &se); err != nil {
		t.Fatalf("export into a new folder with a trailing slash: %v", err)
	}
	if _, err := weights.Open(filepath.Join(sub, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"export", "-h"}, &so, &se); !errors.Is(err, flag.ErrHelp) || exitCode(err) != 0 {
		t.Fatalf("export -h: err %v, exit code %d; want flag.ErrHelp and 0", err, exitCode(err))
	}
	if strings.Contains(se.String(), "help requested") {
		t.Errorf("-h printed %q", se.String())
	}
}

// TestExportDiffusers writes a diffusers pipeline folder and reads it
// back: every tensor equal, the class names in unet/config.json, and the
// scheduler config describing the same betas and parameterisation.
func TestExportDiffusers(t *testing.T) {
	model := tinyModelFile(t)
	out := filepath.Join(t.TempDir(), "pipe")
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"export", model, out, "--diffusers"}, &so, &se); err != nil {
		t.Fatalf("export --diffusers: %v\n%s", err, se.String())
	}
	src, _ := weights.Open(model)
	got, err := weights.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Format != weights.FormatDiffusersPipeline || len(got.Tensors) != len(src.Tensors) {
		t.Fatalf("read back format %v with %d tensors, want a pipeline with %d", got.Format, len(got.Tensors), len(src.Tensors))
	}
	for name, tn := range src.Tensors {
		if !slices.Equal(got.Tensors[name].Data, tn.Data) {
			t.Fatalf("tensor %s differs after the round trip", name)
		}
	}
	var cfg struct {
		Class string   `json:"_class_name"`
		Names []string `json:"ddpm_class_names"`
	}
	if err := json.Unmarshal(got.UNetConfig, &cfg); err != nil || cfg.Class != "UNet2DModel" || !slices.Equal(cfg.Names, src.ClassNames) {
		t.Fatalf("unet/config.json: class %q, names %v (err %v); want UNet2DModel and %v", cfg.Class, cfg.Names, err, src.ClassNames)
	}
	dc, _, err := diffusion.FromDiffusers(got.SchedulerConfig)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := diffusion.New(diffusion.DefaultConfig())
	back, err := diffusion.New(dc)
	if err != nil {
		t.Fatal(err)
	}
	wb, gb := want.Schedule().Betas, back.Schedule().Betas
	for i := range wb {
		if math.Abs(wb[i]-gb[i]) > 1e-12 {
			t.Fatalf("beta[%d] = %v after the round trip, want %v", i, gb[i], wb[i])
		}
	}
	if dc.Prediction != want.Config().Prediction || dc.Variance != want.Config().Variance || dc.ClipDenoised != want.Config().ClipDenoised {
		t.Fatalf("scheduler config %+v does not describe %+v", dc, want.Config())
	}
	// A folder that holds something else is refused.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o644)
	if err := run(context.Background(), []string{"export", "--diffusers", model, other}, &so, &se); err == nil {
		t.Fatal("export --diffusers into an unrelated folder: no error")
	}
}

// TestExportDiffusersTwin exports the embedded default model as a
// diffusers pipeline and runs it with the PyTorch twin of diffusers'
// UNet2DModel (pytorch/unet2d.py, bit-exact with diffusers 0.21.4): the
// prediction matches ddpm's to a relative L2 under 1e-5, the null class
// included. Skips where Debian's python3-torch is absent (CI installs it).
func TestExportDiffusersTwin(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, numpy").Run(); err != nil {
		t.Skipf("python3 with torch and numpy not available: %v", err)
	}
	dir := t.TempDir()
	pipe := filepath.Join(dir, "pipe")
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"export", "--diffusers", weights.DefaultPath, pipe}, &so, &se); err != nil {
		t.Fatalf("export: %v\n%s", err, se.String())
	}
	r := rand.New(rand.NewPCG(4, 4))
	x := make([]float32, 4*32*32)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	arr := func(a *npy.Array, err error) *npy.Array {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	write := func(name string, a *npy.Array) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := npy.WriteFile(p, a); err != nil {
			t.Fatal(err)
		}
		return p
	}
	xp := write("x.npy", arr(npy.NewFloat32([]int{4, 1, 32, 32}, x)))
	tp := write("t.npy", arr(npy.NewInt64([]int{4}, []int64{0, 250, 600, 999})))
	// The embedded model's null class is 10 (label -1 in ddpm).
	yp := write("y.npy", arr(npy.NewInt64([]int{4}, []int64{3, 7, 10, 0})))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	twinOut := filepath.Join(dir, "twin.npy")
	if out, err := exec.CommandContext(ctx, py, filepath.Join("..", "..", "pytorch", "check_export.py"), pipe, xp, tp, yp, twinOut).CombinedOutput(); err != nil {
		t.Fatalf("check_export.py: %v\n%s", err, out)
	}
	goOut := filepath.Join(dir, "go.npy")
	if err := run(context.Background(), []string{"predict", "--model", pipe, "--input", xp, "--timesteps", "0,250,600,999",
		"--class", "3,7,-1,0", "--output", goOut, "--device", "cpu"}, &so, &se); err != nil {
		t.Fatalf("predict: %v\n%s", err, se.String())
	}
	a, err := npy.ReadFile(twinOut)
	if err != nil {
		t.Fatal(err)
	}
	b, err := npy.ReadFile(goOut)
	if err != nil {
		t.Fatal(err)
	}
	want, got := a.Float32s(), b.Float32s()
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	e := math.Sqrt(num / den)
	t.Logf("ddpm vs the PyTorch twin on the exported pipeline: relative L2 %.3g", e)
	if e > 1e-5 {
		t.Fatalf("relative L2 %.3g > 1e-5", e)
	}
}

// TestExportAverage: --average writes the mean of the sources' weights (a
// model averaged with itself is itself; with a checkpoint of its doubled
// weights, 1.5 times it); too few sources or another architecture are
// usage errors.
func TestExportAverage(t *testing.T) {
	model := tinyModelFile(t)
	src, err := weights.Open(model)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	doubled := src.Model
	doubled.Tensors = map[string]weights.Tensor{}
	for name, tn := range src.Tensors {
		d := make([]float32, len(tn.Data))
		for i, v := range tn.Data {
			d[i] = 2 * v
		}
		doubled.Tensors[name] = weights.Tensor{Shape: tn.Shape, Data: d}
	}
	ckpt := filepath.Join(dir, "ckpt.safetensors")
	c := &weights.Checkpoint{Model: doubled, Raw: doubled.Tensors, AdamM: doubled.Tensors, AdamV: doubled.Tensors, TrainState: []byte(`{"step":1}`)}
	if err := weights.WriteCheckpoint(ckpt, c); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "soup.safetensors")
	var so, se bytes.Buffer
	if err := run(context.Background(), []string{"export", "--average", model, ckpt, out}, &so, &se); err != nil {
		t.Fatal(err)
	}
	got, err := weights.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	for name, tn := range src.Tensors {
		for i, v := range tn.Data {
			if g := got.Tensors[name].Data[i]; g != (v+2*v)/2 {
				t.Fatalf("%s[%d] = %v, want the mean %v", name, i, g, (v+2*v)/2)
			}
		}
	}
	for _, args := range [][]string{
		{"export", "--average", model, out},                                // one source
		{"export", "--average", model, tinyRGBModelFile(t, 8, false), out}, // another architecture
		{"export", model, ckpt, out},                                       // several sources without --average
	} {
		if err := run(context.Background(), args, &so, &se); err == nil {
			t.Errorf("%v: no error", args)
		} else if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %v is not a usage error", args, err)
		}
	}
}
