package kernels

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"

	"github.com/ddpm-go/ddpm/kernels/internal/blas"
	"golang.org/x/sys/cpu"
)

// BLASLibrary picks the sgemm library of the CPU backend.
type BLASLibrary int

const (
	// BLASAuto takes the first of oneDNN, OpenBLAS and gonum that loads.
	BLASAuto BLASLibrary = iota
	// BLASDNNL is oneDNN's dnnl_sgemm (libdnnl.so.2).
	BLASDNNL
	// BLASOpenBLAS is OpenBLAS's cblas_sgemm (libopenblas.so.0).
	BLASOpenBLAS
	// BLASGonum is gonum's pure-Go sgemm (always available).
	BLASGonum
)

var blasNames = [...]string{BLASAuto: "auto", BLASDNNL: "dnnl", BLASOpenBLAS: "openblas", BLASGonum: "gonum"}

// String returns "auto", "dnnl", "openblas" or "gonum".
func (b BLASLibrary) String() string { return enumName(blasNames[:], int(b), "BLASLibrary") }

// MarshalText implements encoding.TextMarshaler.
func (b BLASLibrary) MarshalText() ([]byte, error) {
	return enumText(blasNames[:], int(b), "BLASLibrary")
}

// UnmarshalText implements encoding.TextUnmarshaler (also for flags).
func (b *BLASLibrary) UnmarshalText(t []byte) error {
	i, err := enumParse(blasNames[:], string(t), "BLAS library")
	if err == nil {
		*b = BLASLibrary(i)
	}
	return err
}

// ConvAlgorithm picks how the CPU backend computes convolutions.
type ConvAlgorithm int

const (
	// ConvAuto uses oneDNN's convolution primitives when the BLAS is
	// oneDNN, else im2col + GEMM.
	ConvAuto ConvAlgorithm = iota
	// ConvDNNL uses oneDNN's convolution primitives (an error without
	// libdnnl.so.2).
	ConvDNNL
	// ConvIm2col uses im2col + GEMM on the chosen BLAS.
	ConvIm2col
)

var convNames = [...]string{ConvAuto: "auto", ConvDNNL: "dnnl", ConvIm2col: "im2col"}

// String returns "auto", "dnnl" or "im2col".
func (c ConvAlgorithm) String() string { return enumName(convNames[:], int(c), "ConvAlgorithm") }

// MarshalText implements encoding.TextMarshaler.
func (c ConvAlgorithm) MarshalText() ([]byte, error) {
	return enumText(convNames[:], int(c), "ConvAlgorithm")
}

// UnmarshalText implements encoding.TextUnmarshaler (also for flags).
func (c *ConvAlgorithm) UnmarshalText(t []byte) error {
	i, err := enumParse(convNames[:], string(t), "convolution algorithm")
	if err == nil {
		*c = ConvAlgorithm(i)
	}
	return err
}

func enumName(names []string, i int, typ string) string {
	if i >= 0 && i < len(names) {
		return names[i]
	}
	return fmt.Sprintf("%s(%d)", typ, i)
}

func enumText(names []string, i int, typ string) ([]byte, error) {
	if i < 0 || i >= len(names) {
		return nil, fmt.Errorf("kernels: cannot marshal %s(%d)", typ, i)
	}
	return []byte(names[i]), nil
}

