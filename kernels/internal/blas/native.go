package blas

import (
	"fmt"
	"github.com/ddpm-go/ddpm/kernels/internal/dl"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The libraries are opened once per process (dlopen is itself global); the
// handles are immutable after the sync.Once, so this is not mutable state
// visible to callers.
var (
	dnnlOnce sync.Once
	dnnlLib  *dnnlFuncs
	dnnlErr  error
	obOnce   sync.Once
	obLib    *openblasFuncs
	obErr    error
)

type dnnlFuncs struct {
	// dnnl_status_t dnnl_sgemm(char transa, char transb, dnnl_dim_t M,
	// dnnl_dim_t N, dnnl_dim_t K, float alpha, const float *A, dnnl_dim_t lda,
	// const float *B, dnnl_dim_t ldb, float beta, float *C, dnnl_dim_t ldc);
	sgemm func(ta, tb byte, m, n, k int64, alpha float32, a unsafe.Pointer, lda int64,
		b unsafe.Pointer, ldb int64, beta float32, c unsafe.Pointer, ldc int64) int32
	// void omp_set_num_threads(int); per calling OS thread in libgomp.
	ompSetNumThreads func(n int32)
}

type openblasFuncs struct {
	// void cblas_sgemm(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum
	// CBLAS_TRANSPOSE, blasint M, blasint N, blasint K, float alpha,
	// const float *A, blasint lda, const float *B, blasint ldb, float beta,
	// float *C, blasint ldc);
	sgemm func(order, ta, tb int32, m, n, k int32, alpha float32, a unsafe.Pointer, lda int32,
		b unsafe.Pointer, ldb int32, beta float32, c unsafe.Pointer, ldc int32)
	setNumThreads func(n int32)
}

func bind(lib uintptr, fptr any, name string) error {
	sym, err := dl.Sym(lib, name)
	if err != nil {
		return fmt.Errorf("symbol %s: %w", name, err)
	}
	purego.RegisterFunc(fptr, sym)
	return nil
}

func openDNNL() (*dnnlFuncs, error) {
	dnnlOnce.Do(func() {
		lib, err := dl.Open("libdnnl.so.2")
		if err != nil {
			dnnlErr = fmt.Errorf("open libdnnl.so.2 (Debian package libdnnl2): %w", err)
			return
		}
		f := &dnnlFuncs{}
		if err := bind(lib, &f.sgemm, "dnnl_sgemm"); err != nil {
			dnnlErr = fmt.Errorf("libdnnl.so.2: %w", err)
			return
		}
		// oneDNN's Debian build threads with OpenMP (libgomp); without the
		// symbol the thread count stays at the OpenMP default.
		if gomp, err := dl.Open("libgomp.so.1"); err == nil {
			_ = bind(gomp, &f.ompSetNumThreads, "omp_set_num_threads")
		}
		dnnlLib = f
	})
	return dnnlLib, dnnlErr
}

func openOpenBLAS() (*openblasFuncs, error) {
	obOnce.Do(func() {
		lib, err := dl.Open("libopenblas.so.0")
		if err != nil {
			obErr = fmt.Errorf("open libopenblas.so.0 (Debian package libopenblas0): %w", err)
			return
		}
		f := &openblasFuncs{}
		if err := bind(lib, &f.sgemm, "cblas_sgemm"); err != nil {
			obErr = fmt.Errorf("libopenblas.so.0: %w", err)
			return
		}
		if err := bind(lib, &f.setNumThreads, "openblas_set_num_threads"); err != nil {
			obErr = fmt.Errorf("libopenblas.so.0: %w", err)
			return
		}
		obLib = f
	})
	return obLib, obErr
}

// DNNL is oneDNN's dnnl_sgemm (JIT AVX-512/AVX2 kernels, OpenMP threads).
// Each call pins its goroutine to its OS thread and sets that thread's
// OpenMP thread count (libgomp keeps it per thread) before calling, so the
// count from SetThreads holds whichever thread Go runs it on.
type DNNL struct {
	f       *dnnlFuncs
	threads atomic.Int32
}

func loadDNNL() (Sgemm, error) {
	f, err := openDNNL()
	if err != nil {
		return nil, err
	}
	d := &DNNL{f: f}
	d.threads.Store(1)
	return d, nil
}

// Name returns "dnnl".
func (d *DNNL) Name() string { return "dnnl" }

// SetThreads sets the OpenMP thread count of later calls (n < 1 means 1).
func (d *DNNL) SetThreads(n int) { d.threads.Store(int32(max(n, 1))) }

// Threads reports the thread count of later calls.
func (d *DNNL) Threads() int { return int(d.threads.Load()) }

// Sgemm computes C = alpha*op(A)*op(B) + beta*C (see the package doc).
func (d *DNNL) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
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
	runtime.LockOSThread()
	if d.f.ompSetNumThreads != nil {
		d.f.ompSetNumThreads(d.threads.Load())
	}
	st := d.f.sgemm(TransChar(transA), TransChar(transB), int64(m), int64(n), int64(k), alpha,
		unsafe.Pointer(&a[0]), int64(lda), unsafe.Pointer(&b[0]), int64(ldb), beta,
		unsafe.Pointer(&c[0]), int64(ldc))
	runtime.UnlockOSThread()
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(c)
	if st != 0 {
		return fmt.Errorf("blas: dnnl_sgemm(m=%d n=%d k=%d) failed with status %d", m, n, k, st)
	}
	return nil
}

