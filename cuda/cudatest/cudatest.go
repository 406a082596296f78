// Package cudatest lets tests of any package run package cuda on a CPU
// emulator of the CUDA driver and cuBLAS when the machine has no GPU: the
// emulator (cuda/emu/emu.cpp) compiles cuda/kernels/ops.cu for the host, so
// tests exercise the real kernel source and every cuda.Device code path.
package cudatest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/ebitengine/purego"
)

// HaveDriver reports whether a real libcuda.so.1 can be opened.
func HaveDriver() bool {
	h, err := purego.Dlopen("libcuda.so.1", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return false
	}
	purego.Dlclose(h)
	return true
}

// UseEmulator builds the emulator from cudaDir (the path of package cuda's
// directory, e.g. "." from package cuda or "../cuda" from a sibling) with
// clang-16 and points DDPM_LIBCUDA, DDPM_LIBCUBLAS and DDPM_LIBCUDNN at it, unless a real
// driver is present, DDPM_LIBCUDA is already set, or DDPM_CUDA_EMU=0. It
// reports whether the emulator is in use; call cleanup when the tests end.
// Call it from TestMain, before anything opens a cuda.Device.
func UseEmulator(cudaDir string) (used bool, cleanup func(), err error) {
	cleanup = func() {}
	if os.Getenv("DDPM_LIBCUDA") != "" || os.Getenv("DDPM_CUDA_EMU") == "0" || HaveDriver() {
		return false, cleanup, nil
	}
	clang, err := exec.LookPath("clang-16")
	if err != nil {
		return false, cleanup, fmt.Errorf("cudatest: clang-16 not installed: no emulator")
	}
	dir, err := os.MkdirTemp("", "ddpm-cuda-emu")
	if err != nil {
		return false, cleanup, err
	}
	so := filepath.Join(dir, "libddpmemu.so")
	cmd := exec.Command(clang, "-x", "c++", "-std=c++17", "-O2", "-shared", "-fPIC",
		filepath.Join(cudaDir, "emu", "emu.cpp"), "-o", so, "-lstdc++", "-lm")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return false, cleanup, fmt.Errorf("cudatest: build emulator: %v\n%s", err, out)
	}
	os.Setenv("DDPM_LIBCUDA", so)
	os.Setenv("DDPM_LIBCUBLAS", so)
	os.Setenv("DDPM_LIBCUDNN", so)
	return true, func() { os.RemoveAll(dir) }, nil
}
