package blas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// refSgemm is the obvious triple loop, in float64:
// C[i,j] = alpha * sum_l op(A)[i,l] op(B)[l,j] + beta * C[i,j].
func refSgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for l := 0; l < k; l++ {
				var av, bv float32
				if transA {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				if transB {
					bv = b[j*ldb+l]
				} else {
					bv = b[l*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			v := float64(alpha) * s
			if beta != 0 {
				v += float64(beta) * float64(c[i*ldc+j])
			}
			c[i*ldc+j] = float32(v)
		}
	}
}

func impls(t testing.TB) []Sgemm {
	out := []Sgemm{Gonum{}}
	for _, name := range []string{"dnnl", "openblas"} {
		s, err := Load(name)
		if err != nil {
			t.Logf("skipping %s: %v", name, err)
			continue
		}
		s.SetThreads(2)
		out = append(out, s)
	}
	return out
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func TestSgemmAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	type tc struct {
		m, n, k, padA, padB, padC int
		ta, tb                    bool
		alpha, beta               float32
	}
	var cases []tc
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			cases = append(cases,
				tc{1, 1, 1, 0, 0, 0, ta, tb, 1, 0},
				tc{7, 5, 3, 1, 2, 3, ta, tb, 1.5, 0},
				tc{33, 17, 65, 3, 0, 5, ta, tb, -0.5, 0.25},
				tc{64, 128, 96, 0, 0, 0, ta, tb, 1, 1},
				tc{1 + r.IntN(70), 1 + r.IntN(70), 1 + r.IntN(70), r.IntN(4), r.IntN(4), r.IntN(4), ta, tb, 1, 0},
			)
		}
	}
	for _, s := range impls(t) {
		for _, c := range cases {
			name := fmt.Sprintf("%s/m%d_n%d_k%d_ta%v_tb%v_beta%v", s.Name(), c.m, c.n, c.k, c.ta, c.tb, c.beta)
			t.Run(name, func(t *testing.T) {
				ac, ar := c.k, c.m
				if c.ta {
					ac, ar = c.m, c.k
				}
				bc, br := c.n, c.k
				if c.tb {
					bc, br = c.k, c.n
				}
				lda, ldb, ldc := ac+c.padA, bc+c.padB, c.n+c.padC
				a := randSlice(r, ar*lda)
				b := randSlice(r, br*ldb)
				c0 := randSlice(r, c.m*ldc)
				if c.beta == 0 {
					for i := range c0 {
						c0[i] = float32(math.NaN()) // beta 0 must ignore C
					}
				}
				const guard = 8
				got := make([]float32, len(c0)+2*guard)
				for i := range got {
					got[i] = float32(math.NaN())
				}
				copy(got[guard:], c0)
				want := append([]float32(nil), c0...)
				a0, b0 := append([]float32(nil), a...), append([]float32(nil), b...)
				if err := s.Sgemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a, lda, b, ldb, c.beta, got[guard:guard+len(c0)], ldc); err != nil {
					t.Fatal(err)
				}
				refSgemm(c.ta, c.tb, c.m, c.n, c.k, c.alpha, a, lda, b, ldb, c.beta, want, ldc)
				for i := 0; i < guard; i++ {
					if !math.IsNaN(float64(got[i])) || !math.IsNaN(float64(got[len(got)-1-i])) {
						t.Fatalf("guard band overwritten")
					}
				}
				for i := range a {
					if a[i] != a0[i] {
						t.Fatalf("A modified")
					}
				}
				for i := range b {
					if b[i] != b0[i] {
						t.Fatalf("B modified")
					}
				}
				// tolerance: abs 1e-4*k + |ref|*1e-4 (float32 accumulation over k terms).
				for i := 0; i < c.m; i++ {
					for j := 0; j < c.n; j++ {
						g, w := got[guard+i*ldc+j], want[i*ldc+j]
						if d := math.Abs(float64(g - w)); !(d <= 1e-4*float64(c.k)+math.Abs(float64(w))*1e-4) {
							t.Fatalf("C[%d,%d] = %v, want %v", i, j, g, w)
						}
					}
					for j := c.n; j < ldc; j++ { // padding between rows untouched
						if g, w := got[guard+i*ldc+j], c0[i*ldc+j]; g != w && !(math.IsNaN(float64(g)) && math.IsNaN(float64(w))) {
							t.Fatalf("C padding [%d,%d] changed", i, j)
						}
					}
				}
			})
		}
	}
}

func TestLoad(t *testing.T) {
	for _, pref := range []string{"auto", "gonum", "AUTO", ""} {
		s, err := Load(pref)
		if err != nil {
			t.Fatalf("Load(%q): %v", pref, err)
		}
		if s.Name() == "" {
			t.Fatalf("Load(%q): empty name", pref)
		}
	}
	if _, err := Load("mkl"); err == nil {
		t.Fatal("Load(mkl): want error")
	}
}

func TestCheckArgs(t *testing.T) {
	a := make([]float32, 6)
	tests := []struct {
		name          string
		m, n, k       int
		lda, ldb, ldc int
		la, lb, lc    int
		ok            bool
	}{
		{"fits", 2, 3, 3, 3, 3, 3, 6, 9, 6, true},
		{"negative", -1, 3, 3, 3, 3, 3, 6, 9, 6, false},
		{"small lda", 2, 3, 3, 2, 3, 3, 6, 9, 6, false},
		{"short a", 2, 3, 3, 3, 3, 3, 5, 9, 6, false},
		{"short c", 2, 3, 3, 3, 3, 3, 6, 9, 5, false},
		{"empty", 0, 3, 3, 3, 3, 3, 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = a
			err := checkArgs(false, false, tt.m, tt.n, tt.k, make([]float32, tt.la), tt.lda,
				make([]float32, tt.lb), tt.ldb, make([]float32, tt.lc), tt.ldc)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func ExampleLoad() {
	s, err := Load("gonum")
	if err != nil {
		panic(err)
	}
	a := []float32{1, 2, 3, 4} // (2, 2)
	b := []float32{1, 0, 0, 1} // identity
	c := make([]float32, 4)
	s.Sgemm(false, false, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2)
	fmt.Println(s.Name(), c)
	// Output: gonum [1 2 3 4]
}

// TestSgemmErrors: arguments that would reach outside the slices are an
// error from every implementation, never a panic, and C is untouched.
func TestSgemmErrors(t *testing.T) {
	for _, name := range []string{"gonum", "dnnl", "openblas"} {
		s, err := Load(name)
		if err != nil {
			t.Logf("%s: %v", name, err)
			continue
		}
		c := []float32{7, 7, 7, 7}
		if err := s.Sgemm(false, false, 2, 2, 3, 1, make([]float32, 4), 3, make([]float32, 4), 2, 0, c, 2); err == nil {
			t.Errorf("%s: A too short for m=2 k=3: no error", name)
		}
		if c[0] != 7 {
			t.Errorf("%s: C written on a bad call", name)
		}
	}
}
