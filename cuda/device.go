package cuda

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Ptr is a device address (CUdeviceptr) of float32 data; the zero Ptr is
// the absent optional buffer of the kernels.Ops contract.
type Ptr uint64

// Options configure Open.
type Options struct {
	// Precision of the GEMMs and convolutions, parsed by ParsePrecision:
	// "tf32" (the default when empty: TF32 tensor cores, float32
	// accumulation), "fp32" (strict IEEE float32), "bf16" or "fp16"
	// (16-bit tensor-core compute on float32 storage with float32
	// accumulation). Every other op, and all memory, is float32.
	Precision string
	// Graphs makes GraphOps replay repeated sequences of queued work (one
	// forward pass of a sampling loop) as CUDA graphs; see GraphOps.
	// Device itself ignores it: callers wrap it with NewGraphOps.
	Graphs bool
	// CacheLimit bounds the bytes of freed blocks the caching allocator
	// keeps for reuse (0 means no limit; they are released on OOM anyway).
	CacheLimit int64
	// ConvWorkspace bounds the im2col scratch per chunk of images in bytes
	// (0 means 512 MiB); smaller chunks mean more, smaller GEMMs.
	ConvWorkspace int64
	// Conv picks the convolution engine: "auto" (default when empty: cuDNN
	// when libcudnn.so.9/.8 loads, else im2col), "cudnn" (an error without
	// it) or "im2col" (im2col + cuBLAS GEMM). cuDNN takes symmetric padding
	// only; other shapes, or a shape cuDNN fails on, use im2col.
	Conv string
	// ConvAutotune times each convolution shape and direction once with
	// 32 MiB, 128 MiB, 512 MiB and 2 GiB chunks of columns (small chunks
	// stay in L2, large ones make bigger GEMMs) and keeps the fastest, like
	// cudnn.benchmark. The first call per shape waits for the GPU, and
	// results may differ in the last bits between processes.
	ConvAutotune bool
	// GroupNormKernel picks the GroupNorm kernels (the cuda/dev lab
	// compares them): 0 automatic (2 when a group fits in 48 KiB of shared
	// memory, else 1), 1 reads the group from global memory in each pass,
	// 2 caches it in shared memory.
	GroupNormKernel int
}

// validate checks the options (before any library is loaded) and parses
// the precision.
func (opts Options) validate() (Precision, error) {
	prec, err := ParsePrecision(opts.Precision)
	if err != nil {
		return 0, err
	}
	if opts.ConvWorkspace < 0 {
		return 0, fmt.Errorf("cuda: Options.ConvWorkspace = %d: must be >= 0 (0 means 512 MiB)", opts.ConvWorkspace)
	}
	if opts.GroupNormKernel < 0 || opts.GroupNormKernel > 2 {
		return 0, fmt.Errorf("cuda: Options.GroupNormKernel = %d: allowed are 0 (auto), 1, 2", opts.GroupNormKernel)
	}
	switch opts.Conv {
	case "", "auto", "cudnn", "im2col":
	default:
		return 0, fmt.Errorf("cuda: Options.Conv = %q: allowed are auto, cudnn, im2col", opts.Conv)
	}
	if opts.Conv == "cudnn" && prec == BF16 {
		return 0, fmt.Errorf("cuda: Options.Conv = cudnn with Precision bf16: cuDNN's convolution API cannot down-convert float32 to bfloat16 (use Conv auto or im2col, or Precision fp16)")
	}
	if opts.CacheLimit < 0 {
		return 0, fmt.Errorf("cuda: Options.CacheLimit = %d: must be >= 0", opts.CacheLimit)
	}
	return prec, nil
}

// kernelNames are the entry points of kernels/ops.cu, in the order of the
// kernel* constants below.
var kernelNames = []string{
	"silu_fwd", "silu_bwd", "add_f", "mul_f", "axpby_f", "clamp_f", "sumsq_partial", "sum_partials",
	"add_channel_bias", "row_sum", "add_row_bias", "col_sum", "conv_bias_grad", "knp_to_nkp", "nkp_to_knp",
	"transpose12", "concat_ch", "split_ch", "upsample2x", "upsample2x_bwd", "im2col", "col2im",
	"groupnorm_fwd", "groupnorm_bwd_dx", "groupnorm_bwd_affine", "fill_ptrs", "softmax_rows",
	"softmax_bwd_rows", "embedding_fwd", "embedding_bwd", "adamw", "ema_f", "groupnorm_fwd_smem",
	"groupnorm_bwd_dx_smem", "col_sum_partial", "add_bias_nkp",
	"dropout_f", "sqrt_sum_partials", "clip_to_norm", "diffusion_loss", "loss_sum",
	// ADM layers (adm.go)
	"groupnorm_ss_fwd", "groupnorm_ss_bwd_dx", "groupnorm_ss_bwd_stats", "groupnorm_ss_bwd_params",
	"avgpool2x", "avgpool2x_bwd", "attnpool_tokens", "attnpool_tokens_bwd_dx", "attnpool_tokens_bwd_dpos",
	"row_mean", "row_mean_bwd", "relu_f", "relu_bwd",
	// GLIDE's text transformer (ops.go)
	"gelu_f", "gelu_bwd",
}

