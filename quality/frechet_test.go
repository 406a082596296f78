package quality

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// gaussian draws n vectors from N(mean, L L^T) with a lower-triangular L.
func gaussian(r *rand.Rand, n int, mean []float64, l *mat.Dense) []float32 {
	d := len(mean)
	x := make([]float32, n*d)
	z := make([]float64, d)
	for i := range n {
		for j := range z {
			z[j] = r.NormFloat64()
		}
		for j := range d {
			v := mean[j]
			for k := 0; k <= j; k++ {
				v += l.At(j, k) * z[k]
			}
			x[i*d+j] = float32(v)
		}
	}
	return x
}

// TestFrechetClosedForm checks the distance on exact statistics against
// the closed form for diagonal covariances: |mu_a-mu_b|^2 + sum (s_a-s_b)^2.
func TestFrechetClosedForm(t *testing.T) {
	mk := func(mean, sd []float64) Stats {
		c := mat.NewSymDense(len(sd), nil)
		for i, s := range sd {
			c.SetSym(i, i, s*s)
		}
		return Stats{N: 2, Mean: mean, Cov: c}
	}
	a := mk([]float64{0, 1, 2}, []float64{1, 2, 0.5})
	b := mk([]float64{1, 1, 0}, []float64{2, 2, 0.1})
	got, err := FrechetDistance(a, b)
	if err != nil {
		t.Fatal(err)
	}
	want := 1.0 + 4 + (1 + 0 + 0.16)
	if math.Abs(got-want) > 1e-9*want {
		t.Fatalf("distance %v, closed form %v", got, want)
	}
	self, _ := FrechetDistance(a, a)
	if math.Abs(self) > 1e-9 {
		t.Fatalf("distance to itself %v, want 0", self)
	}
}

// TestFrechetRotated checks a full covariance: rotating one Gaussian's
// covariance (same eigenvalues) by 90 degrees in 2-d swaps its variances,
// so d^2 = (sa - sb)^2 + (sb - sa)^2 against the unrotated one.
func TestFrechetRotated(t *testing.T) {
	c := mat.NewSymDense(2, []float64{4, 0, 0, 1})
	rot := mat.NewSymDense(2, []float64{1, 0, 0, 4})
	got, err := FrechetDistance(Stats{Mean: []float64{0, 0}, Cov: c}, Stats{Mean: []float64{0, 0}, Cov: rot})
	if err != nil {
		t.Fatal(err)
	}
	if want := 2.0; math.Abs(got-want) > 1e-9 {
		t.Fatalf("distance %v, want %v", got, want)
	}
	// A correlated covariance against itself rotated by 45 degrees:
	// [[2.5, 1.5], [1.5, 2.5]] has eigenvalues 4 and 1 like c, so the
	// distance is that of two commuting-free matrices with the same
	// spectrum: tr(A)+tr(B)-2 tr((A^1/2 B A^1/2)^1/2) computed by a
	// 2x2 closed form: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
	corr := mat.NewSymDense(2, []float64{2.5, 1.5, 1.5, 2.5})
	got, err = FrechetDistance(Stats{Mean: []float64{0, 0}, Cov: c}, Stats{Mean: []float64{0, 0}, Cov: corr})
	if err != nil {
		t.Fatal(err)
	}
	// M = A^1/2 B A^1/2 with A = diag(4, 1): det M = det A det B = 4*4,
	// tr M = 4*2.5 + 1*2.5 = 12.5.
	want := 5 + 5 - 2*math.Sqrt(12.5+2*math.Sqrt(16))
	if math.Abs(got-want) > 1e-9 {
		t.Fatalf("distance %v, 2x2 closed form %v", got, want)
	}
}

// TestStatsFromSamples checks the estimator on samples of two known
// Gaussians: the distance approaches the closed form as n grows.
func TestStatsFromSamples(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	l := mat.NewDense(2, 2, []float64{1, 0, 0.5, 2})
	xa := gaussian(r, 20000, []float64{0, 0}, l)
	xb := gaussian(r, 20000, []float64{1, 0}, l)
	sa, err := NewStats(xa, 20000, 2)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := NewStats(xb, 20000, 2)
	if math.Abs(sa.Cov.At(1, 1)-4.25) > 0.15 || math.Abs(sa.Cov.At(0, 1)-0.5) > 0.06 {
		t.Fatalf("covariance %v, want [[1 .5] [.5 4.25]]", mat.Formatted(sa.Cov))
	}
	got, err := FrechetDistance(sa, sb)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-1) > 0.05 {
		t.Fatalf("distance %v between shifted samples, want about 1", got)
	}
}

func TestStatsErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		x      []float32
		n, dim int
	}{
		{"one vector", []float32{1, 2}, 1, 2},
		{"short", []float32{1, 2, 3}, 2, 2},
		{"nan", []float32{1, float32(math.NaN()), 3, 4}, 2, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewStats(c.x, c.n, c.dim); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := FrechetDistance(Stats{Mean: []float64{1}}, Stats{Mean: []float64{1, 2}}); err == nil {
		t.Fatal("mismatched dimensions: no error")
	}
}
