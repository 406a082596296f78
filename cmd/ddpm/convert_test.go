package main

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/internal/fixtures"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/npy"
)

func relL2NPY(t *testing.T, got, want string) float64 {
	t.Helper()
	g, err := npy.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := npy.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	gs, ws := g.Float32s(), w.Float32s()
	if len(gs) != len(ws) {
		t.Fatalf("%s has %d values, %s %d", got, len(gs), want, len(ws))
	}
	var num, den float64
	for i := range ws {
		d := float64(gs[i] - ws[i])
		num += d * d
		den += float64(ws[i]) * float64(ws[i])
	}
	return notNaN(math.Sqrt(num / den))
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var so, se bytes.Buffer
	err := run(context.Background(), args, &so, &se)
	return so.String() + se.String(), err
}

// TestPredictOpenAI runs `ddpm predict` on the openai-small fixtures
// (guided-diffusion's UNet and classifier, as model.pt with args.json
// and after `ddpm convert`): the UNet output, the classifier's logits and
// its guidance gradient (--grad) reproduce guided-diffusion's to a
// relative L2 error under 1e-4.
func TestPredictOpenAI(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	tmp := t.TempDir()
	for _, name := range []string{"adm", "classifier"} {
		dir := filepath.Join(root, name)
		conv := filepath.Join(tmp, name+".safetensors")
		if out, err := runCLI(t, "convert", filepath.Join(dir, "model.pt"), conv); err != nil {
			t.Fatalf("convert %s: %v\n%s", name, err, out)
		}
		for _, model := range []string{filepath.Join(dir, "model.pt"), conv} {
			out := filepath.Join(tmp, name+"-out.npy")
			args := []string{"predict", "--device", "cpu", "--model", model, "--input", filepath.Join(dir, "x.npy"),
				"--timesteps", "10,700", "--class", "2,9", "--output", out}
			grad := filepath.Join(tmp, name+"-grad.npy")
			if name == "classifier" {
				args = append(args, "--grad", grad)
			}
			if log, err := runCLI(t, args...); err != nil {
				t.Fatalf("predict %s: %v\n%s", model, err, log)
			}
			checks := map[string]string{out: "out.npy"}
			if name == "classifier" {
				checks = map[string]string{out: "logits.npy", grad: "grad_log_p.npy"}
			}
			for got, want := range checks {
				e := relL2NPY(t, got, filepath.Join(dir, want))
				t.Logf("%s %s: relative L2 %.3g", filepath.Base(model), want, e)
				if e > 1e-4 {
					t.Errorf("%s: %s relative L2 %.3g > 1e-4", model, want, e)
				}
			}
		}
	}
}