func enumParse(names []string, s, what string) (int, error) {
	for i, n := range names {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("kernels: unknown %s %q: allowed are %s", what, s, strings.Join(names, ", "))
}

// CPUOptions configure NewCPU. The zero value is the fastest setting
// found on the machine (oneDNN when present), all cores.
type CPUOptions struct {
	// BLAS picks the sgemm library (see BLASLibrary); an explicitly named
	// library that cannot be loaded is an error.
	BLAS BLASLibrary
	// Threads is how many cores the ops use (0 means runtime.GOMAXPROCS,
	// negative is an error). The ops split work over Threads goroutines
	// and call the BLAS and oneDNN with one thread each, so library
	// threads and goroutines never oversubscribe.
	Threads int
	// Conv picks the convolution algorithm (see ConvAlgorithm).
	Conv ConvAlgorithm
	// ConstWeights promises that no convolution weight buffer is modified
	// while this CPU is in use (sampling, serving): oneDNN's reordered
	// copy of each weight buffer is then made once, kept (keyed by the
	// buffer's address and length) and reused by Conv2D, which saves a
	// pass over the weights per call (most of the time of a batch-1 conv
	// at 8x8), and lets the convolutions use forward-inference kernels
	// (oneDNN's Winograd kernels where they measured faster: rel L2 error
	// about 1e-6 instead of 2e-7). It costs memory up to the size of the
	// conv weights (one copy per layout, shared by the threads), the first
	// forward pass takes longer (oneDNN's Winograd weight transform is
	// slow: 2.5 s for the DDPM CIFAR-10 UNet), and it keeps every weight
	// buffer seen alive. Do not set it when training: a weight buffer
	// changed in place is only noticed through 8 sampled values (an
	// optimiser step changes them all), not guaranteed.
	ConstWeights bool
	// BF16 runs the forward convolutions (the bulk of a UNet's
	// arithmetic) in bfloat16 with fp32 accumulation and fp32 outputs,
	// through oneDNN's bf16 kernels: activations and weights are rounded
	// to bf16 on the way in (about 3 significant digits). Everything else
	// (linear layers, attention and its softmax, GroupNorm and its
	// statistics) stays fp32, as do the backward passes. For inference
	// only: it needs ConstWeights, oneDNN and a CPU with AVX512_BF16 or
	// AMX-BF16 (NewCPU says which is missing; BF16Supported asks first).
	BF16 bool
}

// BF16Supported reports whether this CPU has bf16 dot-product
// instructions (AVX512_BF16 or AMX-BF16) for CPUOptions.BF16, and if not,
// why.
func BF16Supported() error {
	if !cpu.X86.HasAVX512BF16 && !cpu.X86.HasAMXBF16 {
		return fmt.Errorf("this CPU has neither AVX512_BF16 nor AMX-BF16 (see the flags in /proc/cpuinfo): bf16 would be emulated, slower than fp32")
	}
	api, err := loadDNNLAPI()
	if err != nil {
		return fmt.Errorf("bf16 convolutions need oneDNN: %w", err)
	}
	d := ConvDims{N: 1, C: 16, H: 8, W: 8, K: 16, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	c, err := newDNNLConv(api, d, d.K, 1, convMode{inference: true, bf16: true})
	if err != nil {
		return fmt.Errorf("oneDNN offers no bf16 convolution on this CPU (is DNNL_MAX_CPU_ISA set below AVX512_CORE_BF16?): %w", err)
	}
	if !strings.Contains(c.impl, "bf16") {
		return fmt.Errorf("oneDNN offers no native bf16 convolution on this CPU (it picked %q; is DNNL_MAX_CPU_ISA set below AVX512_CORE_BF16?)", c.impl)
	}
	return nil
}

// CPU implements Ops[[]float32] on the host. Buffers are plain Go slices;
// Alloc returns a zeroed slice and Free does nothing.
//
// A CPU is safe for concurrent use: scratch space comes from a mutex-guarded
// pool of buffers that grows to the largest size asked for and is reused
// afterwards, so steady-state calls do not allocate large memory.
//
// Invalid dimensions or short buffers never panic: the op does nothing and
// the first such error is reported (and cleared) by Sync.
type CPU struct {
	gemm    blas.Sgemm
	threads int
	ws      wsPool
	team    *team                 // helpers for parallel
	dconv   *dnnlConvs            // oneDNN convolution primitives, or nil for im2col
	constW  bool                  // CPUOptions.ConstWeights
	bf16    bool                  // CPUOptions.BF16
	bf16w   *constCache[[]uint16] // bf16 mode with bf16 GEMMs (bf16.go): the weights' bf16 forms, or nil

	mu  sync.Mutex
	err error
}

var _ Ops[[]float32] = (*CPU)(nil)

// NewCPU returns a CPU backend using the BLAS and thread count in opts.
// An explicitly named BLAS that cannot be loaded is an error.
func NewCPU(opts CPUOptions) (*CPU, error) {
	if opts.Threads < 0 {
		return nil, fmt.Errorf("kernels: CPUOptions.Threads = %d: must be >= 0 (0 means GOMAXPROCS)", opts.Threads)
	}
	th := opts.Threads
	if th == 0 {
		th = runtime.GOMAXPROCS(0)
	}
	g, err := blas.Load(opts.BLAS.String())
	if err != nil {
		return nil, fmt.Errorf("kernels: CPUOptions.BLAS: %w", err)
	}
	if opts.BF16 {
		if !opts.ConstWeights {
			return nil, fmt.Errorf("kernels: CPUOptions.BF16 is for inference: it needs ConstWeights (weights that do not change)")
		}
		if err := BF16Supported(); err != nil {
			return nil, fmt.Errorf("kernels: CPUOptions.BF16: %w", err)
		}
	}
	c := &CPU{gemm: g, threads: th, constW: opts.ConstWeights, team: newTeam(th - 1)}
	mode := convMode{inference: opts.ConstWeights, bf16: opts.BF16}
	switch opts.Conv {
	case ConvAuto:
		if g.Name() == "dnnl" {
			if api, err := loadDNNLAPI(); err == nil {
				c.dconv = &dnnlConvs{api: api, mode: mode, m: map[dnnlKey]*dnnlConv{}}
			}
		}
	case ConvDNNL:
		api, err := loadDNNLAPI()
		if err != nil {
			return nil, fmt.Errorf("kernels: CPUOptions.Conv = %s: %w", opts.Conv, err)
		}
		c.dconv = &dnnlConvs{api: api, mode: mode, m: map[dnnlKey]*dnnlConv{}}
	case ConvIm2col:
	default:
		return nil, fmt.Errorf("kernels: CPUOptions.Conv = %v: allowed are auto, dnnl, im2col", opts.Conv)
	}
	if opts.BF16 && c.dconv == nil {
		return nil, fmt.Errorf("kernels: CPUOptions.BF16 needs oneDNN's convolutions (libdnnl.so.2, with BLAS auto or dnnl and Conv auto or dnnl)")
	}
	c.bf16 = opts.BF16
	if c.bf16 && useAVX512BF16 && c.dconv.api.gemmBF16 != nil {
		c.bf16w = &constCache[[]uint16]{}
	}
	return c, nil
}

// NewCPUWith returns a CPU backend on an already loaded sgemm, using
// threads goroutines (values < 1 mean GOMAXPROCS). It sets g's own thread
// count to 1.
func NewCPUWith(g blas.Sgemm, threads int) *CPU {
	if threads < 1 {
		threads = runtime.GOMAXPROCS(0)
	}
	g.SetThreads(1)
	return &CPU{gemm: g, threads: threads, team: newTeam(threads - 1)}
}

// Name returns "cpu (<blas>[, dnnl conv | dnnl bf16 conv], <n> threads)".
func (c *CPU) Name() string {
	if c.bf16 {
		return fmt.Sprintf("cpu (%s, dnnl bf16 conv, %d threads)", c.gemm.Name(), c.threads)
	}
	if c.dconv != nil {
		return fmt.Sprintf("cpu (%s, dnnl conv, %d threads)", c.gemm.Name(), c.threads)
	}
	return fmt.Sprintf("cpu (%s, %d threads)", c.gemm.Name(), c.threads)
}

// BF16 reports whether the forward convolutions compute in bf16
// (CPUOptions.BF16).
func (c *CPU) BF16() bool { return c.bf16 }

// BLAS returns the sgemm the ops use.
func (c *CPU) BLAS() blas.Sgemm { return c.gemm }

// Threads returns the number of goroutines the ops split work over.
func (c *CPU) Threads() int { return c.threads }

// fail records the first error for Sync.
func (c *CPU) fail(format string, args ...any) {
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("kernels: cpu: "+format, args...)
	}
	c.mu.Unlock()
}

// Sync returns the first error recorded since the last Sync and clears it.
// CPU work is synchronous, so there is nothing to wait for.
func (c *CPU) Sync() error {
	c.mu.Lock()
	err := c.err
	c.err = nil
	c.mu.Unlock()
	return err
}

// has reports whether buffer b (named name, for op) holds at least n
// values, recording an error otherwise.
func (c *CPU) has(op, name string, b []float32, n int) bool {
	if n < 0 {
		c.fail("%s: %s size %d: must be >= 0", op, name, n)
		return false
	}
	if len(b) < n {
		c.fail("%s: %s has %d values, need %d", op, name, len(b), n)
		return false
	}
	return true
}

// opt is has for optional buffers: nil is allowed.
func (c *CPU) opt(op, name string, b []float32, n int) bool {
	return b == nil || c.has(op, name, b, n)
}

// sizes reports whether every size is >= 1, recording an error otherwise.
func (c *CPU) sizes(op string, dims ...int) bool {
	for _, d := range dims {
		if d < 1 {
			c.fail("%s: sizes %v: all must be >= 1", op, dims)
			return false
		}
	}
	return true
}

// Alloc returns a zeroed slice of n values (nil and a Sync error if n < 0).
func (c *CPU) Alloc(n int) []float32 {
	if n < 0 {
		c.fail("Alloc: n = %d: must be >= 0", n)
		return nil
	}
	return make([]float32, n)
}

// Free does nothing: the garbage collector frees slices.
func (c *CPU) Free([]float32) {}

// Slice returns b[off:off+n], sharing memory.
func (c *CPU) Slice(b []float32, off, n int) []float32 {
	if off < 0 || n < 0 || off+n > len(b) {
		c.fail("Slice: off=%d n=%d: must lie within the %d values", off, n, len(b))
		return nil
	}
	return b[off : off+n : off+n]
}

// Upload copies src into dst.
func (c *CPU) Upload(dst, src []float32) {
	if c.has("Upload", "dst", dst, len(src)) {
		copy(dst, src)
	}
}

// Download copies len(dst) values of src into dst.
func (c *CPU) Download(dst, src []float32) {
	if c.has("Download", "src", src, len(dst)) {
		copy(dst, src)
	}
}

// Copy sets dst[i] = src[i] for i < n.
func (c *CPU) Copy(dst, src []float32, n int) {
	if c.has("Copy", "dst", dst, n) && c.has("Copy", "src", src, n) {
		copy(dst[:n], src[:n])
	}
}

// Fill sets y[i] = v for i < n.
func (c *CPU) Fill(y []float32, v float32, n int) {
	if !c.has("Fill", "y", y, n) {
		return
	}
	y = y[:n]
	if v == 0 {
		clear(y)
		return
	}
	for i := range y {
		y[i] = v
	}
}

// elementwise chunk size below which ops run on one goroutine.
const elemGrain = 1 << 15

// SiLU sets y = x * sigmoid(x) for n values (y may alias x).
func (c *CPU) SiLU(y, x []float32, n int) {
	if !c.has("SiLU", "y", y, n) || !c.has("SiLU", "x", x, n) {
		return
	}
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		siluAffine(y[lo:hi], x[lo:hi], 1, 0)
	})
}

