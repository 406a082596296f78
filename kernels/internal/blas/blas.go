package blas

import (
	"fmt"
	"strings"
)

// Sgemm is a single-precision general matrix multiply,
// C = alpha * op(A) * op(B) + beta * C, row-major (see the package doc).
// Implementations are safe for concurrent use.
type Sgemm interface {
	// Name names the library, e.g. "dnnl", "openblas" or "gonum".
	Name() string
	// Sgemm computes C = alpha*op(A)*op(B) + beta*C with op(A) (M, K),
	// op(B) (K, N), C (M, N), all row-major with the given row strides.
	// Arguments that would reach outside the slices, and failures of the
	// library, are errors (C is then unspecified).
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
		b []float32, ldb int, beta float32, c []float32, ldc int) error
	// SetThreads sets how many threads one Sgemm call may use (>= 1).
	// The pure-Go implementation is single-threaded and ignores it.
	SetThreads(n int)
	// Threads reports the thread count set by SetThreads (1 for gonum).
	Threads() int
}

// Names lists the preferences Load accepts.
var names = []string{"auto", "dnnl", "openblas", "gonum"}

// Load returns the sgemm named by pref: "dnnl" (oneDNN, libdnnl.so.2),
// "openblas" (libopenblas.so.0), "gonum" (pure Go, always available) or
// "auto" (the first of dnnl, openblas, gonum that loads). An explicit name
// whose library cannot be opened is an error; "auto" falls back silently
// (check Name to see what was chosen). The result runs one thread per
// call until SetThreads says otherwise: callers that split work over
// goroutines keep it at 1, a single-threaded caller sets the core count.
func Load(pref string) (Sgemm, error) {
	var s Sgemm
	var err error
	switch strings.ToLower(strings.TrimSpace(pref)) {
	case "auto", "":
		if s, err = loadDNNL(); err != nil {
			if s, err = loadOpenBLAS(); err != nil {
				s, err = Gonum{}, nil
			}
		}
	case "dnnl", "onednn":
		s, err = loadDNNL()
	case "openblas":
		s, err = loadOpenBLAS()
	case "gonum", "go":
		s = Gonum{}
	default:
		return nil, fmt.Errorf("blas: unknown library %q: allowed are %s", pref, strings.Join(names, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("blas: load %q: %w", pref, err)
	}
	s.SetThreads(1)
	return s, nil
}

// checkArgs reports sgemm arguments that would read or write outside the
// slices; native libraries would otherwise touch foreign memory.
func checkArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) error {
	if m < 0 || n < 0 || k < 0 {
		return fmt.Errorf("blas: sgemm sizes m=%d n=%d k=%d: must be >= 0", m, n, k)
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if lda < max(1, ac) {
		return fmt.Errorf("blas: sgemm lda=%d: must be >= max(1, %d)", lda, ac)
	}
	if ldb < max(1, bc) {
		return fmt.Errorf("blas: sgemm ldb=%d: must be >= max(1, %d)", ldb, bc)
	}
	if ldc < max(1, n) {
		return fmt.Errorf("blas: sgemm ldc=%d: must be >= max(1, %d)", ldc, n)
	}
	if m == 0 || n == 0 {
		return nil
	}
	if k > 0 {
		if need := (ar-1)*lda + ac; len(a) < need {
			return fmt.Errorf("blas: sgemm len(a)=%d: need %d", len(a), need)
		}
		if need := (br-1)*ldb + bc; len(b) < need {
			return fmt.Errorf("blas: sgemm len(b)=%d: need %d", len(b), need)
		}
	}
	if need := (m-1)*ldc + n; len(c) < need {
		return fmt.Errorf("blas: sgemm len(c)=%d: need %d", len(c), need)
	}
	return nil
}