// TestPredictLowRes runs a SuperRes model file through `ddpm predict
// --low-res` and compares with adm's PredictLowRes on a CPU with the
// inference options the command's pipeline sets (ConstWeights: Winograd
// convolutions where they are faster).
func TestPredictLowRes(t *testing.T) {
	cfg, err := adm.ParseFlags("--large_size 64 --small_size 16 --num_channels 32 --num_res_blocks 1 --attention_resolutions 16 --num_heads 2")
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{ConstWeights: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := adm.New(cfg, cpu, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tmp := t.TempDir()
	model := filepath.Join(tmp, "sr.safetensors")
	if err := m.Save(model); err != nil {
		t.Fatal(err)
	}
	x, low := diffusion.NewBatch(1, 3, 64, 64), diffusion.NewBatch(1, 3, 16, 16)
	for i := range x.Data {
		x.Data[i] = float32(math.Sin(float64(i)))
	}
	for i := range low.Data {
		low.Data[i] = float32(math.Cos(float64(i)))
	}
	write := func(name string, b diffusion.Batch) string {
		p := filepath.Join(tmp, name)
		a, err := npy.NewFloat32([]int{b.N, b.C, b.H, b.W}, b.Data)
		if err == nil {
			err = npy.WriteFile(p, a)
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	xs, ls := write("x.npy", x), write("low.npy", low)
	want, err := m.PredictLowRes(context.Background(), x, []float64{3}, nil, low)
	if err != nil {
		t.Fatal(err)
	}
	ws := write("want.npy", want)
	out := filepath.Join(tmp, "out.npy")
	if log, err := runCLI(t, "predict", "--device", "cpu", "--model", model, "--input", xs, "--low-res", ls, "--timesteps", "3", "--output", out); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if e := relL2NPY(t, out, ws); e > 1e-6 {
		t.Errorf("relative L2 %.3g > 1e-6", e)
	}
	if _, err := runCLI(t, "predict", "--device", "cpu", "--model", model, "--input", xs, "--timesteps", "3", "--output", out); err == nil || !strings.Contains(err.Error(), "--low-res") {
		t.Errorf("no --low-res: error %v", err)
	}
}

// TestConvertErrors: malformed checkpoints, configs that do not fit and
// bad command lines give errors naming the file and what is wrong.
func TestConvertErrors(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	tmp := t.TempDir()
	pt := filepath.Join(root, "adm", "model.pt")
	data, err := os.ReadFile(pt)
	if err != nil {
		t.Fatal(err)
	}
	args, err := os.ReadFile(filepath.Join(root, "adm", "args.json"))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(dir, name string, b []byte, withArgs []byte) string {
		d := filepath.Join(tmp, dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if withArgs != nil {
			if err := os.WriteFile(filepath.Join(d, "args.json"), withArgs, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	classifierArgs, err := os.ReadFile(filepath.Join(root, "classifier", "args.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, "out.safetensors")
	for _, tc := range []struct {
		name  string
		args  []string
		want  []string
		usage bool
	}{
		{"garbage", []string{"convert", mk("garbage", "model.pt", []byte("not a checkpoint at all"), args), out}, []string{"model.pt"}, false},
		{"truncated", []string{"convert", mk("trunc", "model.pt", data[:len(data)/2], args), out}, []string{"model.pt"}, false},
		{"wrong config", []string{"convert", mk("wrong", "model.pt", data, classifierArgs), out}, []string{"model.pt", "EncoderUNetModel"}, false},
		{"no config", []string{"convert", mk("noargs", "model.pt", data, nil), out}, []string{"args.json", "--config"}, false},
		{"bad config flags", []string{"convert", "--config", "--image_size 64 --nope 1", pt, out}, []string{"nope"}, false},
		{"missing file", []string{"convert", filepath.Join(tmp, "missing", "64x64_diffusion.pt"), out}, []string{"64x64_diffusion.pt"}, false},
		{"not .pt", []string{"convert", "model.safetensors", out}, []string{".pt"}, true},
		{"one argument", []string{"convert", pt}, []string{"IN.pt and OUT.safetensors"}, true},
		{"predict garbage", []string{"predict", "--device", "cpu", "--model", filepath.Join(tmp, "garbage", "model.pt"), "--input", filepath.Join(root, "adm", "x.npy"), "--timesteps", "1", "--output", out}, []string{"--model", "model.pt"}, false},
		{"grad on a UNet", []string{"predict", "--device", "cpu", "--model", pt, "--input", filepath.Join(root, "adm", "x.npy"), "--timesteps", "1", "--class", "1", "--output", out, "--grad", out}, []string{"--grad"}, true},
		{"grad without class", []string{"predict", "--device", "cpu", "--model", filepath.Join(root, "classifier", "model.pt"), "--input", filepath.Join(root, "classifier", "x.npy"), "--timesteps", "1", "--output", out, "--grad", out}, []string{"--class"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, err := runCLI(t, tc.args...)
			if err == nil {
				t.Fatalf("no error\n%s", log)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			var u usageError
			if errors.As(err, &u) != tc.usage {
				t.Errorf("usage error = %v, want %v (%v)", !tc.usage, tc.usage, err)
			}
			t.Logf("%v", err)
		})
	}
}

// TestSampleOpenAI: `ddpm sample` takes a guided-diffusion checkpoint
// (its diffusion from args.json: cosine, learned range) and refuses a
// classifier with a message saying what it is.
func TestSampleOpenAI(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	out := filepath.Join(t.TempDir(), "s.png")
	if log, err := runCLI(t, "sample", "--device", "cpu", "--model", filepath.Join(root, "adm", "model.pt"), "--class", "3",
		"--steps", "2", "--n", "1", "--seed", "1", "--out", out); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "sample", "--device", "cpu", "--model", filepath.Join(root, "classifier", "model.pt"), "--steps", "2", "--n", "1", "--seed", "1", "--out", out)
	if err == nil || !strings.Contains(err.Error(), "classifier") {
		t.Errorf("sampling a classifier: error %v", err)
	}
}