// SiLUBackward sets dx = dy * s * (1 + x*(1-s)), s = sigmoid(x) (dx may
// alias dy).
func (c *CPU) SiLUBackward(dx, dy, x []float32, n int) {
	if !c.has("SiLUBackward", "dx", dx, n) || !c.has("SiLUBackward", "dy", dy, n) || !c.has("SiLUBackward", "x", x, n) {
		return
	}
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		siluBwd(dx[lo:hi], x[lo:hi], dy[lo:hi], 0, 1, 1, 0)
	})
}

// Add sets y = a + b for n values (y may alias a or b).
func (c *CPU) Add(y, a, b []float32, n int) {
	if !c.has("Add", "y", y, n) || !c.has("Add", "a", a, n) || !c.has("Add", "b", b, n) {
		return
	}
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		as, bs, ys := a[lo:hi], b[lo:hi], y[lo:hi]
		for i := range ys {
			ys[i] = as[i] + bs[i]
		}
	})
}

// Axpby sets y = alpha*x + beta*y for n values; beta == 0 overwrites y
// (even NaN in y is ignored).
func (c *CPU) Axpby(y []float32, alpha float32, x []float32, beta float32, n int) {
	if !c.has("Axpby", "y", y, n) || !c.has("Axpby", "x", x, n) {
		return
	}
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		xs, ys := x[lo:hi], y[lo:hi]
		if beta == 0 {
			for i := range ys {
				ys[i] = alpha * xs[i]
			}
			return
		}
		for i := range ys {
			ys[i] = alpha*xs[i] + beta*ys[i]
		}
	})
}

