package train_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/ddpm-go/ddpm/cuda/cudatest"
)

// TestMain runs the GPU test on the CPU emulator of package cudatest when
// there is no GPU.
func TestMain(m *testing.M) {
	_, cleanup, err := cudatest.UseEmulator("../cuda")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}