const (
	kSiLU = iota
	kSiLUBwd
	kAdd
	kMul
	kAxpby
	kClamp
	kSumSqPartial
	kSumPartials
	kAddChannelBias
	kRowSum
	kAddRowBias
	kColSum
	kConvBiasGrad
	kKNPtoNKP
	kNKPtoKNP
	kTranspose12
	kConcat
	kSplit
	kUpsample
	kUpsampleBwd
	kIm2col
	kCol2im
	kGNFwd
	kGNBwdDx
	kGNBwdAffine
	kFillPtrs
	kSoftmax
	kSoftmaxBwd
	kEmbFwd
	kEmbBwd
	kAdamW
	kEMA
	kGNFwdSmem
	kGNBwdDxSmem
	kColSumPartial
	kAddBiasNKP
	kDropout
	kSqrtSumPartials
	kClipToNorm
	kDiffusionLoss
	kLossSum
	kGNSSFwd
	kGNSSBwdDx
	kGNSSBwdStats
	kGNSSBwdParams
	kAvgPool
	kAvgPoolBwd
	kAttnPoolTokens
	kAttnPoolTokensBwdDx
	kAttnPoolTokensBwdDpos
	kRowMean
	kRowMeanBwd
	kReLU
	kReLUBwd
	kGELU
	kGELUBwd
	numKernels
)

// Scratch slots (each grows independently and is reused across calls).
const (
	wsCol  = iota // im2col columns / attention scores
	wsTmp         // GEMM output in (K, N, P) / attention dP
	wsPtr         // cublasSgemmBatched pointer tables
	wsMisc        // ids, reduction partials
	wsRed         // column-sum partials
	numWS
)

// Device is one CUDA GPU implementing kernels.Ops[Ptr]: kernels from
// kernels/ops.cu and cuBLAS GEMMs queued on one stream of the device's
// primary context. Ops are asynchronous; Download, SumSquares and Sync wait.
//
// A Device is safe for concurrent use (calls are serialised by a mutex)
// and binds its context to the calling OS thread for the duration of each
// call, so goroutines may move between threads freely. Close releases it.
type Device struct {
	mu     sync.Mutex
	drv    *driver
	blas   *blasHandle
	info   DeviceInfo
	dev    int32
	ctx    uintptr
	stream uintptr
	mod    uintptr
	fn     [numKernels]uintptr
	tf32   bool      // prec == TF32
	prec   Precision // Options.Precision
	blasWS Ptr       // cuBLAS workspace (gemmWorkspace bytes)
	convWS int64     // bytes of im2col scratch per chunk of images
	tune   bool      // Options.ConvAutotune
	tuned  map[convKey]int64

	dnn     *cudnnState // nil: im2col only
	dnnWhy  string      // why cuDNN is not used
	dnnErrs []string    // shapes that fell back from cuDNN to im2col, and why
	gnKern  int         // Options.GroupNormKernel

	alloc allocator
	ws    [numWS]struct {
		p     Ptr
		bytes int64
	}
	err error // first failure since the last Sync (sticky, like CUDA's)

	// hook, when set (by NewGraphOps, before any use), runs before every
	// call that locks the Device: it issues the work GraphOps deferred.
	hook       func()
	scratchGen uint64 // bumped whenever a scratch slot is reallocated (graphs refer to them)
	graphs     map[graphKey]*graphExec
	graphUses  uint64

	// Launch parameter block: args holds the values, argp their addresses
	// (cuLaunchKernel's kernelParams). Both live inside the heap-allocated
	// Device, so their addresses are stable.
	args [24]uint64
	argp [24]uintptr
	ids  []int32 // host staging for Embedding ids

	closed bool
}

