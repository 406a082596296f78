package nn

import (
	"math"
	"testing"
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
