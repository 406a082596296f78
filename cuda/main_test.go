package cuda

import (
	"fmt"
	"os"
	"testing"

	"github.com/ddpm-go/ddpm/cuda/cudatest"
)

// emulated is set by TestMain when the tests run on cuda/emu's CPU
// emulator of libcuda and cuBLAS instead of a GPU.
var emulated bool

// TestMain points the driver loader at the CPU emulator (see package
// cudatest) when this machine has no libcuda.so.1, so every Device code
// path, the kernel source and the cuBLAS leading-dimension rules are
// exercised in CI. With a real driver nothing changes. DDPM_CUDA_EMU=0
// disables the emulator.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	used, cleanup, err := cudatest.UseEmulator(".")
	if err != nil {
		fmt.Fprintf(os.Stderr, "cuda tests: no GPU and no emulator (%v); GPU tests will skip\n", err)
	}
	defer cleanup()
	emulated = used
	return m.Run()
}
