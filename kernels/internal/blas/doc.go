// Package blas, internal to kernels, provides single-precision matrix multiplication (sgemm)
// chosen at run time: oneDNN's dnnl_sgemm from libdnnl.so.2, OpenBLAS's
// cblas_sgemm from libopenblas.so.0, or gonum's pure-Go sgemm. The native
// libraries are opened with purego's dlopen, so the package builds with
// CGO_ENABLED=0 and needs only Go at build and test time.
//
// Contract of every implementation (row-major, as in the C BLAS with
// CblasRowMajor):
//
//	C = alpha * op(A) * op(B) + beta * C
//
// with op(A) an (M, K) matrix (A is (M, K) with row stride lda, or (K, M)
// when transA), op(B) a (K, N) matrix (B is (K, N) with row stride ldb, or
// (N, K) when transB) and C (M, N) with row stride ldc. A and B are never
// modified. When beta is 0, C is overwritten and its old contents (even NaN)
// are ignored.
//
// Choose an implementation once with Load ("auto", "dnnl", "openblas",
// "gonum") and pass it down, like gonum's blas64.Use but without global
// state. A loaded Sgemm runs one thread per call; SetThreads raises it
// (oneDNN: OpenMP threads, set per call on the calling OS thread; OpenBLAS:
// process-wide). Callers that split work over goroutines themselves, as
// package kernels does, keep 1 so that library threads and goroutines do
// not oversubscribe the cores. Invalid arguments and library failures are
// returned as errors, never panics.
//
// Measured on the 2-core build machine (n = 1024, BenchmarkSgemm): oneDNN
// about 230 GFLOP/s on one thread and 360-450 on two, OpenBLAS 124 and
// 220-240, gonum 24.
package blas
