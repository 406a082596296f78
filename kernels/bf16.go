package kernels

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// bf16 GEMMs of the inference path in bf16 mode (CPUOptions.BF16): the
// Winograd convolutions (winograd.go) and Linear layers with at least
// linearBF16Rows rows run their products on oneDNN's
// dnnl_gemm_bf16bf16f32 (bf16 operands, fp32 accumulation and output),
// with the constant weights rounded (and, for Winograd, transformed)
// once and cached here.

// bf16Weights maps weight buffers (address and length, as weightCache)
// to their bf16 forms. The mutex is held while one is made, so a second
// worker waits for it.
type bf16Weights struct {
	mu sync.Mutex
	m  map[weightKey]*bf16Weight
}

type bf16Weight struct {
	u  []uint16
	fp [8]float32 // fingerprint of the source buffer
}

func newBF16Weights() *bf16Weights { return &bf16Weights{m: map[weightKey]*bf16Weight{}} }

// get returns w's bf16 form, made by mk on first use, or again when w
// changed in place (its fingerprint).
func (c *bf16Weights) get(w []float32, mk func() []uint16) []uint16 {
	k := weightKey{&w[0], len(w)}
	fp := fingerprint(w)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok && e.fp == fp {
		return e.u
	}
	u := mk()
	c.m[k] = &bf16Weight{u: u, fp: fp}
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
func (c *CPU) pinOneThread() func() {
	runtime.LockOSThread()
	if f := c.dconv.api.ompSetThreads; f != nil {
		f(1)
	}
	return runtime.UnlockOSThread
}

// gemmBF16Pinned is gemmBF16 on a thread pinOneThread has prepared.
func (c *CPU) gemmBF16Pinned(ta, tb bool, m, n, k int, a []uint16, lda int, b []uint16, ldb int, beta float32, cc []float32, ldc int) error {
	st := c.dconv.api.gemmBF16(tch(ta), tch(tb), int64(m), int64(n), int64(k), 1, unsafe.Pointer(&a[0]), int64(lda),
		unsafe.Pointer(&b[0]), int64(ldb), beta, unsafe.Pointer(&cc[0]), int64(ldc))
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(cc)
	if st != dnnlSuccess {
		return fmt.Errorf("dnnl_gemm_bf16bf16f32(m=%d n=%d k=%d): status %d", m, n, k, st)
	}
	return nil
}

func tch(t bool) byte {
	if t {
		return 'T'
	}
	return 'N'
}

// linearBF16Rows is the fewest rows a Linear layer needs to run in bf16:
// the attention projections (a row per token) do, the time-embedding
// projections (a row per image; their cost is reading the weights) do
// not.
const linearBF16Rows = 64

// linearBF16 runs Linear in bf16 when the CPU is in bf16 mode and m is at
// least linearBF16Rows, reporting whether it did: each thread rounds its
// rows of x to bf16 and multiplies them by w's cached bf16 copy.
func (c *CPU) linearBF16(y, x, w, b []float32, m, in, out int) bool {
	if c.bf16w == nil || m < linearBF16Rows {
		return false
	}
	w = w[:out*in]
	wb := c.bf16w.get(w, func() []uint16 {
		u := make([]uint16, len(w))
		toBF16Slice(u, w)
		return u
	})
	var errs [8]error
	c.parallel(m, linearBF16Rows, func(worker, lo, hi int) {
		buf := c.ws.get(((hi-lo)*in + 1) / 2)
		defer c.ws.put(buf)
		xb := unsafe.Slice((*uint16)(unsafe.Pointer(&buf[0])), (hi-lo)*in)
		toBF16Slice(xb, x[lo*in:hi*in])
		beta := float32(0)
		if b != nil {
			for r := lo; r < hi; r++ {
				copy(y[r*out:(r+1)*out], b[:out])
			}
			beta = 1
		}
		if err := c.gemmBF16(false, true, hi-lo, out, in, xb, in, wb, in, beta, y[lo*out:], out); err != nil {
			errs[worker%len(errs)] = err
		}
	})
	for _, err := range errs {
		if err != nil {
			c.fail("Linear (bf16): %v", err)
			break
		}
	}
	return true
}
