package blas

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkSgemm reports GFLOP/s (2*n^3) of square row-major sgemm for
// every library found, with 1 and 2 threads:
//
//	nice go test -run '^$' -bench Sgemm ./blas
func BenchmarkSgemm(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, name := range []string{"dnnl", "openblas", "gonum"} {
		for _, th := range []int{1, 2} {
			s, err := Load(name)
			if err != nil {
				b.Logf("skipping %s: %v", name, err)
				continue
			}
			s.SetThreads(th)
			for _, n := range []int{256, 1024} {
				a, bb, c := randSlice(r, n*n), randSlice(r, n*n), make([]float32, n*n)
				b.Run(fmt.Sprintf("%s/threads%d/n%d", name, th, n), func(b *testing.B) {
					s.Sgemm(false, false, n, n, n, 1, a, n, bb, n, 0, c, n)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						s.Sgemm(false, false, n, n, n, 1, a, n, bb, n, 0, c, n)
					}
					b.ReportMetric(2*float64(n*n*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
