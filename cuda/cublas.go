package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// cublasAPI holds the cuBLAS entry points (all integer/pointer arguments,
// called through purego.SyscallN; alpha and beta are passed by pointer in
// CUBLAS_POINTER_MODE_HOST).
type cublasAPI struct {
	path                              string
	create, destroy, setStream        uintptr
	setMathMode, getVersion           uintptr
	sgemm, sgemmBatched, setWorkspace uintptr
	gemmEx, gemmBatchedEx             uintptr
}

// cuBLAS constants (cublas_api.h).
const (
	cublasOpN             = 0
	cublasOpT             = 1
	cublasDefaultMath     = 0
	cublasPedanticMath    = 2
	cublasTF32TensorOp    = 3
	cublasDisallowReduced = 16 // CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION

	cudaR32F            = 0           // cudaDataType CUDA_R_32F
	cublasCompute32F    = 68          // cublasComputeType_t CUBLAS_COMPUTE_32F
	cublasCompute16F32F = 74          // CUBLAS_COMPUTE_32F_FAST_16F: inputs down-converted to half
	cublasCompute16BF   = 75          // CUBLAS_COMPUTE_32F_FAST_16BF: inputs down-converted to bfloat16
	cublasGemmDefault   = ^uintptr(0) // CUBLAS_GEMM_DEFAULT (-1)
)

// gemmWorkspace is the workspace given to cuBLAS with
// cublasSetWorkspace (as PyTorch does), so that it never allocates inside
// a CUDA graph capture.
const gemmWorkspace = 32 << 20

// cublasCandidates lists where libcublas is looked for, most specific first:
// $DDPM_LIBCUBLAS when set;
// LD_LIBRARY_PATH is searched by dlopen itself for bare names; CUDA_HOME,
// the CUDA toolkit, Debian's multiarch directory and the nvidia-cublas-cu*
// wheels that a pip PyTorch install brings.
func cublasCandidates() []string {
	names := []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"}
	var out []string
	if p := os.Getenv("DDPM_LIBCUBLAS"); p != "" {
		out = append(out, p)
	}
	out = append(out, names...)
	var dirs []string
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if h := os.Getenv(env); h != "" {
			dirs = append(dirs, filepath.Join(h, "lib64"), filepath.Join(h, "lib"))
		}
	}
	for _, p := range filepath.SplitList(os.Getenv("LD_LIBRARY_PATH")) {
		if p != "" {
			dirs = append(dirs, p)
		}
	}
	dirs = append(dirs, "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
		"/usr/lib/x86_64-linux-gnu", "/usr/lib64")
	for _, pat := range []string{
		"/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib",
		"/usr/local/lib/python3*/site-packages/nvidia/cublas/lib",
		"/usr/lib/python3*/dist-packages/nvidia/cublas/lib",
		"/opt/conda/lib/python3*/site-packages/nvidia/cublas/lib",
		"/usr/local/lib/python3*/dist-packages/nvidia/cu13/lib",
		"/usr/local/lib/python3*/site-packages/nvidia/cu13/lib",
		"/opt/conda/lib",
	} {
		m, _ := filepath.Glob(pat)
		sort.Sort(sort.Reverse(sort.StringSlice(m)))
		dirs = append(dirs, m...)
	}
	if h, err := os.UserHomeDir(); err == nil {
		m, _ := filepath.Glob(filepath.Join(h, ".local/lib/python3*/site-packages/nvidia/cublas/lib"))
		dirs = append(dirs, m...)
	}
	for _, dir := range dirs {
		for _, n := range names {
			out = append(out, filepath.Join(dir, n))
		}
	}
	return out
}

// The cuBLAS libraries opened so far, by candidate path, and the one
// whose cublasCreate worked (used by every later Device). dlopen is
// process-wide, so this is too.
var (
	blasMu     sync.Mutex
	blasOpened = map[string]*cublasAPI{}
	blasByLib  = map[uintptr]*cublasAPI{}
	blasChosen *cublasAPI
)

// haveCUBLAS reports ErrNoCUBLAS, naming every path tried, when no
// candidate library opens; it opens the first that does.
func haveCUBLAS() error {
	blasMu.Lock()
	defer blasMu.Unlock()
	if blasChosen != nil {
		return nil
	}
	var tried []string
	for _, p := range cublasCandidates() {
		if _, err := openCUBLASAt(p); err == nil {
			return nil
		} else {
			tried = append(tried, err.Error())
		}
	}
	return &libError{sentinel: ErrNoCUBLAS, hint: "set DDPM_LIBCUBLAS, CUDA_HOME or LD_LIBRARY_PATH", tried: tried}
}