// Open initialises GPU index (0-based) and returns a Device. Errors wrap
// ErrNoDriver, ErrNoDevice or ErrNoCUBLAS (test with errors.Is) when the
// stack is missing, naming the paths tried.
func Open(index int, opts Options) (*Device, error) {
	prec, err := opts.validate()
	if err != nil {
		return nil, err
	}
	drv, err := loadDriver()
	if err != nil {
		return nil, err
	}
	var pn runtime.Pinner
	pc := hp[int32](&pn)
	err = check("cuDeviceGetCount", drv.call(drv.cuDeviceGetCount, uintptr(unsafe.Pointer(pc))))
	count := *pc
	pn.Unpin()
	if err != nil {
		return nil, err
	}
	if index < 0 || index >= int(count) {
		return nil, fmt.Errorf("%w: index %d: the driver sees %d device(s) (allowed 0..%d)", ErrNoDevice, index, count, count-1)
	}
	if err := haveCUBLAS(); err != nil {
		return nil, err
	}
	info, err := drv.info(index)
	if err != nil {
		return nil, err
	}
	d := &Device{drv: drv, info: info, tf32: prec == TF32, prec: prec, convWS: defaultConvWorkspace, gnKern: opts.GroupNormKernel,
		tune: opts.ConvAutotune, tuned: map[convKey]int64{}}
	if opts.ConvWorkspace > 0 {
		d.convWS = opts.ConvWorkspace
	}
	d.alloc.limit = opts.CacheLimit
	d.alloc.sync = func() { drv.call(drv.cuStreamSynchronize, d.stream) }
	for i := range d.argp {
		d.argp[i] = uintptr(unsafe.Pointer(&d.args[i]))
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.init(index, opts.Conv); err != nil {
		d.release()
		return nil, fmt.Errorf("cuda: open device %d (%s): %w", index, info.Name, err)
	}
	return d, nil
}

func (d *Device) init(index int, conv string) error {
	drv := d.drv
	if err := check("cuDeviceGet", drv.call(drv.cuDeviceGet, uintptr(unsafe.Pointer(&d.dev)), uintptr(index))); err != nil {
		return err
	}
	if err := check("cuDevicePrimaryCtxRetain", drv.call(drv.cuDevicePrimaryCtxRetain, uintptr(unsafe.Pointer(&d.ctx)), uintptr(d.dev))); err != nil {
		return err
	}
	if err := check("cuCtxSetCurrent", drv.call(drv.cuCtxSetCurrent, d.ctx)); err != nil {
		return err
	}
	// CU_STREAM_NON_BLOCKING: no implicit sync with the legacy stream.
	if err := check("cuStreamCreate", drv.call(drv.cuStreamCreate, uintptr(unsafe.Pointer(&d.stream)), 1)); err != nil {
		return err
	}
	if err := d.loadModule(); err != nil {
		return err
	}
	b, err := newBLAS(d.stream, d.prec)
	if err != nil {
		return err
	}
	d.blas = b
	if d.blasWS, err = d.alloc.raw(drv, gemmWorkspace); err != nil {
		return err
	}
	b.setWorkspace(d.blasWS, gemmWorkspace)
	switch {
	case conv == "im2col":
		d.dnnWhy = "Options.Conv = im2col"
		return nil
	case d.prec == BF16:
		d.dnnWhy = "Precision bf16: cuDNN's convolution API cannot down-convert float32 to bfloat16"
		return nil
	}
	s, err := newCUDNN(d.stream)
	switch {
	case err == nil:
		d.dnn = s
	case conv == "cudnn":
		return fmt.Errorf("Options.Conv = cudnn: %w", err)
	default:
		d.dnnWhy = err.Error()
	}
	return nil
}

// loadModule JIT-compiles the embedded PTX, capturing the JIT error log.
func (d *Device) loadModule() error {
	const (
		jitErrorLogBuffer     = 5 // CU_JIT_ERROR_LOG_BUFFER
		jitErrorLogBufferSize = 6 // CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
	)
	var pn runtime.Pinner
	defer pn.Unpin()
	ptx := append([]byte(opsPTX), 0)
	logBuf := hp[[8192]byte](&pn)
	optKeys := hp[[2]int32](&pn)
	optVals := hp[[2]uintptr](&pn)
	*optKeys = [2]int32{jitErrorLogBuffer, jitErrorLogBufferSize}
	*optVals = [2]uintptr{uintptr(unsafe.Pointer(logBuf)), uintptr(len(logBuf))}
	r := d.drv.call(d.drv.cuModuleLoadDataEx, uintptr(unsafe.Pointer(&d.mod)), pinSlice(&pn, ptx),
		2, uintptr(unsafe.Pointer(optKeys)), uintptr(unsafe.Pointer(optVals)))
	if r != 0 {
		return fmt.Errorf("cuModuleLoadDataEx (kernels/ops.ptx): %w: JIT log: %s", r, cString(&logBuf[0]))
	}
	for i, name := range kernelNames {
		cname := append([]byte(name), 0)
		r := d.drv.call(d.drv.cuModuleGetFunction, uintptr(unsafe.Pointer(&d.fn[i])), d.mod, pinSlice(&pn, cname))
		if r != 0 {
			return fmt.Errorf("cuModuleGetFunction(%s): %w", name, r)
		}
	}
	return nil
}

// ConvEngine says which convolution engine runs: "cudnn" or "im2col", and
// why cuDNN is not used, with the shapes that fell back from cuDNN.
func (d *Device) ConvEngine() (engine, why string, fallbacks []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dnn != nil {
		return "cudnn", "", append([]string(nil), d.dnnErrs...)
	}
	return "im2col", d.dnnWhy, nil
}

// Info describes the GPU.
func (d *Device) Info() DeviceInfo { return d.info }

// TF32 reports whether GEMMs use TF32 tensor cores.
func (d *Device) TF32() bool { return d.tf32 }

// Precision is the arithmetic of the GEMMs and convolutions.
func (d *Device) Precision() Precision { return d.prec }

// Name returns e.g. "cuda:0 NVIDIA H100 80GB HBM3 (cuBLAS 130001, tf32)".
func (d *Device) Name() string {
	prec := d.prec.String()
	v := 0
	if d.blas != nil {
		v = d.blas.version()
	}
	conv := "im2col conv"
	if d.dnn != nil {
		conv = fmt.Sprintf("cuDNN %d conv", d.dnn.api.version())
	}
	return fmt.Sprintf("cuda:%d %s (cuBLAS %d, %s, %s)", d.info.Index, d.info.Name, v, conv, prec)
}

// enter serialises the call and makes the context current on this thread.
// It returns false (and the caller returns) after a sticky error.
func (d *Device) enter() bool {
	if d.hook != nil {
		d.hook()
	}
	return d.enterNoHook()
}

// enterNoHook is enter without the GraphOps hook.
func (d *Device) enterNoHook() bool {
	d.mu.Lock()
	runtime.LockOSThread()
	if d.closed {
		d.failLocked(fmt.Errorf("cuda: device used after Close"))
		return false
	}
	if d.err != nil {
		return false
	}
	if r := d.drv.call(d.drv.cuCtxSetCurrent, d.ctx); r != 0 {
		d.failLocked(check("cuCtxSetCurrent", r))
		return false
	}
	return true
}

// enterAlways is enter for calls that must run after a sticky error too
// (Free): it returns false only when the Device is closed or its context
// cannot be made current. Call leave afterwards either way.
func (d *Device) enterAlways() bool {
	if d.hook != nil {
		d.hook()
	}
	d.mu.Lock()
	runtime.LockOSThread()
	if d.closed {
		return false
	}
	if r := d.drv.call(d.drv.cuCtxSetCurrent, d.ctx); r != 0 {
		d.failLocked(check("cuCtxSetCurrent", r))
		return false
	}
	return true
}

func (d *Device) leave() {
	runtime.UnlockOSThread()
	d.mu.Unlock()
}

func (d *Device) failLocked(err error) {
	if d.err == nil && err != nil {
		d.err = err
	}
}

// failf records an argument error for Sync (with the mutex held).
func (d *Device) failf(format string, args ...any) {
	d.failLocked(fmt.Errorf("cuda: "+format, args...))
}

// Sync waits for all queued work and returns (and clears) the first error
// since the last Sync.
func (d *Device) Sync() error {
	if d.hook != nil {
		d.hook()
	}
	d.mu.Lock()
	runtime.LockOSThread()
	defer d.leave()
	if !d.closed {
		if r := d.drv.call(d.drv.cuCtxSetCurrent, d.ctx); r != 0 {
			d.failLocked(check("cuCtxSetCurrent", r))
		} else if r := d.drv.call(d.drv.cuStreamSynchronize, d.stream); r != 0 {
			d.failLocked(check("cuStreamSynchronize", r))
		}
	}
	err := d.err
	d.err = nil
	return err
}

// Close waits for queued work and frees every buffer, the cuBLAS handle,
// the stream and the module (the device's primary context stays retained
// until the process exits). The Device is unusable afterwards.
func (d *Device) Close() error {
	if d.hook != nil {
		d.hook()
	}
	d.mu.Lock()
	runtime.LockOSThread()
	defer d.leave()
	if d.closed {
		return nil
	}
	d.drv.call(d.drv.cuCtxSetCurrent, d.ctx)
	r := d.drv.call(d.drv.cuStreamSynchronize, d.stream)
	d.release()
	d.closed = true
	return check("cuStreamSynchronize", r)
}

// release frees everything Open created (thread locked, context current).
func (d *Device) release() {
	for k := range d.graphs {
		d.dropGraph(k)
	}
	for i := range d.ws {
		if d.ws[i].p != 0 {
			d.drv.call(d.drv.cuMemFree, uintptr(d.ws[i].p))
			d.ws[i].p, d.ws[i].bytes = 0, 0
		}
	}
	if d.blasWS != 0 {
		d.drv.call(d.drv.cuMemFree, uintptr(d.blasWS))
		d.blasWS = 0
	}
	d.alloc.releaseAll(d.drv)
	d.dnn.close()
	d.dnn = nil
	d.blas.close()
	if d.mod != 0 {
		d.drv.call(d.drv.cuModuleUnload, d.mod)
		d.mod = 0
	}
	if d.stream != 0 {
		d.drv.call(d.drv.cuStreamDestroy, d.stream)
		d.stream = 0
	}
	// The primary context stays retained: it is process-wide and shared
	// with cuBLAS's runtime, and destroying it (the last release) while the
	// runtime inside libcublas still refers to it breaks the next Open.
	// The driver releases it at process exit.
	d.ctx = 0
}

// scratch returns slot i grown to at least bytes (contents undefined).
func (d *Device) scratch(i int, bytes int64) (Ptr, bool) {
	s := &d.ws[i]
	if s.bytes >= bytes {
		return s.p, true
	}
	d.scratchGen++ // graphs captured with the old block are stale
	if s.p != 0 {
		// Queued work may still use the block: wait for it first.
		d.drv.call(d.drv.cuStreamSynchronize, d.stream)
		d.drv.call(d.drv.cuMemFree, uintptr(s.p))
		s.p, s.bytes = 0, 0
	}
	sz := bytes + bytes/4 // headroom so slowly growing requests reuse
	p, err := d.alloc.raw(d.drv, sz)
	if err != nil {
		d.failLocked(fmt.Errorf("cuda: scratch of %d bytes: %w", sz, err))
		return 0, false
	}
	s.p, s.bytes = p, sz
	return p, true
}

// Kernel argument encoders: each value occupies one 8-byte slot, read by
// the kernel at its parameter's width (little-endian).
func pa(p Ptr) uint64     { return uint64(p) }
func ia(v int) uint64     { return uint64(uint32(int32(v))) }
func fa(v float32) uint64 { return uint64(*(*uint32)(unsafe.Pointer(&v))) }
func ua(v uint64) uint64  { return v }
func ba(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// launch queues kernel k on the stream with the given grid and block.
func (d *Device) launch(k int, gx, gy, gz, bx, by, bz int, args ...uint64) {
	d.launchShared(k, 0, gx, gy, gz, bx, by, bz, args...)
}

// launchShared is launch with shmem bytes of dynamic shared memory.
func (d *Device) launchShared(k, shmem int, gx, gy, gz, bx, by, bz int, args ...uint64) {
	if d.err != nil {
		return
	}
	copy(d.args[:], args)
	r := d.drv.call(d.drv.cuLaunchKernel, d.fn[k], uintptr(gx), uintptr(gy), uintptr(gz),
		uintptr(bx), uintptr(by), uintptr(bz), uintptr(shmem), d.stream, uintptr(unsafe.Pointer(&d.argp[0])), 0)
	if r != 0 {
		d.failLocked(fmt.Errorf("cuda: launch %s grid (%d,%d,%d) block (%d,%d,%d): %w",
			kernelNames[k], gx, gy, gz, bx, by, bz, r))
	}
}

const blockSize = 256

// launch1D queues a grid-stride kernel over n elements.
func (d *Device) launch1D(k, n int, args ...uint64) {
	if n <= 0 {
		return
	}
	g := (n + blockSize - 1) / blockSize
	if g > 1<<16 {
		g = 1 << 16
	}
	d.launch(k, g, 1, 1, blockSize, 1, 1, args...)
}

// launchRows queues one block of blockSize threads per row.
func (d *Device) launchRows(k, rows int, args ...uint64) {
	if rows <= 0 {
		return
	}
	// gridDim.x may be up to 2^31-1.
	d.launch(k, rows, 1, 1, blockSize, 1, 1, args...)
}

func (d *Device) blasErr(op string, s BLASStatus) {
	if s != 0 {
		d.failLocked(fmt.Errorf("cuda: %s: cuBLAS: %w", op, s))
	}
}
