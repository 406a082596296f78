package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestVecKernels compares the AVX2 kernels with their Go twins on
// lengths around multiples of 8 and on values across the exponential's
// range (tolerance abs 1e-6 + rel 1e-5 per element; sums 1e-4 relative).
func TestVecKernels(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2+FMA: only the Go versions run")
	}
	r := rand.New(rand.NewPCG(21, 22))
	levels := []int{levelAVX2}
	if useAVX512 {
		levels = append(levels, levelAVX512)
	} else {
		t.Log("no AVX-512: testing the AVX2 kernels only")
	}
	for _, level := range levels {
		for _, n := range []int{1, 7, 8, 9, 16, 17, 31, 40, 100, 1027} {
			for _, scale := range []float64{1, 10, 60} {
				t.Run(fmt.Sprintf("level%d/n%d_scale%v", level, n, scale), func(t *testing.T) {
					x := make([]float32, n)
					dy := rnd(r, n)
					for i := range x {
						x[i] = float32(r.NormFloat64() * scale)
					}
					if n > 2 {
						x[1], x[2] = 120, -120
					}
					cmp := func(name string, got, want []float32) {
						t.Helper()
						for i := range want {
							if d := math.Abs(float64(got[i] - want[i])); !(d <= 1e-6+1e-5*math.Abs(float64(want[i]))) &&
								!(math.IsNaN(float64(got[i])) && math.IsNaN(float64(want[i]))) {
								t.Fatalf("%s[%d] (x=%v) = %v, want %v", name, i, x[i], got[i], want[i])
							}
						}
					}
					// siluAffine
					got, want := newOut(n), make([]float32, n)
					siluAffineAt(level, got.v(), x, 0.7, -0.2)
					siluAffineGo(want, x, 0.7, -0.2)
					got.checkGuard(t, "siluAffine")
					cmp("siluAffine", got.v(), want)
					xf := x
					// siluBwd
					g2, w2 := newOut(n), make([]float32, n)
					s1, s2 := siluBwdAt(level, g2.v(), xf, dy, 0.1, 1.3, 0.9, 0.05)
					t1, t2 := siluBwdGo(w2, xf, dy, 0.1, 1.3, 0.9, 0.05)
					g2.checkGuard(t, "siluBwd")
					cmp("siluBwd", g2.v(), w2)
					if math.Abs(float64(s1-t1)) > 1e-4*(1+math.Abs(float64(t1))) || math.Abs(float64(s2-t2)) > 1e-4*(1+math.Abs(float64(t2))) {
						t.Fatalf("siluBwd sums %v %v, want %v %v", s1, s2, t1, t2)
					}
					// sumVec, sqDevVec (float32 sums; 1e-5 relative of the magnitude)
					var ws, wq, mag float64
					for _, v := range x {
						ws += float64(v)
						wq += (float64(v) - 0.3) * (float64(v) - 0.3)
						mag += math.Abs(float64(v))
					}
					if got := float64(sumVec(x)); math.Abs(got-ws) > 1e-5*mag+1e-6 {
						t.Fatalf("sumVec = %v, want %v", got, ws)
					}
					if got := float64(sqDevVec(x, 0.3)); math.Abs(got-wq) > 1e-5*wq+1e-6 {
						t.Fatalf("sqDevVec = %v, want %v", got, wq)
					}
					// axbyc
					ya, yb := newIn(dy), append([]float32(nil), dy...)
					axbyc(ya.v(), x, 0.5, -1.5, 0.25)
					axbycGo(yb, x, 0.5, -1.5, 0.25)
					ya.checkGuard(t, "axbyc")
					cmp("axbyc", ya.v(), yb)
					// expSum
					m := float32(math.Inf(-1))
					for _, v := range xf {
						m = max(m, v)
					}
					// maxOf, with the largest value also moved to the end
					// (the scalar tail) and into each 16-lane block.
					if got := maxOfAt(level, xf); got != m {
						t.Fatalf("maxOf = %v, want %v", got, m)
					}
					for p := n - 1; p >= 0; p -= 13 {
						xm := append([]float32(nil), xf...)
						xm[p] = 500
						if got := maxOfAt(level, xm); got != 500 {
							t.Fatalf("maxOf with 500 at %d = %v", p, got)
						}
					}
					e1, e2 := append([]float32(nil), xf...), append([]float32(nil), xf...)
					se := expSumAt(level, e1, m)
					sw := expSumGo(e2, m)
					cmp("expSum", e1, e2)
					if math.Abs(float64(se-sw)) > 1e-5*math.Abs(float64(sw)) {
						t.Fatalf("expSum = %v, want %v", se, sw)
					}
				})
			}
		}
	}
}

func BenchmarkSiLUAffine(b *testing.B) {
	x := rnd(rand.New(rand.NewPCG(1, 2)), 1<<16)
	y := make([]float32, len(x))
	for _, level := range []int{levelGo, levelAVX2, levelAVX512} {
		if level > simdLevel {
			continue
		}
		b.Run([]string{"go", "avx2", "avx512"}[level], func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				siluAffineAt(level, y, x, 1.1, 0.1)
			}
			b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds()/1e9, "Gelem/s")
		})
	}
}
