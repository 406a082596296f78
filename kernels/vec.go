package kernels

// The exponential-heavy loops, each with a plain-Go version (the reference
// the tests compare against, and the fallback without AVX2), an AVX2
// kernel for multiples of 8 and an AVX-512 kernel for multiples of 16;
// the ...At functions run a given level, the others the best this CPU has.

// SIMD levels of the kernels below: the plain-Go twin, AVX2+FMA, AVX-512.
const (
	levelGo = iota
	levelAVX2
	levelAVX512
)

// simdLevel is the best level this CPU runs (fixed at start-up).
var simdLevel = func() int {
	switch {
	case useAVX512:
		return levelAVX512
	case useAVX2:
		return levelAVX2
	}
	return levelGo
}()

// siluAffine sets dst[i] = z*sigmoid(z), z = a*src[i] + b (dst may alias src).
func siluAffine(dst, src []float32, a, b float32) { siluAffineAt(simdLevel, dst, src, a, b) }

func siluAffineAt(level int, dst, src []float32, a, b float32) {
	n := len(src)
	dst = dst[:n]
	i := 0
	if level >= levelAVX512 && n >= 16 {
		i = n &^ 15
		siluAffineAVX512(&dst[0], &src[0], i, a, b)
	}
	if level >= levelAVX2 && n-i >= 8 {
		j := (n - i) &^ 7
		siluAffineAVX2(&dst[i], &src[i], j, a, b)
		i += j
	}
	siluAffineGo(dst[i:], src[i:], a, b)
}

func siluAffineGo(dst, src []float32, a, b float32) {
	for i, v := range src {
		z := a*v + b
		dst[i] = z * sigmoid(z)
	}
}

// siluBwd sets dz[i] = dy[i] * s * (1 + z*(1-s)) with xh = (x[i]-mu)*rs,
// z = ga*xh + be, s = sigmoid(z), and returns sum dz and sum dz*xh
// (dz may alias dy).
func siluBwd(dz, x, dy []float32, mu, rs, ga, be float32) (float32, float32) {
	return siluBwdAt(simdLevel, dz, x, dy, mu, rs, ga, be)
}

func siluBwdAt(level int, dz, x, dy []float32, mu, rs, ga, be float32) (float32, float32) {
	n := len(x)
	dz, dy = dz[:n], dy[:n]
	i := 0
	var s1, s2 float32
	if level >= levelAVX512 && n >= 16 {
		i = n &^ 15
		s1, s2 = siluBwdAVX512(&dz[0], &x[0], &dy[0], i, mu, rs, ga, be)
	}
	if level >= levelAVX2 && n-i >= 8 {
		j := (n - i) &^ 7
		t1, t2 := siluBwdAVX2(&dz[i], &x[i], &dy[i], j, mu, rs, ga, be)
		s1, s2 = s1+t1, s2+t2
		i += j
	}
	t1, t2 := siluBwdGo(dz[i:], x[i:], dy[i:], mu, rs, ga, be)
	return s1 + t1, s2 + t2
}

func siluBwdGo(dz, x, dy []float32, mu, rs, ga, be float32) (float32, float32) {
	var s1, s2 float32
	for i, v := range x {
		xh := (v - mu) * rs
		z := ga*xh + be
		s := sigmoid(z)
		d := dy[i] * s * (1 + z*(1-s))
		dz[i] = d
		s1 += d
		s2 += d * xh
	}
	return s1, s2
}

// maxOf returns the largest value of r (len(r) >= 1). A NaN in r may be
// missed; the softmax that follows turns it into NaN anyway.
func maxOf(r []float32) float32 { return maxOfAt(simdLevel, r) }

func maxOfAt(level int, r []float32) float32 {
	n := len(r)
	if level >= levelAVX512 && n >= 16 {
		i := n &^ 15
		m := maxAVX512(&r[0], i)
		if i == n {
			return m
		}
		return max(m, maxOfGo(r[i:]))
	}
	return maxOfGo(r)
}

// maxOfGo is maxOf with four running maxima, so the comparisons do not
// wait on each other.
func maxOfGo(r []float32) float32 {
	m0 := r[0]
	m1, m2, m3 := m0, m0, m0
	i := 0
	for ; i+4 <= len(r); i += 4 {
		m0, m1, m2, m3 = max(m0, r[i]), max(m1, r[i+1]), max(m2, r[i+2]), max(m3, r[i+3])
	}
	for ; i < len(r); i++ {
		m0 = max(m0, r[i])
	}
	return max(max(m0, m1), max(m2, m3))
}

// expSum sets r[i] = e^(r[i]-m) (m >= every r[i]) and returns the sum.
func expSum(r []float32, m float32) float32 { return expSumAt(simdLevel, r, m) }

func expSumAt(level int, r []float32, m float32) float32 {
	n := len(r)
	i := 0
	var s float32
	if level >= levelAVX512 && n >= 16 {
		i = n &^ 15
		s = expSumAVX512(&r[0], i, m)
	}
	if level >= levelAVX2 && n-i >= 8 {
		j := (n - i) &^ 7
		s += expSumAVX2(&r[i], j, m)
		i += j
	}
	return s + expSumGo(r[i:], m)
}

func expSumGo(r []float32, m float32) float32 {
	var s float32
	for j, v := range r {
		e := expf(v - m)
		r[j] = e
		s += e
	}
	return s
}

// sumVec returns sum_i x[i] in float32 (eight or sixteen partial sums).
func sumVec(x []float32) float32 {
	n := len(x)
	i := 0
	var s float32
	if useAVX2 && n >= 8 {
		i = n &^ 7
		s = sumAVX2(&x[0], i)
	}
	return s + sum32(x[i:])
}

// sqDevVec returns sum_i (x[i]-mu)^2 in float32.
func sqDevVec(x []float32, mu float32) float32 {
	n := len(x)
	i := 0
	var s float32
	if useAVX2 && n >= 8 {
		i = n &^ 7
		s = sqDevAVX2(&x[0], i, mu)
	}
	return s + sqDevGo(x[i:], mu)
}

func sqDevGo(x []float32, mu float32) float32 {
	var a0, a1, a2, a3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		d0, d1, d2, d3 := x[i]-mu, x[i+1]-mu, x[i+2]-mu, x[i+3]-mu
		a0 += d0 * d0
		a1 += d1 * d1
		a2 += d2 * d2
		a3 += d3 * d3
	}
	for ; i < len(x); i++ {
		d := x[i] - mu
		a0 += d * d
	}
	return (a0 + a1) + (a2 + a3)
}

// axbyc sets y[i] = a*y[i] + b*x[i] + c.
func axbyc(y, x []float32, a, b, c float32) {
	n := len(x)
	y = y[:n]
	i := 0
	if useAVX2 && n >= 8 {
		i = n &^ 7
		axbycAVX2(&y[0], &x[0], i, a, b, c)
	}
	axbycGo(y[i:], x[i:], a, b, c)
}

func axbycGo(y, x []float32, a, b, c float32) {
	for i, v := range x {
		y[i] = a*y[i] + b*v + c
	}
}
