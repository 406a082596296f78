package unet

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
)

// TestDeviceModel checks DeviceModel.Predict against Model.Predict on the
// CPU backend (exactly) and on cuda.Device (a GPU or the emulator; strict
// fp32 within 1e-5 relative L2), for a class-conditional tiny model with
// the null class.
func TestDeviceModel(t *testing.T) {
	cpu := newCPU(t)
	m, err := New(tinyConfig(), cpu, 5)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(8, 9))
	x := diffusion.NewBatch(3, 2, 8, 8)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts, ys := []int{0, 400, 999}, []int{0, 2, -1}
	want, err := m.Predict(context.Background(), x, ts, ys)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got diffusion.Batch, tol float64) {
		t.Helper()
		if e := relL2(got.Data, want.Data); !(e <= tol) {
			t.Errorf("%s: relative L2 difference %.3g > %g", name, e, tol)
		}
	}
	dc, err := NewDeviceModel[[]float32](m, kernels.Ops[[]float32](cpu))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	got, err := dc.Predict(context.Background(), x, ts, ys)
	if err != nil {
		t.Fatal(err)
	}
	check("cpu", got, 0)
	if _, err := dc.Predict(context.Background(), x, ts, []int{0, 9, 1}); err == nil {
		t.Error("bad label: no error")
	}

	gpu, err := cuda.Open(0, cuda.Options{Precision: "fp32"})
	if err != nil {
		t.Skipf("no GPU or emulator: %v", err)
	}
	defer gpu.Close()
	dg, err := NewDeviceModel[cuda.Ptr](m, gpu)
	if err != nil {
		t.Fatal(err)
	}
	defer dg.Close()
	for i := 0; i < 2; i++ { // the second call reuses the compiled program
		got, err := dg.Predict(context.Background(), x, ts, ys)
		if err != nil {
			t.Fatal(err)
		}
		check("cuda fp32", got, 1e-5)
	}
}
