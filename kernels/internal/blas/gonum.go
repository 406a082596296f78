package blas

import (
	gblas "gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// Gonum is gonum's pure-Go sgemm (about 21 GFLOP/s on the 2-core build
// machine); always available. Out-of-range arguments are errors, checked
// before gonum (which would panic) sees them.
type Gonum struct{}

// Name returns "gonum".
func (Gonum) Name() string { return "gonum" }

// SetThreads is a no-op: gonum's sgemm parallelises internally on its own.
func (Gonum) SetThreads(int) {}

// Threads returns 1.
func (Gonum) Threads() int { return 1 }

// Sgemm computes C = alpha*op(A)*op(B) + beta*C (see the package doc).
func (Gonum) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) error {
	if err := checkArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc); err != nil {
		return err
	}
	if m == 0 || n == 0 {
		return nil
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return nil
	}
	gonum.Implementation{}.Sgemm(tr(transA), tr(transB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	return nil
}

func tr(t bool) gblas.Transpose {
	if t {
		return gblas.Trans
	}
	return gblas.NoTrans
}

// scaleC sets C = beta*C, with beta == 0 overwriting C with zeros.
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}
