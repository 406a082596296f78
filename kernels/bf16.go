package kernels

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/ddpm-go/ddpm/kernels/internal/blas"
)

// bf16 GEMMs of the inference path in bf16 mode (CPUOptions.BF16): the
// Winograd convolutions (winograd.go) and Linear layers with at least
// linearBF16Rows rows run their products on oneDNN's
// dnnl_gemm_bf16bf16f32 (bf16 operands, fp32 accumulation and output),
// with the constant weights rounded (and, for Winograd, transformed)
// once and cached here.

// bf16Form returns the bf16 form of the constant weight buffer w, made
// by mk on first use (bf16w caches it).
func (c *CPU) bf16Form(w []float32, mk func() []uint16) []uint16 {
	u, _ := c.bf16w.get(w, func([]uint16, bool) ([]uint16, error) { return mk(), nil }) // mk cannot fail
	return u
}

// toBF16Slice sets dst[i] to src[i] rounded to bf16 (nearest even).
func toBF16Slice(dst []uint16, src []float32) {
	n := len(src)
	_ = dst[n-1]
	i := 0
	if useAVX512BF16 && n >= 16 {
		i = n &^ 15
		toBF16AVX512(&dst[0], &src[0], i)
	}
	for ; i < n; i++ {
		dst[i] = toBF16(src[i])
	}
}

// gemmBF16 computes C = op(A) op(B) + beta*C (row-major, as sgemm) with
// A and B in bf16, on one OpenMP thread.
func (c *CPU) gemmBF16(ta, tb bool, m, n, k int, a []uint16, lda int, b []uint16, ldb int, beta float32, cc []float32, ldc int) error {
	defer c.pinOneThread()()
	return c.gemmBF16Pinned(ta, tb, m, n, k, a, lda, b, ldb, beta, cc, ldc)
}

// pinOneThread locks the goroutine to its OS thread and sets that
// thread's OpenMP count to 1 until the returned func runs, for a run of
// gemmBF16Pinned calls.
func (c *CPU) pinOneThread() func() { return c.dconv.api.pin(1) }

// gemmBF16Pinned is gemmBF16 on a thread pinOneThread has prepared.
func (c *CPU) gemmBF16Pinned(ta, tb bool, m, n, k int, a []uint16, lda int, b []uint16, ldb int, beta float32, cc []float32, ldc int) error {
	st := c.dconv.api.gemmBF16(blas.TransChar(ta), blas.TransChar(tb), int64(m), int64(n), int64(k), 1, unsafe.Pointer(&a[0]), int64(lda),
		unsafe.Pointer(&b[0]), int64(ldb), beta, unsafe.Pointer(&cc[0]), int64(ldc))
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(cc)
	if st != dnnlSuccess {
		return fmt.Errorf("dnnl_gemm_bf16bf16f32(m=%d n=%d k=%d): status %d", m, n, k, st)
	}
	return nil
}

// linearBF16Rows is the fewest rows a Linear layer needs to run in bf16:
// the attention projections (a row per token) do, the time-embedding
// projections (a row per image; their cost is reading the weights) do
// not.
const linearBF16Rows = 64

// linearBF16 runs Linear's product in bf16 when the CPU is in bf16 mode
// and m is at least linearBF16Rows, reporting whether it did: y = x w^T +
// beta*y (y holds the bias rows when beta is 1); each thread rounds its
// rows of x to bf16 and multiplies them by w's cached bf16 copy.
func (c *CPU) linearBF16(y, x, w []float32, beta float32, m, in, out int) bool {
	if c.bf16w == nil || m < linearBF16Rows {
		return false
	}
	w = w[:out*in]
	wb := c.bf16Form(w, func() []uint16 {
		u := make([]uint16, len(w))
		toBF16Slice(u, w)
		return u
	})
	err := c.parallelErr(m, linearBF16Rows, func(_, lo, hi int) error {
		buf := c.ws.get(((hi-lo)*in + 1) / 2)
		defer c.ws.put(buf)
		xb := unsafe.Slice((*uint16)(unsafe.Pointer(&buf[0])), (hi-lo)*in)
		toBF16Slice(xb, x[lo*in:hi*in])
		return c.gemmBF16(false, true, hi-lo, out, in, xb, in, wb, in, beta, y[lo*out:], out)
	})
	if err != nil {
		c.fail("Linear (bf16): %v", err)
	}
	return true
}
