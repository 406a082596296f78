package adm

import (
	"fmt"
	"os"
	"testing"

	"github.com/ddpm-go/ddpm/cuda/cudatest"
)

// TestMain runs TestDevice on the CPU emulator of package cudatest when
// there is no GPU.
func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	_, cleanup, err := cudatest.UseEmulator("../cuda")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	defer cleanup()
	return m.Run()
}
