package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/weights"
)

// TestTrainClassifierAndGuide trains a tiny noisy classifier on MNIST
// through the CLI for a few steps, samples the embedded model with it
// (conditioned and with the null class), and checks the refusals: a
// classifier trained under another noise schedule, bad scales, --uncond
// misuse, a diffusion model in the classifier's place.
func TestTrainClassifierAndGuide(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on MNIST; skipped with -short")
	}
	ctx := context.Background()
	dir := t.TempDir()
	tiny := "--classifier_width 64 --classifier_depth 1 --classifier_channel_mult 1,1 --classifier_attention_resolutions 16"
	train := func(out string, extra ...string) string {
		args := append([]string{"train-classifier", "--dataset", "mnist", "--config", tiny, "--steps", "3", "--batch", "4",
			"--warmup", "1", "--log-every", "1", "--device", "cpu", "--out", out}, extra...)
		var so, se bytes.Buffer
		if err := run(ctx, args, &so, &se); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, se.String())
		}
		if !strings.Contains(so.String(), "checkpoint:") {
			t.Fatalf("stdout %q", so.String())
		}
		return filepath.Join(out, "checkpoint.safetensors")
	}
	ckpt := train(filepath.Join(dir, "clf"), "--model", weights.DefaultPath) // the embedded model's schedule
	logged, err := os.ReadFile(filepath.Join(dir, "clf", "log.jsonl"))
	if err != nil || !strings.Contains(string(logged), `"accuracy"`) {
		t.Fatalf("log.jsonl: %s (%v)", logged, err)
	}
	for _, extra := range [][]string{{"--class", "3", "--classifier-scale", "2"}, {"--class", "1,7", "--uncond"}, {"--guidance", "2", "--class", "4"}} {
		out := filepath.Join(dir, "s.png")
		args := append([]string{"sample", "--n", "2", "--steps", "3", "--seed", "1", "--sampler", "ddpm", "--device", "cpu",
			"--classifier", ckpt, "--out", out}, extra...)
		var so, se bytes.Buffer
		if err := run(ctx, args, &so, &se); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, se.String())
		}
		if _, err := os.Stat(out); err != nil {
			t.Fatal(err)
		}
	}
	other := train(filepath.Join(dir, "other"), "--schedule", "sigmoid")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--classifier", other}, "noise schedule"},
		{[]string{"--classifier", ckpt, "--classifier-scale", "-1"}, "--classifier-scale"},
		{[]string{"--classifier", ckpt, "--uncond", "--guidance", "2", "--class", "1"}, "--uncond"},
		{[]string{"--classifier", ckpt, "--class", "10"}, "10"},
		{[]string{"--classifier", filepath.Join("..", "..", "weights", "default", "model.safetensors")}, "not a noisy classifier"},
	} {
		args := append([]string{"sample", "--n", "1", "--steps", "2", "--seed", "1", "--device", "cpu", "--out", filepath.Join(dir, "x.png")}, tc.args...)
		var so, se bytes.Buffer
		err := run(ctx, args, &so, &se)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
	// ddpm serve --classifier: the generator names it; a mismatched one is refused.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	gen, release, err := loadServeModel(ctx, serveOptions{classifier: ckpt, device: "cpu"}, log)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if got := gen.Info().Classifier; got != "checkpoint" {
		t.Errorf("served classifier name %q, want checkpoint", got)
	}
	if _, _, err := loadServeModel(ctx, serveOptions{classifier: other, device: "cpu"}, log); err == nil || !strings.Contains(err.Error(), "noise schedule") {
		t.Errorf("serve with a classifier of another schedule: %v", err)
	}
	var so, se bytes.Buffer
	if err := run(ctx, []string{"train-classifier", "--dataset", "folder:" + t.TempDir(), "--out", filepath.Join(dir, "x")}, &so, &se); err == nil {
		t.Error("train-classifier on an empty folder: no error")
	}
}