// openCUBLASAt opens one candidate and binds its symbols (cached).
func openCUBLASAt(p string) (*cublasAPI, error) {
	if a, ok := blasOpened[p]; ok {
		return a, nil
	}
	if strings.Contains(p, "/") {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s (not found)", p)
		}
	}
	lib, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("%s (%s)", p, dlReason(p, err))
	}
	if a, ok := blasByLib[lib]; ok { // the same file under another name
		blasOpened[p] = a
		return a, nil
	}
	a := &cublasAPI{path: p}
	for _, s := range []struct {
		p    *uintptr
		name string
	}{
		{&a.create, "cublasCreate_v2"},
		{&a.destroy, "cublasDestroy_v2"},
		{&a.setStream, "cublasSetStream_v2"},
		{&a.setMathMode, "cublasSetMathMode"},
		{&a.getVersion, "cublasGetVersion_v2"},
		{&a.sgemm, "cublasSgemm_v2"},
		{&a.sgemmBatched, "cublasSgemmBatched"},
		{&a.gemmEx, "cublasGemmEx"},
		{&a.gemmBatchedEx, "cublasGemmBatchedEx"},
	} {
		sym, err := purego.Dlsym(lib, s.name)
		if err != nil {
			return nil, fmt.Errorf("%s (lacks %s)", p, s.name)
		}
		*s.p = sym
	}
	if sym, err := purego.Dlsym(lib, "cublasSetWorkspace_v2"); err == nil {
		a.setWorkspace = sym
	}
	blasOpened[p], blasByLib[lib] = a, a
	return a, nil
}

// pickCUBLAS returns the first candidate whose handle can be created:
// a libcublas that loads but fails cublasCreate (a newer cuBLAS than the
// driver supports, say) gives way to the next one. open and create are
// openCUBLASAt and newBLASHandle, parameters for the tests.
func pickCUBLAS(cands []string, open func(string) (*cublasAPI, error), create func(*cublasAPI) (*blasHandle, error)) (*blasHandle, []string, error) {
	var tried []string
	seen := map[*cublasAPI]bool{}
	for _, p := range cands {
		a, err := open(p)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		h, err := create(a)
		if err == nil {
			return h, tried, nil
		}
		tried = append(tried, fmt.Sprintf("%s (%v)", p, err))
	}
	return nil, tried, fmt.Errorf("cuda: no cuBLAS library could create a handle: tried %s", strings.Join(tried, "; "))
}

// newBLAS creates the Device's cuBLAS handle: with the library that
// worked before, else the first candidate that works.
func newBLAS(stream uintptr, prec Precision) (*blasHandle, error) {
	blasMu.Lock()
	defer blasMu.Unlock()
	create := func(a *cublasAPI) (*blasHandle, error) { return newBLASHandle(a, stream, prec) }
	if blasChosen != nil {
		return create(blasChosen)
	}
	h, _, err := pickCUBLAS(cublasCandidates(), openCUBLASAt, create)
	if err != nil {
		return nil, err
	}
	blasChosen = h.api
	return h, nil
}

func (a *cublasAPI) call(fn uintptr, args ...uintptr) BLASStatus {
	r, _, _ := purego.SyscallN(fn, args...)
	return BLASStatus(int32(r))
}

// blasHandle is one cuBLAS handle bound to a stream, with the
// precision of its GEMMs.
type blasHandle struct {
	api       *cublasAPI
	h         uintptr
	compute   uintptr // cublasGemmEx compute type for BF16/FP16; 0: cublasSgemm
	one, zero float32 // host-side alpha/beta constants (heap, stable address)
}

func newBLASHandle(api *cublasAPI, stream uintptr, prec Precision) (*blasHandle, error) {
	b := &blasHandle{api: api, one: 1}
	if s := api.call(api.create, uintptr(unsafe.Pointer(&b.h))); s != 0 {
		return nil, fmt.Errorf("cuda: cublasCreate_v2 (%s): %w", api.path, s)
	}
	if s := api.call(api.setStream, b.h, stream); s != 0 {
		b.close()
		return nil, fmt.Errorf("cuda: cublasSetStream_v2: %w", s)
	}
	// Sgemm in FP32 and TF32 (the math mode says which); cublasGemmEx on
	// float32 matrices with a 16-bit compute type in BF16 and FP16.
	mode := uintptr(cublasDefaultMath)
	switch prec {
	case FP32:
		mode = cublasPedanticMath
	case TF32:
		mode = cublasTF32TensorOp
	case BF16:
		b.compute = cublasCompute16BF
	case FP16:
		b.compute = cublasCompute16F32F
	}
	if s := api.call(api.setMathMode, b.h, mode); s != 0 {
		b.close()
		return nil, fmt.Errorf("cuda: cublasSetMathMode(%d): %w", mode, s)
	}
	return b, nil
}