// Mul sets y = a * b elementwise for n values (y may alias a or b).
func (c *CPU) Mul(y, a, b []float32, n int) {
	if !c.has("Mul", "y", y, n) || !c.has("Mul", "a", a, n) || !c.has("Mul", "b", b, n) {
		return
	}
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		as, bs, ys := a[lo:hi], b[lo:hi], y[lo:hi]
		for i := range ys {
			ys[i] = as[i] * bs[i]
		}
	})
}

// Clamp sets y = min(max(x, lo), hi) for n values (y may alias x). NaN
// stays NaN.
func (c *CPU) Clamp(y, x []float32, lo, hi float32, n int) {
	if !c.has("Clamp", "y", y, n) || !c.has("Clamp", "x", x, n) {
		return
	}
	if lo > hi {
		c.fail("Clamp: lo=%v > hi=%v", lo, hi)
		return
	}
	c.parallel(n, elemGrain, func(_, l, h int) {
		xs, ys := x[l:h], y[l:h]
		for i, v := range xs {
			if v < lo {
				v = lo
			} else if v > hi {
				v = hi
			}
			ys[i] = v
		}
	})
}

// SumSquares returns sum_i x[i]^2 over n values, accumulated in float64.
func (c *CPU) SumSquares(x []float32, n int) float32 {
	if !c.has("SumSquares", "x", x, n) {
		return 0
	}
	var s float64
	for _, v := range x[:n] {
		s += float64(v) * float64(v)
	}
	return float32(s)
}

