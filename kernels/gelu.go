package kernels

import "math"

// GELU, the activation of GLIDE's text transformer (PyTorch's exact
// nn.GELU, not the tanh approximation). The CPU evaluates it in float64
// and rounds once, with Phi(x) = erfc(-x/sqrt 2)/2 rather than
// (1 + erf(x/sqrt 2))/2, which cancels for very negative x (erf is -1 to
// within 1e-11 at x = -7): so it is nn.GELURef and nn.GELUGradRef rounded
// to float32. Package cuda evaluates a float32 erfc (about 1e-6 relative
// error, growing to about 1e-5 in the far negative tail).

// GELU sets y = x Phi(x) = x (1 + erf(x/sqrt 2)) / 2 for n values (y may
// alias x).
func (c *CPU) GELU(y, x []float32, n int) {
	if !c.has("GELU", "y", y, n) || !c.has("GELU", "x", x, n) {
		return
	}
	c.parallel(n, elemGrain/8, func(_, lo, hi int) {
		for i, v := range x[lo:hi] {
			f := float64(v)
			y[lo+i] = float32(0.5 * f * math.Erfc(-f/math.Sqrt2))
		}
	})
}

// GELUBackward sets dx = dy (Phi(x) + x phi(x)) for n values, phi the
// standard normal density (dx may alias dy or x).
func (c *CPU) GELUBackward(dx, dy, x []float32, n int) {
	if !c.has("GELUBackward", "dx", dx, n) || !c.has("GELUBackward", "dy", dy, n) || !c.has("GELUBackward", "x", x, n) {
		return
	}
	c.parallel(n, elemGrain/8, func(_, lo, hi int) {
		for i, v := range x[lo:hi] {
			f := float64(v)
			g := 0.5*math.Erfc(-f/math.Sqrt2) + f*math.Exp(-0.5*f*f)/math.Sqrt(2*math.Pi)
			dx[lo+i] = float32(float64(dy[lo+i]) * g)
		}
	})
}
