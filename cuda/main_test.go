package cuda

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ebitengine/purego"
)

// emulated is set by TestMain when the tests run on cuda/emu's CPU
// emulator of libcuda and cuBLAS instead of a GPU.
var emulated bool

// TestMain points the driver loader at the CPU emulator (cuda/emu/emu.cpp,
// built with clang-16) when this machine has no libcuda.so.1, so every
// Device code path, the kernel source and the cuBLAS leading-dimension
// rules are exercised in CI. With a real driver nothing changes. Set
// DDPM_CUDA_EMU=0 to disable the emulator.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("DDPM_LIBCUDA") == "" && os.Getenv("DDPM_CUDA_EMU") != "0" && !haveDriver() {
		if dir, so, err := buildEmulator(); err != nil {
			fmt.Fprintf(os.Stderr, "cuda tests: no GPU and no emulator (%v); GPU tests will skip\n", err)
		} else {
			defer os.RemoveAll(dir)
			os.Setenv("DDPM_LIBCUDA", so)
			os.Setenv("DDPM_LIBCUBLAS", so)
			emulated = true
		}
	}
	return m.Run()
}

func haveDriver() bool {
	h, err := purego.Dlopen("libcuda.so.1", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return false
	}
	purego.Dlclose(h)
	return true
}

func buildEmulator() (dir, so string, err error) {
	clang, err := exec.LookPath("clang-16")
	if err != nil {
		return "", "", fmt.Errorf("clang-16 not installed")
	}
	dir, err = os.MkdirTemp("", "ddpm-cuda-emu")
	if err != nil {
		return "", "", err
	}
	so = filepath.Join(dir, "libddpmemu.so")
	cmd := exec.Command(clang, "-x", "c++", "-std=c++17", "-O2", "-shared", "-fPIC",
		filepath.Join("emu", "emu.cpp"), "-o", so, "-lm")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("build emulator: %v\n%s", err, out)
	}
	return dir, so, nil
}
