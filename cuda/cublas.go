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

var (
	blasOnce sync.Once
	blasLib  *cublasAPI
	blasErr  error
)

// cublasAPI holds the cuBLAS entry points (all integer/pointer arguments,
// called through purego.SyscallN; alpha and beta are passed by pointer in
// CUBLAS_POINTER_MODE_HOST).
type cublasAPI struct {
	path                              string
	create, destroy, setStream        uintptr
	setMathMode, getVersion           uintptr
	sgemm, sgemmBatched, setWorkspace uintptr
}

// cuBLAS constants (cublas_api.h).
const (
	cublasOpN             = 0
	cublasOpT             = 1
	cublasDefaultMath     = 0
	cublasPedanticMath    = 2
	cublasTF32TensorOp    = 3
	cublasDisallowReduced = 16 // CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION
)

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

func loadCUBLAS() (*cublasAPI, error) {
	blasOnce.Do(func() { blasLib, blasErr = openCUBLAS() })
	return blasLib, blasErr
}

func openCUBLAS() (*cublasAPI, error) {
	var lib uintptr
	var path string
	var tried []string
	for _, p := range cublasCandidates() {
		if strings.Contains(p, "/") {
			if _, err := os.Stat(p); err != nil {
				tried = append(tried, p)
				continue
			}
		}
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			lib, path = h, p
			break
		}
		tried = append(tried, fmt.Sprintf("%s (%v)", p, err))
	}
	if lib == 0 {
		return nil, fmt.Errorf("%w: tried %s (set CUDA_HOME or LD_LIBRARY_PATH)", ErrNoCUBLAS, strings.Join(tried, ", "))
	}
	a := &cublasAPI{path: path}
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
	} {
		sym, err := purego.Dlsym(lib, s.name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s lacks %s: %v", ErrNoCUBLAS, path, s.name, err)
		}
		*s.p = sym
	}
	if sym, err := purego.Dlsym(lib, "cublasSetWorkspace_v2"); err == nil {
		a.setWorkspace = sym
	}
	return a, nil
}

func (a *cublasAPI) call(fn uintptr, args ...uintptr) BLASStatus {
	r, _, _ := purego.SyscallN(fn, args...)
	return BLASStatus(int32(r))
}

// blasHandle is one cuBLAS handle bound to a stream.
type blasHandle struct {
	api       *cublasAPI
	h         uintptr
	one, zero float32 // host-side alpha/beta constants (heap, stable address)
}

func newBLASHandle(api *cublasAPI, stream uintptr, tf32 bool) (*blasHandle, error) {
	b := &blasHandle{api: api, one: 1}
	if s := api.call(api.create, uintptr(unsafe.Pointer(&b.h))); s != 0 {
		return nil, fmt.Errorf("cuda: cublasCreate_v2 (%s): %w", api.path, s)
	}
	if s := api.call(api.setStream, b.h, stream); s != 0 {
		return nil, fmt.Errorf("cuda: cublasSetStream_v2: %w", s)
	}
	mode := uintptr(cublasPedanticMath)
	if tf32 {
		mode = cublasTF32TensorOp
	}
	if s := api.call(api.setMathMode, b.h, mode); s != 0 {
		return nil, fmt.Errorf("cuda: cublasSetMathMode(%d): %w", mode, s)
	}
	return b, nil
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
	return b.api.call(b.api.sgemm, b.h, op(transB), op(transA), uintptr(n), uintptr(m), uintptr(k),
		uintptr(unsafe.Pointer(alpha)), uintptr(bb), uintptr(ldb), uintptr(a), uintptr(lda),
		uintptr(unsafe.Pointer(beta)), uintptr(c), uintptr(ldc))
}

// gemmBatchedRM is gemmRM over count independent products whose operand
// addresses are in device arrays aArr, bArr, cArr (count pointers each).
// (cublasSgemmStridedBatched takes 18 arguments, more than purego's 15, so
// the pointer-array form is used, with the arrays filled on the device.)
func (b *blasHandle) gemmBatchedRM(transA, transB bool, m, n, k int, alpha *float32, aArr Ptr, lda int,
	bArr Ptr, ldb int, beta *float32, cArr Ptr, ldc int, count int) BLASStatus {
	return b.api.call(b.api.sgemmBatched, b.h, op(transB), op(transA), uintptr(n), uintptr(m), uintptr(k),
		uintptr(unsafe.Pointer(alpha)), uintptr(bArr), uintptr(ldb), uintptr(aArr), uintptr(lda),
		uintptr(unsafe.Pointer(beta)), uintptr(cArr), uintptr(ldc), uintptr(count))
}
