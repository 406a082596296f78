package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/weights"
)

// tinyTrainConfig writes a small class-conditional UNet config (16x16,
// null class, the given dropout) for training tests and returns its path.
func tinyTrainConfig(t *testing.T, dropout float64) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "tiny.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"sample_size": 16, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 8],
		"layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": null, "dropout": %g,
		"down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
		"num_class_embeds": 11, "ddpm_null_class": 10}`, dropout)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTrainInit: `ddpm train --init` starts from another run's EMA weights
// with a fresh optimiser. With a learning rate of 1e-9 one step moves no
// weight by more than 1e-6, so the new run's raw weights are the first
// run's EMA weights; the bad combinations are refused with the flag named.
func TestTrainInit(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two small runs; skipped with -short")
	}
	cfg := tinyTrainConfig(t, 0)
	common := []string{"--dataset", "mnist", "--size", "16", "--resize", "resize", "--batch", "4", "--log-every", "1", "--threads", "1"}
	first, second := t.TempDir(), t.TempDir()
	if out, err := runCLI(t, append([]string{"train", "--config", cfg, "--steps", "3", "--warmup", "0", "--seed", "1", "--out", first}, common...)...); err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	from := filepath.Join(first, "checkpoint.safetensors")
	if out, err := runCLI(t, append([]string{"train", "--init", from, "--steps", "1", "--lr", "1e-9", "--warmup", "0", "--seed", "2", "--out", second}, common...)...); err != nil {
		t.Fatalf("--init run: %v\n%s", err, out)
	}
	a, err := weights.ReadCheckpoint(from)
	if err != nil {
		t.Fatal(err)
	}
	b, err := weights.ReadCheckpoint(filepath.Join(second, "checkpoint.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Raw) != len(a.Tensors) {
		t.Fatalf("the --init run has %d tensors, the model it started from %d", len(b.Raw), len(a.Tensors))
	}
	var worst float64
	for name, want := range a.Tensors {
		got := b.Raw[name].Data
		for i, w := range want.Data {
			worst = math.Max(worst, math.Abs(float64(got[i]-w)))
		}
	}
	if worst > 1e-6 {
		t.Errorf("after one step at lr 1e-9 the raw weights differ from --init's by up to %g, want <= 1e-6", worst)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--init", from, "--config", cfg}, "--init and --config"},
		{[]string{"--init", from, "--loss", "hybrid"}, "out_channels = 1"},
		{[]string{"--init", filepath.Join(first, "missing.safetensors")}, "--init"},
		// The embedded model learned its variance (2 output channels), L_simple fixes it.
		{[]string{"--init", weights.DefaultPath, "--loss", "simple", "--size", "32"}, "out_channels = 2"},
	} {
		// Flags given twice: the case's (last) value wins.
		out, err := runCLI(t, append(append([]string{"train", "--steps", "1", "--out", t.TempDir()}, common...), c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("train %v: error %v, want one naming %q\n%s", c.args, err, c.want, out)
		}
	}
}
