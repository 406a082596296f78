package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
)

// TestSampleRespacing: --respacing fast27 samples with GLIDE's 27
// timesteps (ddpm, ddim, and the default sampler) and writes an image;
// --respacing ddim50 is --steps 50 bit for bit (both take 0, 20, ...,
// 980 of the model's 1000 timesteps), while fast27 and the section string
// it is built on differ (997 in place of 999).
func TestSampleRespacing(t *testing.T) {
	model := tinyModelFile(t) // diffusion.DefaultConfig: T = 1000
	dir := t.TempDir()
	raw := func(name string, extra ...string) []byte {
		t.Helper()
		p := filepath.Join(dir, name)
		args := append([]string{"sample", "--device", "cpu", "--model", model, "--n", "2", "--seed", "3", "--class", "1", "--raw", p}, extra...)
		runSampleArgs(t, args...)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, sampler := range []string{"ddpm", "ddim", ""} {
		out := filepath.Join(dir, "fast27"+sampler+".png")
		args := []string{"sample", "--device", "cpu", "--model", model, "--n", "2", "--seed", "1", "--respacing", "fast27", "--out", out}
		if sampler != "" {
			args = append(args, "--sampler", sampler)
		}
		log := runSampleArgs(t, args...)
		if !strings.Contains(log, "27 of 1000 timesteps") {
			t.Errorf("--sampler %q --respacing fast27: log %q does not say 27 of 1000 timesteps", sampler, log)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		im, err := png.Decode(f)
		f.Close()
		if err != nil || im.Bounds().Dx() == 0 {
			t.Errorf("--sampler %q --respacing fast27: %s is not an image: %v", sampler, out, err)
		}
	}
	if a, b := raw("ddim50.npy", "--sampler", "ddim", "--respacing", "ddim50"), raw("steps50.npy", "--sampler", "ddim", "--steps", "50"); !bytes.Equal(a, b) {
		t.Error("--respacing ddim50 and --steps 50 gave different samples")
	}
	if a, b := raw("fast27.npy", "--sampler", "ddim", "--respacing", "fast27"), raw("sections.npy", "--sampler", "ddim", "--respacing", "10,10,3,2,2"); bytes.Equal(a, b) {
		t.Error("--respacing fast27 and 10,10,3,2,2 gave the same samples")
	}
}

// TestSampleRespacingOpenAI: --respacing fast27 on guided-diffusion's
// small class-conditional fixture (learned variance: ancestral sampling).
func TestSampleRespacingOpenAI(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	out := filepath.Join(t.TempDir(), "s.png")
	log := runSampleArgs(t, "sample", "--device", "cpu", "--model", filepath.Join(root, "adm", "model.pt"), "--class", "3",
		"--respacing", "fast27", "--n", "1", "--seed", "1", "--out", out)
	if !strings.Contains(log, "27 of 1000 timesteps") {
		t.Errorf("log %q does not say 27 of 1000 timesteps", log)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatal(err)
	}
}

func TestSampleRespacingErrors(t *testing.T) {
	model := tinyModelFile(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--steps", "10", "--respacing", "fast27"}, []string{"--steps", "--respacing", "give one"}},
		{[]string{"--steps", "50", "--respacing", "100"}, []string{"--steps", "--respacing"}}, // 50 is the default, but given
		{[]string{"--respacing", "fast27", "--sampler", "euler"}, []string{"--respacing", "ddpm and ddim", "euler"}},
		{[]string{"--respacing", "fast27", "--sampler", "dpm++2m"}, []string{"--respacing", "ddpm and ddim"}},
		{[]string{"--respacing", "fast27", "--sampler", "ddim", "--karras"}, []string{"--respacing", "--karras"}},
		{[]string{"--respacing", "fast"}, []string{"--respacing", "fast27", "ddimN", "10,15,20"}},
		{[]string{"--respacing", "leading"}, []string{"--respacing", "allowed"}},
		{[]string{"--respacing", "ddim999"}, []string{"--respacing", "1000 timesteps"}},
		{[]string{"--respacing", "2000"}, []string{"--respacing", "allowed"}},
		{[]string{"--respacing", "10,-1"}, []string{"--respacing"}},
		{[]string{"--respacing", " "}, []string{"--respacing", "empty"}},
	} {
		var so, se bytes.Buffer
		args := append([]string{"sample", "--device", "cpu", "--model", model, "--n", "1", "--out", filepath.Join(t.TempDir(), "x.png")}, tc.args...)
		err := run(t.Context(), args, &so, &se)
		if err == nil {
			t.Errorf("%v: no error", tc.args)
			continue
		}
		if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %T %v, want a usage error", tc.args, err, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not mention %q", tc.args, err, w)
			}
		}
	}
}
