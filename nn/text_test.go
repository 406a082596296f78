package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/kernels"
)

// TestGELURef: the exact GELU at known points (x Phi(x) with Phi the
// standard normal CDF) and its derivative against central differences.
func TestGELURef(t *testing.T) {
	for _, c := range []struct{ x, want float64 }{
		{0, 0}, {1, 0.8413447460685429}, {-1, -0.15865525393145707}, {3, 2.9959502} /* 3*0.99865010 */, {-6, -5.9e-9},
	} {
		if got := GELURef(c.x); math.Abs(got-c.want) > 1e-7+1e-7*math.Abs(c.want) {
			t.Errorf("GELU(%v) = %.10g, want %.10g", c.x, got, c.want)
		}
	}
	for _, x := range []float64{-4, -1.3, -0.2, 0, 0.7, 2.5} {
		const h = 1e-5
		fd := (GELURef(x+h) - GELURef(x-h)) / (2 * h)
		// float64 central differences: abs 1e-8.
		if g := GELUGradRef(x); math.Abs(g-fd) > 1e-8 {
			t.Errorf("GELU'(%v) = %.10g, finite difference %.10g", x, g, fd)
		}
	}
}

// TestGELUKernel checks kernels.CPU's GELU and GELUBackward, which the
// GELU op runs, against GELURef and GELUGradRef rounded to float32 (one
// rounding: within one float32 ulp) on x over [-12, 8] and random dy.
func TestGELUKernel(t *testing.T) {
	cpu, err := kernels.NewCPU(kernels.CPUOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	const n = 40001
	r := rand.New(rand.NewPCG(9, 10))
	xs, dys := make([]float32, n), make([]float32, n)
	for i := range xs {
		xs[i] = float32(-12 + 20*float64(i)/(n-1))
		dys[i] = float32(r.NormFloat64())
	}
	y, dx := make([]float32, n), make([]float32, n)
	cpu.GELU(y, xs, n)
	cpu.GELUBackward(dx, dys, xs, n)
	if err := cpu.Sync(); err != nil {
		t.Fatal(err)
	}
	const ulp = 0x1p-23
	for i, v := range xs {
		x := float64(v)
		if want := GELURef(x); math.Abs(float64(y[i])-want) > ulp*math.Abs(want) {
			t.Fatalf("CPU GELU(%v) = %v, GELURef %v", v, y[i], want)
		}
		if want := float64(dys[i]) * GELUGradRef(x); math.Abs(float64(dx[i])-want) > ulp*math.Abs(want) {
			t.Fatalf("CPU GELUBackward(dy %v, x %v) = %v, dy GELUGradRef %v", dys[i], v, dx[i], want)
		}
	}
	// The far tail keeps its relative accuracy (1 + erf would cancel):
	// GELU(-10) = -10 Phi(-10), Phi(-10) = 7.619853024160527e-24.
	if got, want := GELURef(-10), -7.619853024160527e-23; math.Abs(got-want) > 1e-14*math.Abs(want) {
		t.Errorf("GELURef(-10) = %v, want %v", got, want)
	}
}
