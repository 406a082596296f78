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
)

// TestBenchJSON runs a tiny benchmark of the fixture model and checks the
// JSON line that bench/side_by_side.sh reads.
func TestBenchJSON(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "diffusers-unet-small")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("diffusers fixture not found at %s (it lives in the project's shared/ folder): %v", dir, err)
	}
	var so, se bytes.Buffer
	err := run(context.Background(), []string{"bench", "--model", dir, "--batch", "2", "--iters", "1", "--warmup", "0", "--train", "--json"}, &so, &se)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, se.String())
	}
	var r map[string]any
	if err := json.Unmarshal(so.Bytes(), &r); err != nil {
		t.Fatalf("output %q is not one JSON object: %v", so.String(), err)
	}
	for _, k := range []string{"device", "batch", "forward_ms_median", "images_per_sec", "train_step_ms_median", "train_images_per_sec"} {
		if _, ok := r[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, so.String())
		}
	}
	if r["batch"].(float64) != 2 {
		t.Errorf("batch = %v, want 2", r["batch"])
	}
	if _, ok := processCPUTime(); ok {
		// The process's CPU time per forward: more than nothing, and at
		// most the wall time on every thread the process has.
		cpu, _ := r["forward_cpu_ms_median"].(float64)
		wall, _ := r["forward_ms_median"].(float64)
		if cpu <= 0 || cpu > wall*float64(runtime.NumCPU())+1 {
			t.Errorf("forward_cpu_ms_median = %v with forward_ms_median %v on %d CPUs", cpu, wall, runtime.NumCPU())
		}
	}
}

// TestBenchErrors checks the flag validation.
func TestBenchErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench"}, "exactly one of --model and --preset"},
		{[]string{"bench", "--preset", "mnist", "--model", "x"}, "exactly one"},
		{[]string{"bench", "--preset", "mnist", "--batch", "0"}, "--batch"},
		{[]string{"bench", "--preset", "mnist", "--iters", "0"}, "--iters"},
		{[]string{"bench", "--preset", "nope"}, "--preset"},
	} {
		var so, se bytes.Buffer
		err := run(context.Background(), tc.args, &so, &se)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
	if got := medianMS([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}); got != 2.5 {
		t.Errorf("medianMS = %v, want 2.5", got)
	}
}