// AddChannelBias sets y[n,c,p] = x[n,c,p] + bias[n,c] for p < hw (y may
// alias x).
func (c *CPU) AddChannelBias(y, x, bias []float32, n, ch, hw int) {
	const op = "AddChannelBias"
	if !c.sizes(op, n, ch, hw) || !c.has(op, "y", y, n*ch*hw) || !c.has(op, "x", x, n*ch*hw) || !c.has(op, "bias", bias, n*ch) {
		return
	}
	c.parallel(n*ch, elemGrain/max(hw, 1)+1, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			b := bias[i]
			xs, ys := x[i*hw:(i+1)*hw], y[i*hw:(i+1)*hw]
			for p, v := range xs {
				ys[p] = v + b
			}
		}
	})
}

// ChannelSum sets dbias[n,c] = sum_p dy[n,c,p].
func (c *CPU) ChannelSum(dbias, dy []float32, n, ch, hw int) {
	const op = "ChannelSum"
	if !c.sizes(op, n, ch, hw) || !c.has(op, "dbias", dbias, n*ch) || !c.has(op, "dy", dy, n*ch*hw) {
		return
	}
	for i := 0; i < n*ch; i++ {
		dbias[i] = sum32(dy[i*hw : (i+1)*hw])
	}
}

// sum32 sums s with four float32 accumulators (pairwise enough for the
// sizes here, and vectorisable).
func sum32(s []float32) float32 {
	var a0, a1, a2, a3 float32
	i := 0
	for ; i+4 <= len(s); i += 4 {
		a0 += s[i]
		a1 += s[i+1]
		a2 += s[i+2]
		a3 += s[i+3]
	}
	for ; i < len(s); i++ {
		a0 += s[i]
	}
	return (a0 + a1) + (a2 + a3)
}

// Upsample2x sets y[n,c,2i+a,2j+b] = x[n,c,i,j] (nearest neighbour).
func (c *CPU) Upsample2x(y, x []float32, n, ch, h, w int) {
	const op = "Upsample2x"
	if !c.sizes(op, n, ch, h, w) || !c.has(op, "y", y, n*ch*4*h*w) || !c.has(op, "x", x, n*ch*h*w) {
		return
	}
	w2 := 2 * w
	c.parallel(n*ch, elemGrain/(h*w)+1, func(_, lo, hi int) {
		for p := lo; p < hi; p++ {
			xp := x[p*h*w : (p+1)*h*w]
			yp := y[p*4*h*w : (p+1)*4*h*w]
			for i := 0; i < h; i++ {
				row := yp[2*i*w2 : (2*i+1)*w2]
				for j, v := range xp[i*w : (i+1)*w] {
					row[2*j] = v
					row[2*j+1] = v
				}
				copy(yp[(2*i+1)*w2:(2*i+2)*w2], row)
			}
		}
	})
}

