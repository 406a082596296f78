package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// refGELU: y = x Phi(x) = x erfc(-x/sqrt 2) / 2 (nn.GELURef's twin;
// package nn tests CPU.GELU against nn.GELURef itself).
func refGELU(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = 0.5 * v * math.Erfc(-v/math.Sqrt2)
	}
	return y
}

// TestGELU checks GELU against its float64 twin (rounding only), and
// GELUBackward against finite differences of the twin, on seeded normal
// inputs of standard deviation 8 (both tails far out, underflow
// included) in NaN guard bands, on every CPU configuration; then both in
// place (y == x, dx == dy).
func TestGELU(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	for _, c := range backends(t) {
		const n = 100003 // several chunks of the parallel loop
		xs, dys := rnd(r, n), rnd(r, n)
		for i := range xs {
			xs[i] *= 8
		}
		xs[0], xs[1], xs[2] = 0, float32(math.NaN()), float32(math.Inf(1))
		x, dy := newIn(xs), newIn(dys)
		y, dx := newOut(n), newOut(n)
		c.GELU(y.v(), x.v(), n)
		c.GELUBackward(dx.v(), dy.v(), x.v(), n)
		if err := c.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, gb := range []*gbuf{x, dy, y, dx} {
			gb.checkGuard(t, "buffer")
		}
		same(t, "x", x.v(), xs)
		same(t, "dy", dy.v(), dys)
		if y.v()[0] != 0 || !isNaN(y.v()[1]) || !math.IsInf(float64(y.v()[2]), 1) || dx.v()[0] != dys[0]/2 || !isNaN(dx.v()[1]) {
			t.Fatalf("GELU(0, NaN, +Inf) = %v (want 0, NaN, +Inf); dGELU at 0, NaN = %v, %v (want dy/2, NaN)", y.v()[:3], dx.v()[0], dx.v()[1])
		}
		x64 := f64(xs[3:])
		near(t, "y", y.v()[3:], refGELU(x64), 0x1p-149, 0x1p-24) // float32 rounding, subnormals included
		loss := func() float64 { return dot64(refGELU(x64), dys[3:]) }
		fdCheck(t, "dL/dx", r, x64, loss, dx.v()[3:], 1e-6, 1e-5)

		// In place: y == x and dx == dy give the same values.
		yi, dxi := clone(xs), clone(dys)
		c.GELU(yi, yi, n)
		c.GELUBackward(dxi, dxi, xs, n)
		if err := c.Sync(); err != nil {
			t.Fatal(err)
		}
		for i := 3; i < n; i++ {
			if yi[i] != y.v()[i] || dxi[i] != dx.v()[i] {
				t.Fatalf("in place at %d: GELU %v, GELUBackward %v; out of place %v, %v", i, yi[i], dxi[i], y.v()[i], dx.v()[i])
			}
		}
	}
}

// TestGELUShortBuffer: a short buffer is an error at Sync, not a panic.
func TestGELUShortBuffer(t *testing.T) {
	c, err := NewCPU(CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.GELU(make([]float32, 3), make([]float32, 4), 4)
	if err := c.Sync(); err == nil {
		t.Fatal("GELU with a short y: no error")
	}
	c.GELUBackward(make([]float32, 4), make([]float32, 4), make([]float32, 3), 4)
	if err := c.Sync(); err == nil {
		t.Fatal("GELUBackward with a short x: no error")
	}
}
