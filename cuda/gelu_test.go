package cuda

import (
	"math"
	"testing"
)

// TestGELUAccuracy runs GELU and GELUBackward on a dense grid of x over
// [-12, 8] (the far negative tail, where 1 + erf cancels, included) and
// compares each value with kernels.CPU (float64 math.Erf, rounded once)
// under a relative bound that grows with the exponent's argument x^2/2 as
// the float32 exp's rounding does: GELU within (2e-6 + 4e-7 x^2) |want|,
// the gradient (dy = 1) within that plus 1e-6 absolute (it crosses zero
// at x = -0.75). Then both in place (y == x, dx == dy) and NaN in, NaN
// out.
func TestGELUAccuracy(t *testing.T) {
	d := openTest(t, "fp32")
	cpu := newCPU(t)
	const n = 20001
	xs := make([]float32, n)
	for i := range xs {
		xs[i] = float32(-12 + 20*float64(i)/(n-1))
	}
	xs[n/2] = float32(math.NaN())
	ones := make([]float32, n)
	for i := range ones {
		ones[i] = 1
	}
	wantY, wantDx := make([]float32, n), make([]float32, n)
	cpu.GELU(wantY, xs, n)
	cpu.GELUBackward(wantDx, ones, xs, n)
	if err := cpu.Sync(); err != nil {
		t.Fatal(err)
	}

	x, dy, y, dx := d.Alloc(n), d.Alloc(n), d.Alloc(n), d.Alloc(n)
	defer func() {
		for _, p := range []Ptr{x, dy, y, dx} {
			d.Free(p)
		}
	}()
	d.Upload(x, xs)
	d.Upload(dy, ones)
	d.GELU(y, x, n)
	d.GELUBackward(dx, dy, x, n)
	gotY, gotDx := make([]float32, n), make([]float32, n)
	d.Download(gotY, y)
	d.Download(gotDx, dx)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	var worstY, worstDx float64
	for i, v := range xs {
		if i == n/2 {
			if !isNaN(gotY[i]) || !isNaN(gotDx[i]) {
				t.Errorf("GELU(NaN) = %v, dGELU(NaN) = %v: want NaN", gotY[i], gotDx[i])
			}
			continue
		}
		rel := 2e-6 + 4e-7*float64(v)*float64(v)
		ey := math.Abs(float64(gotY[i])-float64(wantY[i])) / (rel * math.Abs(float64(wantY[i])))
		edx := math.Abs(float64(gotDx[i])-float64(wantDx[i])) / (1e-6 + rel*math.Abs(float64(wantDx[i])))
		if wantY[i] == 0 && gotY[i] == 0 {
			ey = 0
		}
		if !(ey <= 1) {
			t.Errorf("GELU(%v) = %.8g on the GPU, %.8g on the CPU (rel bound %.2g)", v, gotY[i], wantY[i], rel)
		}
		if !(edx <= 1) {
			t.Errorf("GELU'(%v) = %.8g on the GPU, %.8g on the CPU (bound 1e-6 + %.2g rel)", v, gotDx[i], wantDx[i], rel)
		}
		worstY, worstDx = math.Max(worstY, ey), math.Max(worstDx, edx)
	}
	t.Logf("worst error over its bound: GELU %.3g, GELUBackward %.3g", worstY, worstDx)

	// In place: the same values.
	d.GELU(x, x, n)
	d.GELUBackward(dy, dy, dy, n) // dx == dy == x: dy (Phi + x phi) at x = 1
	inY, inDx := make([]float32, n), make([]float32, 1)
	d.Download(inY, x)
	d.Download(inDx, d.Slice(dy, 0, 1))
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := range inY {
		if inY[i] != gotY[i] && !(isNaN(inY[i]) && isNaN(gotY[i])) {
			t.Fatalf("in place GELU at %d: %v, out of place %v", i, inY[i], gotY[i])
		}
	}
	if want := 0.5*(1+math.Erf(1/math.Sqrt2)) + math.Exp(-0.5)/math.Sqrt(2*math.Pi); math.Abs(float64(inDx[0])-want) > 1e-6 {
		t.Errorf("in place GELUBackward at x = dy = 1: %v, want %v", inDx[0], want)
	}
}