// Upsample2xBackward sets dx[n,c,i,j] = sum_{a,b} dy[n,c,2i+a,2j+b].
func (c *CPU) Upsample2xBackward(dx, dy []float32, n, ch, h, w int) {
	const op = "Upsample2xBackward"
	if !c.sizes(op, n, ch, h, w) || !c.has(op, "dx", dx, n*ch*h*w) || !c.has(op, "dy", dy, n*ch*4*h*w) {
		return
	}
	w2 := 2 * w
	c.parallel(n*ch, elemGrain/(h*w)+1, func(_, lo, hi int) {
		for p := lo; p < hi; p++ {
			dxp := dx[p*h*w : (p+1)*h*w]
			dyp := dy[p*4*h*w : (p+1)*4*h*w]
			for i := 0; i < h; i++ {
				r0 := dyp[2*i*w2 : (2*i+1)*w2]
				r1 := dyp[(2*i+1)*w2 : (2*i+2)*w2]
				out := dxp[i*w : (i+1)*w]
				for j := range out {
					out[j] = (r0[2*j] + r0[2*j+1]) + (r1[2*j] + r1[2*j+1])
				}
			}
		}
	})
}

// ConcatChannels sets y (N, Ca+Cb, HW) to a (N, Ca, HW) then b (N, Cb, HW)
// along channels.
func (c *CPU) ConcatChannels(y, a, b []float32, n, ca, cb, hw int) {
	const op = "ConcatChannels"
	if !c.sizes(op, n, hw) || ca < 0 || cb < 0 {
		c.fail("%s: n=%d ca=%d cb=%d hw=%d: need n, hw >= 1 and ca, cb >= 0", op, n, ca, cb, hw)
		return
	}
	if !c.has(op, "y", y, n*(ca+cb)*hw) || !c.has(op, "a", a, n*ca*hw) || !c.has(op, "b", b, n*cb*hw) {
		return
	}
	ct := ca + cb
	for i := 0; i < n; i++ {
		copy(y[i*ct*hw:(i*ct+ca)*hw], a[i*ca*hw:(i+1)*ca*hw])
		copy(y[(i*ct+ca)*hw:(i+1)*ct*hw], b[i*cb*hw:(i+1)*cb*hw])
	}
}

// SplitChannels is the backward of ConcatChannels: da (N, Ca, HW) and
// db (N, Cb, HW) from dy (N, Ca+Cb, HW); either may be nil to skip it.
func (c *CPU) SplitChannels(da, db, dy []float32, n, ca, cb, hw int) {
	const op = "SplitChannels"
	if !c.sizes(op, n, hw) || ca < 0 || cb < 0 {
		c.fail("%s: n=%d ca=%d cb=%d hw=%d: need n, hw >= 1 and ca, cb >= 0", op, n, ca, cb, hw)
		return
	}
	if !c.has(op, "dy", dy, n*(ca+cb)*hw) || !c.opt(op, "da", da, n*ca*hw) || !c.opt(op, "db", db, n*cb*hw) {
		return
	}
	ct := ca + cb
	for i := 0; i < n; i++ {
		if da != nil {
			copy(da[i*ca*hw:(i+1)*ca*hw], dy[i*ct*hw:(i*ct+ca)*hw])
		}
		if db != nil {
			copy(db[i*cb*hw:(i+1)*cb*hw], dy[(i*ct+ca)*hw:(i+1)*ct*hw])
		}
	}
}

