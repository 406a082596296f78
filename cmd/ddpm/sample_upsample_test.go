package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/pipeline"
)

// Small random-weight networks for the --upsample tests (no shared
// fixtures needed): a GLIDE text model at 8x8 and its upsampler 8 -> 32,
// a class-conditional guided-diffusion model at 16x16 and a SuperResModel
// 16 -> 64.
const (
	upGlideBase = "--image_size 8 --num_channels 32 --num_res_blocks 1 --channel_mult 1 --attention_resolutions 8 --num_head_channels 16 --text_ctx 4 --xf_width 16 --xf_layers 1 --xf_heads 2 --dropout 0"
	upGlideUp   = "--image_size 32 --num_channels 32 --num_res_blocks 1 --channel_mult 1,1,1 --attention_resolutions 8 --num_head_channels 16 --text_ctx 4 --xf_width 16 --xf_layers 1 --xf_heads 2 --dropout 0 --super_res True"
	upADMBase   = "--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,1 --attention_resolutions 8 --num_heads 2 --learn_sigma True --class_cond True"
	upADMUp     = "--large_size 64 --small_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,1 --attention_resolutions 16 --num_heads 2 --learn_sigma True --class_cond True"
)

// upsampleModelFile saves a random-weight network built from adm flags as
// a model file and returns its path.
func upsampleModelFile(t *testing.T, flags string, seed uint64) string {
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

// TestSampleUpsampleGLIDE runs GLIDE's cascade 8 -> 32 from the CLI: --raw
// and --out-dir hold the upsampler's 32x32 images; they are exactly
// pipeline.Upsample of the base stage's --raw samples with the prompt and
// the derived seeds; another base model at the same seed changes them
// (the base images reach the upsampler).
func TestSampleUpsampleGLIDE(t *testing.T) {
	base, base2 := upsampleModelFile(t, upGlideBase, 1), upsampleModelFile(t, upGlideBase, 9)
	up := upsampleModelFile(t, upGlideUp, 2)
	dir := t.TempDir()
	args := []string{"sample", "--device", "cpu", "--prompt", "a corgi", "--n", "2", "--steps", "2", "--seed", "5"}
	low := filepath.Join(dir, "low.npy")
	runSampleArgs(t, append(args, "--model", base, "--raw", low)...)
	raw := filepath.Join(dir, "up.npy")
	se := runSampleArgs(t, append(args, "--model", base, "--upsample", up, "--upsample-steps", "3", "--raw", raw, "--out-dir", filepath.Join(dir, "png"))...)
	if !strings.Contains(se, "upsample: 8x8 -> 32x32") {
		t.Errorf("stderr %q: no upsample line", se)
	}
	shape, got := readRawSample(t, raw)
	if len(shape) != 4 || shape[0] != 2 || shape[1] != 3 || shape[2] != 32 || shape[3] != 32 {
		t.Fatalf("--raw shape %v, want [2 3 32 32]", shape)
	}
	for i := range 2 {
		im := readPNG(t, filepath.Join(dir, "png", fmt.Sprintf("sample%05d.png", i)))
		if b := im.Bounds(); b.Dx() != 32 || b.Dy() != 32 {
			t.Errorf("PNG %d is %dx%d, want 32x32", i, b.Dx(), b.Dy())
		}
	}

	// The same chain through the library.
	lshape, ldata := readRawSample(t, low)
	lb := diffusion.Batch{N: lshape[0], C: lshape[1], H: lshape[2], W: lshape[3], Data: ldata}
	p, err := pipeline.Open(context.Background(), up, pipeline.Options{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want, err := pipeline.Upsample(context.Background(), p, lb, pipeline.UpsampleOptions{Prompts: []string{"a corgi"}, Steps: 3,
		Seed: upsampleSeed(5), Seeds: []uint64{upsampleSeed(5), upsampleSeed(6)}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range want.Data {
		if got[i] != want.Data[i] {
			t.Fatalf("--raw[%d] = %v, pipeline.Upsample of the base samples gives %v", i, got[i], want.Data[i])
		}
	}

	raw2 := filepath.Join(dir, "up2.npy")
	runSampleArgs(t, append(args, "--model", base2, "--upsample", up, "--upsample-steps", "3", "--raw", raw2)...)
	_, got2 := readRawSample(t, raw2)
	d := 0.0
	for i := range got {
		d = max(d, math.Abs(float64(got[i]-got2[i])))
	}
	if d < 1e-3 {
		t.Errorf("another base model at the same seed: upsampled images differ by %g, want > 1e-3", d)
	}
}

// TestSampleUpsampleADM runs guided-diffusion's cascade 16 -> 64 with a
// class-conditional base and upsampler: --class reaches both.
func TestSampleUpsampleADM(t *testing.T) {
	base, up := upsampleModelFile(t, upADMBase, 1), upsampleModelFile(t, upADMUp, 2)
	dir := t.TempDir()
	args := []string{"sample", "--device", "cpu", "--model", base, "--upsample", up, "--n", "1", "--steps", "2", "--upsample-steps", "2", "--seed", "3"}
	a, b := filepath.Join(dir, "a.npy"), filepath.Join(dir, "b.npy")
	runSampleArgs(t, append(args, "--class", "3", "--raw", a)...)
	shape, ga := readRawSample(t, a)
	if len(shape) != 4 || shape[0] != 1 || shape[1] != 3 || shape[2] != 64 || shape[3] != 64 {
		t.Fatalf("--raw shape %v, want [1 3 64 64]", shape)
	}
	runSampleArgs(t, append(args, "--class", "4", "--raw", b)...)
	_, gb := readRawSample(t, b)
	d := 0.0
	for i := range ga {
		d = max(d, math.Abs(float64(ga[i]-gb[i])))
	}
	if d < 1e-4 {
		t.Errorf("another class: upsampled images differ by %g, want > 1e-4", d)
	}
}

// TestSampleUpsampleErrors checks --upsample's usage errors, all raised
// before the base stage runs.
func TestSampleUpsampleErrors(t *testing.T) {
	glideBase, glideUp := upsampleModelFile(t, upGlideBase, 1), upsampleModelFile(t, upGlideUp, 2)
	admUp := upsampleModelFile(t, upADMUp, 3)
	admBase32 := upsampleModelFile(t, strings.Replace(upADMBase, "--image_size 16", "--image_size 32", 1), 4)
	admUncond := upsampleModelFile(t, strings.Replace(upADMBase, " --class_cond True", "", 1), 5)
	out := filepath.Join(t.TempDir(), "x.png")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"not an upsampler", []string{"--model", glideBase, "--prompt", "a", "--upsample", glideBase}, "not a super-resolution model"},
		{"size", []string{"--model", admBase32, "--class", "1", "--upsample", admUp}, "takes 16x16 images to 64x64, but the base stage makes 32x32"},
		{"text upsampler without text", []string{"--model", admBase32, "--class", "1", "--upsample", glideUp}, "conditioned on text, but the base model is not a GLIDE text model"},
		{"GLIDE base, no-text upsampler", []string{"--model", glideBase, "--prompt", "a", "--upsample", admUp}, "takes no text"},
		{"no labels", []string{"--model", admUncond, "--upsample", admUp}, "the upsampler is class-conditional: give --class"},
		{"temp", []string{"--model", glideBase, "--prompt", "a", "--upsample", glideUp, "--upsample-temp", "-1"}, "--upsample-temp -1"},
		{"steps without upsample", []string{"--model", glideBase, "--prompt", "a", "--upsample-steps", "3"}, "need --upsample"},
		{"steps 0", []string{"--model", glideBase, "--prompt", "a", "--upsample", glideUp, "--upsample-steps", "0"}, "want an integer >= 1"},
		{"steps > T", []string{"--model", glideBase, "--prompt", "a", "--upsample", glideUp, "--upsample-steps", "2000"}, "upsample steps 2000"},
		{"1-channel base", []string{"--upsample", glideUp}, "1-channel images"},
		{"upsampler as --model", []string{"--model", glideUp, "--prompt", "a"}, "give its base model with --model and it with --upsample"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"sample", "--device", "cpu", "--steps", "2", "--seed", "1", "--out", out}, c.args...)
			var so, se bytes.Buffer
			err := run(context.Background(), args, &so, &se)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want one containing %q", err, c.want)
			}
			if strings.Contains(se.String(), "sampling 2/2") {
				t.Errorf("the base stage ran before the error: %s", se.String())
			}
		})
	}
}
