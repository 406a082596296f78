package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPTXUpToDate recompiles kernels/ops.cu with clang-16 and fails when
// the committed kernels/ops.ptx differs (run `go generate ./cuda`).
func TestPTXUpToDate(t *testing.T) {
	clang, err := exec.LookPath("clang-16")
	if err != nil {
		t.Skip("clang-16 not installed (Debian package clang-16): cannot check kernels/ops.ptx")
	}
	out := filepath.Join(t.TempDir(), "ops.ptx")
	args := append(append([]string{}, ptxClangArgs...), filepath.Join("kernels", "ops.cu"), "-o", out)
	if b, err := exec.Command(clang, args...).CombinedOutput(); err != nil {
		t.Fatalf("clang-16 %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != opsPTX {
		t.Fatalf("kernels/ops.ptx is stale: run `go generate ./cuda` and commit it")
	}
}

// TestPTXKernels checks that every kernel the Device binds is in the PTX,
// and that the module calls no external function (no libdevice here).
func TestPTXKernels(t *testing.T) {
	for _, k := range kernelNames {
		if !strings.Contains(opsPTX, ".entry "+k+"(") {
			t.Errorf("kernel %s missing from kernels/ops.ptx", k)
		}
	}
	if strings.Contains(opsPTX, ".extern .func") {
		t.Errorf("kernels/ops.ptx calls an external function (libm?): use NVVM intrinsics")
	}
	if !strings.Contains(opsPTX, ".target sm_80") {
		t.Errorf("kernels/ops.ptx is not sm_80 PTX")
	}
}