// TransChar is a BLAS transpose argument: 'T' when t, else 'N'.
func TransChar(t bool) byte {
	if t {
		return 'T'
	}
	return 'N'
}

// OpenBLAS is OpenBLAS's cblas_sgemm. Its thread count is process-wide
// (openblas_set_num_threads), so every OpenBLAS value shares the last
// SetThreads.
type OpenBLAS struct {
	f       *openblasFuncs
	threads atomic.Int32
}

func loadOpenBLAS() (Sgemm, error) {
	f, err := openOpenBLAS()
	if err != nil {
		return nil, err
	}
	o := &OpenBLAS{f: f}
	o.threads.Store(1)
	return o, nil
}

// Name returns "openblas".
func (o *OpenBLAS) Name() string { return "openblas" }

// SetThreads sets OpenBLAS's process-wide thread count (n < 1 means 1).
func (o *OpenBLAS) SetThreads(n int) {
	n = max(n, 1)
	o.threads.Store(int32(n))
	o.f.setNumThreads(int32(n))
}

// Threads reports the thread count set last through this value.
func (o *OpenBLAS) Threads() int { return int(o.threads.Load()) }

const (
	cblasRowMajor = 101
	cblasNoTrans  = 111
	cblasTrans    = 112
)

func ctr(t bool) int32 {
	if t {
		return cblasTrans
	}
	return cblasNoTrans
}

// Sgemm computes C = alpha*op(A)*op(B) + beta*C (see the package doc).
func (o *OpenBLAS) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) error {
	if err := checkArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc); err != nil {
		return err
	}
	if max(m, n, k, lda, ldb, ldc) > math.MaxInt32 {
		return fmt.Errorf("blas: OpenBLAS sgemm sizes m=%d n=%d k=%d lda=%d ldb=%d ldc=%d: must fit its 32-bit blasint", m, n, k, lda, ldb, ldc)
	}
	if m == 0 || n == 0 {
		return nil
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return nil
	}
	o.f.sgemm(cblasRowMajor, ctr(transA), ctr(transB), int32(m), int32(n), int32(k), alpha,
		unsafe.Pointer(&a[0]), int32(lda), unsafe.Pointer(&b[0]), int32(ldb), beta,
		unsafe.Pointer(&c[0]), int32(ldc))
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(c)
	return nil
}
