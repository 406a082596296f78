package unet

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/npy"
)

func fixtureDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join("..", "..", "shared", "fixtures", "diffusers-unet-small")
	if _, err := os.Stat(d); err != nil {
		t.Skipf("diffusers fixture not found at %s (it lives in the project's shared/ folder): %v", d, err)
	}
	return d
}

func newCPU(t testing.TB) *kernels.CPU {
	t.Helper()
	c, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func relL2(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

// TestFixture runs diffusers' own small UNet2DModel and compares with the
// output diffusers computed (relative L2 error < 1e-4).
func TestFixture(t *testing.T) {
	dir := fixtureDir(t)
	m, src, err := Load(dir, newCPU(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.NumParams(); got != 1112801 {
		t.Errorf("NumParams = %d, want 1112801", got)
	}
	if len(src.Tensors) != 182 {
		t.Errorf("fixture has %d tensors, want 182", len(src.Tensors))
	}
	xa, err := npy.ReadFile(filepath.Join(dir, "x.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ta, err := npy.ReadFile(filepath.Join(dir, "timesteps.npy"))
	if err != nil {
		t.Fatal(err)
	}
	oa, err := npy.ReadFile(filepath.Join(dir, "out.npy"))
	if err != nil {
		t.Fatal(err)
	}
	x := diffusion.Batch{N: xa.Shape[0], C: xa.Shape[1], H: xa.Shape[2], W: xa.Shape[3], Data: xa.Float32s()}
	ts64, err := ta.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	ts := make([]int, len(ts64))
	for i, v := range ts64 {
		ts[i] = int(v)
	}
	out, err := m.Predict(context.Background(), x, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := relL2(out.Data, oa.Float32s()); e > 1e-4 {
		t.Fatalf("relative L2 error against diffusers = %.3g, want < 1e-4", e)
	} else {
		t.Logf("relative L2 error against diffusers: %.3g", e)
	}
}