// Transpose12 sets y[n,j,i] = x[n,i,j]; x (N, I, J), y (N, J, I). y must
// not alias x.
func (c *CPU) Transpose12(y, x []float32, n, ni, nj int) {
	const op = "Transpose12"
	if !c.sizes(op, n, ni, nj) || !c.has(op, "y", y, n*ni*nj) || !c.has(op, "x", x, n*ni*nj) {
		return
	}
	const tile = 32
	c.parallel(n, elemGrain/(ni*nj)+1, func(_, lo, hi int) {
		for b := lo; b < hi; b++ {
			xb := x[b*ni*nj : (b+1)*ni*nj]
			yb := y[b*ni*nj : (b+1)*ni*nj]
			for i0 := 0; i0 < ni; i0 += tile {
				i1 := min(i0+tile, ni)
				for j0 := 0; j0 < nj; j0 += tile {
					j1 := min(j0+tile, nj)
					for i := i0; i < i1; i++ {
						row := xb[i*nj : (i+1)*nj]
						for j := j0; j < j1; j++ {
							yb[j*ni+i] = row[j]
						}
					}
				}
			}
		}
	})
}

// Embedding sets y[i,:] = table[ids[i],:]. table must hold the largest id's
// row; an id < 0 or beyond the table is an error for Sync.
func (c *CPU) Embedding(y, table []float32, ids []int, dim int) {
	const op = "Embedding"
	if !c.sizes(op, dim) || !c.has(op, "y", y, len(ids)*dim) {
		return
	}
	vocab := len(table) / dim
	for i, id := range ids {
		if id < 0 || id >= vocab {
			c.fail("%s: ids[%d] = %d: must be in [0, %d)", op, i, id, vocab)
			return
		}
	}
	for i, id := range ids {
		copy(y[i*dim:(i+1)*dim], table[id*dim:(id+1)*dim])
	}
}

// EmbeddingBackward sets dtable = 0, then dtable[ids[i],:] += dy[i,:].
func (c *CPU) EmbeddingBackward(dtable, dy []float32, ids []int, vocab, dim int) {
	const op = "EmbeddingBackward"
	if !c.sizes(op, vocab, dim) || !c.has(op, "dtable", dtable, vocab*dim) || !c.has(op, "dy", dy, len(ids)*dim) {
		return
	}
	for i, id := range ids {
		if id < 0 || id >= vocab {
			c.fail("%s: ids[%d] = %d: must be in [0, %d)", op, i, id, vocab)
			return
		}
	}
	clear(dtable[:vocab*dim])
	for i, id := range ids {
		row := dtable[id*dim : (id+1)*dim]
		for j, v := range dy[i*dim : (i+1)*dim] {
			row[j] += v
		}
	}
}

// AdamW performs one AdamW step (Loshchilov & Hutter 2019) in place on p,
// m and v given gradient g:
//
//	m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
//	p -= lr * (m/(1-b1^step) / (sqrt(v/(1-b2^step)) + eps) + wd*p)
func (c *CPU) AdamW(p, m, v, g []float32, h AdamWParams, step int, n int) {
	const op = "AdamW"
	if step < 1 {
		c.fail("%s: step = %d: must be >= 1", op, step)
		return
	}
	if !c.has(op, "p", p, n) || !c.has(op, "m", m, n) || !c.has(op, "v", v, n) || !c.has(op, "g", g, n) {
		return
	}
	bc1 := float32(1 / (1 - math.Pow(float64(h.Beta1), float64(step))))
	bc2 := float32(1 / (1 - math.Pow(float64(h.Beta2), float64(step))))
	b1, b2 := h.Beta1, h.Beta2
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			gi := g[i]
			mi := b1*m[i] + (1-b1)*gi
			vi := b2*v[i] + (1-b2)*gi*gi
			m[i], v[i] = mi, vi
			upd := mi*bc1/(float32(math.Sqrt(float64(vi*bc2)))+h.Eps) + h.WeightDecay*p[i]
			p[i] -= h.LR * upd
		}
	})
}

// EMA sets ema = decay*ema + (1-decay)*p for n values.
func (c *CPU) EMA(ema, p []float32, decay float32, n int) {
	if !c.has("EMA", "ema", ema, n) || !c.has("EMA", "p", p, n) {
		return
	}
	c.parallel(n, elemGrain, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			ema[i] = decay*ema[i] + (1-decay)*p[i]
		}
	})
}
