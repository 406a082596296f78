package kernels

import "math"

// Coefficients of p(r) = 1 + r + r^2*(e2 + r*(e3 + r*(e4 + r*(e5 + r*e6)))),
// a weighted least-squares fit of e^r on |r| <= ln2/2 at 4000 Chebyshev
// nodes (computed for this package with numpy.linalg.lstsq, relative error
// 3.8e-9 with float32 coefficients: below float32 rounding).
const (
	expE2 = 0.499999886
	expE3 = 0.1666651846
	expE4 = 0.04166953311
	expE5 = 0.008368916341
	expE6 = 0.001375140789

	log2e = 1.4426950408889634
	ln2hi = 0.693359375    // ln 2 rounded to few mantissa bits: n*ln2hi is exact
	ln2lo = -2.12194440e-4 // ln 2 - ln2hi
	expLo = -87.33654      // ln(2^-126): below it e^x is flushed to 0
	expHi = 88.0           // keeps 2^n a normal float32
)

// expf returns e^x in float32 (relative error about 1 ulp, <= 2.5e-7),
// several times faster than math.Exp: x = n*ln2 + r with |r| <= ln2/2
// (Cody-Waite split of ln2), e^r by the polynomial above, times 2^n built
// in the exponent bits. x below -87.34 gives 0; x above 88 uses math.Exp.
func expf(x float32) float32 {
	if !(x >= expLo) { // also NaN
		if x != x {
			return x
		}
		return 0
	}
	if x > expHi {
		return float32(math.Exp(float64(x)))
	}
	t := x * log2e
	var n int32
	if t >= 0 {
		n = int32(t + 0.5)
	} else {
		n = int32(t - 0.5)
	}
	fn := float32(n)
	r := (x - fn*ln2hi) - fn*ln2lo
	p := 1 + r + r*r*(expE2+r*(expE3+r*(expE4+r*(expE5+r*expE6))))
	return p * math.Float32frombits(uint32(n+127)<<23)
}

// sigmoid returns 1/(1+e^-x) without overflow: with e = e^-|x|,
// 1/(1+e) for x >= 0 and e/(1+e) for x < 0. The exponential is inlined
// (x <= 0 only, so only the lower clamp is needed) because this is the
// inner loop of SiLU and fused GroupNorm+SiLU.
func sigmoid(x float32) float32 {
	a := -x
	if x < 0 {
		a = x
	}
	// a <= 0 (or NaN): e = e^a.
	e := float32(0)
	if a >= expLo {
		n := int32(a*log2e - 0.5)
		fn := float32(n)
		r := (a - fn*ln2hi) - fn*ln2lo
		p := 1 + r + r*r*(expE2+r*(expE3+r*(expE4+r*(expE5+r*expE6))))
		e = p * math.Float32frombits(uint32(n+127)<<23)
	} else if a != a {
		return a
	}
	d := 1 / (1 + e)
	if x < 0 {
		return e * d
	}
	return d
}