// setWorkspace gives cuBLAS a fixed workspace (best effort: older
// libraries lack the call).
func (b *blasHandle) setWorkspace(p Ptr, bytes int64) {
	if b.api.setWorkspace != 0 && p != 0 {
		b.api.call(b.api.setWorkspace, b.h, uintptr(p), uintptr(bytes))
	}
}

func (b *blasHandle) close() {
	if b != nil && b.h != 0 {
		b.api.call(b.api.destroy, b.h)
		b.h = 0
	}
}

// version returns cublasGetVersion's number (e.g. 130001).
func (b *blasHandle) version() int {
	var pn runtime.Pinner
	defer pn.Unpin()
	v := hp[int32](&pn)
	b.api.call(b.api.getVersion, b.h, uintptr(unsafe.Pointer(v)))
	return int(*v)
}

func op(t bool) uintptr {
	if t {
		return cublasOpT
	}
	return cublasOpN
}

// gemmRM computes the row-major product C (m,n) = alpha op(A) op(B) + beta C
// where op(A) is (m,k) and op(B) is (k,n). cuBLAS is column-major, and a
// row-major matrix is its column-major transpose, so this calls
// cublasSgemm for C^T = op(B)^T op(A)^T with the operands swapped.
// alpha and beta point at host float32 values.
func (b *blasHandle) gemmRM(transA, transB bool, m, n, k int, alpha *float32, a Ptr, lda int,
	bb Ptr, ldb int, beta *float32, c Ptr, ldc int) BLASStatus {
	if b.compute != 0 {
		return b.api.call(b.api.gemmEx, b.h, op(transB), op(transA), uintptr(n), uintptr(m), uintptr(k),
			uintptr(unsafe.Pointer(alpha)), uintptr(bb), cudaR32F, uintptr(ldb), uintptr(a), cudaR32F, uintptr(lda),
			uintptr(unsafe.Pointer(beta)), uintptr(c), cudaR32F, uintptr(ldc), b.compute, cublasGemmDefault)
	}
	return b.api.call(b.api.sgemm, b.h, op(transB), op(transA), uintptr(n), uintptr(m), uintptr(k),
		uintptr(unsafe.Pointer(alpha)), uintptr(bb), uintptr(ldb), uintptr(a), uintptr(lda),
		uintptr(unsafe.Pointer(beta)), uintptr(c), uintptr(ldc))
}

// gemmBatchedRM is gemmRM over count independent products whose operand
// addresses are in device arrays aArr, bArr, cArr (count pointers each).
// (The pointer-array form, with the arrays filled on the device, predates
// purego's 32-argument calls; it also serves cublasGemmBatchedEx.)
func (b *blasHandle) gemmBatchedRM(transA, transB bool, m, n, k int, alpha *float32, aArr Ptr, lda int,
	bArr Ptr, ldb int, beta *float32, cArr Ptr, ldc int, count int) BLASStatus {
	if b.compute != 0 {
		return b.api.call(b.api.gemmBatchedEx, b.h, op(transB), op(transA), uintptr(n), uintptr(m), uintptr(k),
			uintptr(unsafe.Pointer(alpha)), uintptr(bArr), cudaR32F, uintptr(ldb), uintptr(aArr), cudaR32F, uintptr(lda),
			uintptr(unsafe.Pointer(beta)), uintptr(cArr), cudaR32F, uintptr(ldc), uintptr(count), b.compute, cublasGemmDefault)
	}
	return b.api.call(b.api.sgemmBatched, b.h, op(transB), op(transA), uintptr(n), uintptr(m), uintptr(k),
		uintptr(unsafe.Pointer(alpha)), uintptr(bArr), uintptr(ldb), uintptr(aArr), uintptr(lda),
		uintptr(unsafe.Pointer(beta)), uintptr(cArr), uintptr(ldc), uintptr(count))
}
