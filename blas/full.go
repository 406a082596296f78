package blas

import (
	gblas "gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// Full is a complete gonum BLAS (gonum's blas.Float32 and blas.Float64
// interfaces) whose Sgemm is the given run-time sgemm and whose other
// routines are gonum's pure-Go ones. It is what libraries that take a
// whole BLAS want, e.g. Gorgonia's gorgonia.Use(blas.Full{S: s}), so that
// their float32 matrix products run in oneDNN or OpenBLAS.
type Full struct {
	gonum.Implementation
	// S computes every Sgemm; nil means gonum's.
	S Sgemm
}

var (
	_ gblas.Float32 = Full{}
	_ gblas.Float64 = Full{}
)

// Sgemm computes C = alpha*op(A)*op(B) + beta*C through f.S (row-major,
// gonum's argument order and panics on invalid arguments).
func (f Full) Sgemm(tA, tB gblas.Transpose, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	if f.S == nil {
		f.Implementation.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	f.S.Sgemm(tA != gblas.NoTrans, tB != gblas.NoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
