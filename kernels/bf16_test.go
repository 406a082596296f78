package kernels

import (
	"math/rand/v2"
	"testing"
)

// TestLinearBF16: in bf16 mode, Linear layers with at least
// linearBF16Rows rows run on the bf16 GEMM, within 1e-2 relative L2 of
// the float64 product (measured about 3e-3); smaller ones stay fp32
// (1e-6). With and without bias, twice each (the second run on the
// cached bf16 weights), on 1 to 3 threads.
func TestLinearBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, threads := range []int{1, 2, 3} {
		c := bf16CPU(t, threads)
		for _, s := range [][3]int{{64, 48, 40}, {130, 256, 96}, {63, 32, 16}, {4, 512, 256}} {
			m, in, out := s[0], s[1], s[2]
			x, w, b := rnd(r, m*in), rnd(r, out*in), rnd(r, out)
			for _, bias := range [][]float32{nil, b} {
				want := make([]float64, m*out)
				for i := 0; i < m; i++ {
					for o := 0; o < out; o++ {
						var v float64
						if bias != nil {
							v = float64(bias[o])
						}
						for k := 0; k < in; k++ {
							v += float64(x[i*in+k]) * float64(w[o*in+k])
						}
						want[i*out+o] = v
					}
				}
				tol := 1e-6
				if m >= linearBF16Rows {
					tol = 1e-2
				}
				for rep := 0; rep < 2; rep++ {
					y := newOut(m * out)
					c.Linear(y.v(), x, w, bias, m, in, out)
					if err := c.Sync(); err != nil {
						t.Fatal(err)
					}
					e := relL2(y.v(), want)
					if rep == 0 && bias != nil && threads == 2 {
						t.Logf("%d x %d -> %d: relative L2 error %.3g", m, in, out, e)
					}
					if e > tol {
						t.Errorf("%d threads, %d x %d -> %d, bias %v: relative L2 error %.3g > %.3g", threads, m, in, out, bias != nil, e, tol)
					}
				}
			}
		}
	}
}
