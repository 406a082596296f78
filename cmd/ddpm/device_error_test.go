package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
)

// TestSampleDeviceCUDAWithoutDriver: `ddpm sample --device cuda` on a
// machine without an NVIDIA driver fails (exit status 1) with a short
// first line saying what is missing and what to set, then the paths tried.
func TestSampleDeviceCUDAWithoutDriver(t *testing.T) {
	if _, err := cuda.Devices(); !errors.Is(err, cuda.ErrNoDriver) {
		t.Skip("this machine has a CUDA driver")
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"sample", "--device", "cuda", "--n", "1", "--steps", "2", "--seed", "1",
		"--out", t.TempDir() + "/x.png"}, &stdout, &stderr)
	if err == nil {
		t.Fatal("sample --device cuda without a driver: no error")
	}
	if code := exitCode(err); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	lines := strings.Split(err.Error(), "\n")
	if want := "--device cuda:0: no NVIDIA driver found (libcuda.so.1); set DDPM_LIBCUDA to its path"; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	if len(lines) < 3 || strings.TrimSpace(lines[1]) != "tried:" || !strings.Contains(err.Error(), "libcuda.so.1 (") {
		t.Errorf("the paths tried should follow on their own lines:\n%s", err)
	}
}

// TestPrecisionFlag: --precision is checked once for every command; bf16
// on the CPU is refused, tf32 on the CPU is noted.
func TestPrecisionFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "--preset", "mnist", "--device", "cpu", "--precision", "fp8"}, &stdout, &stderr)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `--precision "fp8": allowed are fp32, tf32, bf16, fp16`) {
		t.Errorf("bench --precision fp8: %v (exit %d)", err, exitCode(err))
	}
	err = run(context.Background(), []string{"sample", "--device", "cpu", "--precision", "bf16", "--n", "1", "--steps", "1",
		"--seed", "1", "--out", t.TempDir() + "/x.png"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--precision bf16: not supported on the CPU backend yet") {
		t.Errorf("sample --precision bf16 on the CPU: %v", err)
	}
	stdout.Reset()
	err = run(context.Background(), []string{"bench", "--preset", "mnist", "--device", "cpu", "--precision", "tf32", "--batch", "1", "--iters", "1", "--warmup", "0"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench --precision tf32 on the CPU: %v", err)
	}
}
