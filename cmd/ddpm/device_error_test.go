package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/kernels"
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

// TestPrecisionFlag: --precision is checked once for every command; on
// the CPU fp16 and training in bf16 are refused, tf32 is noted, and bf16
// inference runs where the CPU has it and is refused clearly elsewhere.
func TestPrecisionFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "--preset", "mnist", "--device", "cpu", "--precision", "fp8"}, &stdout, &stderr)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `--precision "fp8": allowed are fp32, tf32, bf16, fp16`) {
		t.Errorf("bench --precision fp8: %v (exit %d)", err, exitCode(err))
	}
	err = run(context.Background(), []string{"sample", "--device", "cpu", "--precision", "fp16", "--n", "1", "--steps", "1",
		"--seed", "1", "--out", t.TempDir() + "/x.png"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--precision fp16: not supported on the CPU backend") {
		t.Errorf("sample --precision fp16 on the CPU: %v", err)
	}
	err = run(context.Background(), []string{"bench", "--preset", "mnist", "--device", "cpu", "--precision", "bf16", "--train", "--batch", "1", "--iters", "1", "--warmup", "0"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--precision bf16: on the CPU it is for inference") {
		t.Errorf("bench --train --precision bf16 on the CPU: %v", err)
	}
	stdout.Reset()
	err = run(context.Background(), []string{"bench", "--preset", "mnist", "--device", "cpu", "--precision", "bf16", "--batch", "2", "--iters", "1", "--warmup", "0", "--json"}, &stdout, &stderr)
	if kernels.BF16Supported() != nil {
		if err == nil || !strings.Contains(err.Error(), "--precision bf16: ") {
			t.Errorf("bench --precision bf16 on a CPU without bf16: %v", err)
		}
	} else if err != nil || !strings.Contains(stdout.String(), `"precision":"bf16"`) {
		t.Errorf("bench --precision bf16 --json: %v, %s: want a run reporting precision bf16", err, stdout.String())
	}
	stdout.Reset()
	err = run(context.Background(), []string{"bench", "--preset", "mnist", "--device", "cpu", "--precision", "tf32", "--batch", "1", "--iters", "1", "--warmup", "0"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench --precision tf32 on the CPU: %v", err)
	}
}
