package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/weights"
)

func runInspectArgs(args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"inspect"}, args...), &out, &errb)
	return out.String(), errb.String(), err
}

func TestInspectCommand(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model.safetensors")
	m := &weights.Model{
		UNetConfig:      json.RawMessage(`{"_class_name": "UNet2DModel", "block_out_channels": [4, 8]}`),
		DiffusionConfig: json.RawMessage(`{"timesteps": 1000}`),
		ClassNames:      []string{"zero", "one"},
		Tensors: map[string]weights.Tensor{
			"conv_in.weight": {Shape: []int{4, 1, 3, 3}, Data: make([]float32, 36)},
			"conv_in.bias":   {Shape: []int{4}, Data: make([]float32, 4)},
		},
	}
	if err := weights.WriteModel(model, m); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(dir, "ckpt.safetensors")
	c := &weights.Checkpoint{Model: *m, TrainState: json.RawMessage(`{"step": 7}`),
		AdamV: map[string]weights.Tensor{"conv_in.bias": {Shape: []int{4}, Data: make([]float32, 4)}}}
	if err := weights.WriteCheckpoint(ckpt, c); err != nil {
		t.Fatal(err)
	}
	arr := filepath.Join(dir, "x.npy")
	a, _ := npy.NewFloat32([]int{2, 3}, make([]float32, 6))
	if err := npy.WriteFile(arr, a); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"model", []string{model}, []string{"format:      ddpm-model", "ddpm.unet_config:", "block_out_channels: [4, 8]", "timesteps: 1000", "classes:     2 (zero, one)", "parameters:  40 ", "tensors:     2", "conv_in.weight  F32    [4 1 3 3]"}},
		{"checkpoint", []string{ckpt}, []string{"format:      ddpm-checkpoint", "ddpm.train_state:", "step: 7", "train state: 4 values", "adam_v/conv_in.bias", "tensors:     3"}},
		{"flag after path", []string{model, "--tensors=false"}, []string{"tensors:     2"}},
		{"npy", []string{arr}, []string{"format:      npy", "shape:       [2 3]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runInspectArgs(tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if out, _, _ := runInspectArgs("--tensors=false", model); strings.Contains(out, "NAME") {
		t.Errorf("--tensors=false still lists tensors:\n%s", out)
	}

	out, _, err := runInspectArgs("--json", ckpt)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Format         string                     `json:"format"`
		NumTensors     int                        `json:"num_tensors"`
		NumParams      int64                      `json:"num_params"`
		NumExtraParams int64                      `json:"num_extra_params"`
		Configs        map[string]json.RawMessage `json:"configs"`
		Tensors        []struct {
			Name  string `json:"name"`
			DType string `json:"dtype"`
			Shape []int  `json:"shape"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if got.Format != "ddpm-checkpoint" || got.NumTensors != 3 || got.NumParams != 40 || got.NumExtraParams != 4 ||
		len(got.Tensors) != 3 || string(got.Configs[weights.MetaTrainState]) != `{"step":7}` {
		t.Errorf("--json: %+v", got)
	}
}

func TestInspectErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(bad, []byte("\x10\x00\x00\x00\x00\x00\x00\x00{}"), 0o644)
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"no path", nil, true, "want exactly one PATH, got 0"},
		{"two paths", []string{"a", "b"}, true, "got 2"},
		{"bad flag", []string{"--nope", "a"}, true, "not defined"},
		{"missing", []string{filepath.Join(dir, "none")}, false, "no such file"},
		{"corrupt", []string{bad}, false, bad},
		{"empty dir", []string{dir}, false, "not a diffusers folder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runInspectArgs(tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			var u usageError
			if errors.As(err, &u) != tc.usage {
				t.Errorf("usage error = %v, want %v", errors.As(err, &u), tc.usage)
			}
		})
	}
}

func TestInspectDiffusersFixture(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "diffusers-unet-small")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared fixtures not found at %s (they live outside the repository)", dir)
	}
	out, _, err := runInspectArgs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"format:      diffusers", "_class_name: \"UNet2DModel\"", "parameters:  1,112,801", "tensors:     182", "mid_block.attentions.0.to_q.weight"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

func TestInspectTruncate(t *testing.T) {
	cases := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc... (6 bytes)"},
		{"aé", 2, "a... (3 bytes)"}, // é is 2 bytes: not cut in half
	}
	for _, c := range cases {
		got := inspectTruncate(c.s, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("inspectTruncate(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}
