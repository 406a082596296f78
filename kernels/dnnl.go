package kernels

import (
	"fmt"
	"github.com/ddpm-go/ddpm/kernels/internal/dl"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// This file runs convolutions through oneDNN's convolution primitives (the
// JIT direct kernels PyTorch uses on this CPU) when libdnnl.so.2 is
// present, bound at run time with purego. User tensors stay NCHW/OIHW;
// each primitive picks its own (blocked) layouts and reorders in and out.

// oneDNN 2.6 C API constants (dnnl_types.h).
const (
	dnnlSuccess          = 0
	dnnlBF16             = 2
	dnnlF32              = 3
	dnnlTagAny           = 1
	dnnlTagA             = 2  // x
	dnnlTagABCD          = 5  // nchw, oihw
	dnnlTagABcd16b       = 69 // nChw16c (oneDNN 2.6's dnnl_aBcd16b)
	dnnlForwardTraining  = 64
	dnnlForwardInference = 96
	dnnlBackwardData     = 160
	dnnlBackwardWeights  = 192
	dnnlConvDirect       = 1
	dnnlConvWinograd     = 2
	dnnlCPU              = 1
	dnnlStreamDefault    = 1
	dnnlArgSrc           = 1
	dnnlArgDst           = 17
	dnnlArgWeights       = 33
	dnnlArgBias          = 41
	dnnlArgDiffSrc       = 129
	dnnlArgDiffDst       = 145
	dnnlArgDiffWeights   = 161
	dnnlArgDiffBias      = 169
	dnnlQuerySrcMD       = 129
	dnnlQueryDiffSrcMD   = 130
	dnnlQueryWeightsMD   = 131
	dnnlQueryDiffWeights = 132
	dnnlQueryDstMD       = 133
	dnnlQueryDiffDstMD   = 134
	dnnlQueryImplInfoStr = 8
	dnnlQueryScratchpad  = 136 // dnnl_query_scratchpad_md
	dnnlArgScratchpad    = 80
	dnnlScratchpadUser   = 1    // dnnl_scratchpad_mode_user
	dnnlMemDescSize      = 696  // sizeof(dnnl_memory_desc_t)
	dnnlConvDescSize     = 5976 // sizeof(dnnl_convolution_desc_t)
	dnnlMaxDims          = 12
)

// dnnlMemoryAllocate is DNNL_MEMORY_ALLOCATE, ((void *)(size_t)-1).
var dnnlMemoryAllocate = ^uintptr(0)

type (
	memDesc  [dnnlMemDescSize / 8]uint64 // 8-byte aligned
	convDesc [dnnlConvDescSize / 8]uint64
	dims     [dnnlMaxDims]int64
	execArg  struct {
		arg int32
		_   int32
		mem uintptr
	}
)

// dnnlAPI holds the bound oneDNN functions, one CPU engine and the
// primitive attributes.
type dnnlAPI struct {
	mdInitByTag    func(md *memDesc, ndims int32, d *dims, dt int32, tag int32) int32
	mdInitStrides  func(md *memDesc, ndims int32, d *dims, dt int32, strides *dims) int32
	convFwdInit    func(cd *convDesc, prop, alg int32, src, wei, bias, dst *memDesc, strides, padL, padR *dims) int32
	convBwdDInit   func(cd *convDesc, alg int32, dsrc, wei, ddst *memDesc, strides, padL, padR *dims) int32
	convBwdWInit   func(cd *convDesc, alg int32, src, dwei, dbias, ddst *memDesc, strides, padL, padR *dims) int32
	pdCreate       func(pd *uintptr, op unsafe.Pointer, attr uintptr, engine uintptr, hint uintptr) int32
	pdQueryMD      func(pd uintptr, what int32, index int32) unsafe.Pointer
	pdQuery        func(pd uintptr, what int32, index int32, result unsafe.Pointer) int32
	primCreate     func(p *uintptr, pd uintptr) int32
	primExecute    func(p uintptr, stream uintptr, nargs int32, args unsafe.Pointer) int32
	memCreate      func(m *uintptr, md unsafe.Pointer, engine uintptr, handle uintptr) int32
	memSetHandle   func(m uintptr, handle unsafe.Pointer) int32
	mdEqual        func(a, b unsafe.Pointer) int32
	reorderCreate  func(pd *uintptr, src unsafe.Pointer, srcEng uintptr, dst unsafe.Pointer, dstEng uintptr, attr uintptr) int32
	engineCreate   func(e *uintptr, kind int32, index uintptr) int32
	streamCreate   func(s *uintptr, e uintptr, flags uint32) int32
	streamWait     func(s uintptr) int32
	attrCreate     func(attr *uintptr) int32
	attrSetScrMode func(attr uintptr, mode int32) int32
	mdGetSize      func(md unsafe.Pointer) uintptr
	ompSetThreads  func(n int32)
	// gemmBF16 is dnnl_gemm_bf16bf16f32 (row-major, like dnnl_sgemm:
	// C = alpha*op(A)*op(B) + beta*C with A and B bf16, C fp32), or nil.
	gemmBF16 func(ta, tb byte, m, n, k int64, alpha float32, a unsafe.Pointer, lda int64,
		b unsafe.Pointer, ldb int64, beta float32, c unsafe.Pointer, ldc int64) int32

	engine uintptr
	// attr asks every primitive for a user-managed scratchpad. oneDNN's
	// default (library) scratchpad is shared by all primitives and only
	// safe when each primitive runs on the OS thread that created it,
	// which goroutines do not promise: the GEMM-based convolutions it
	// picks on CPUs without AVX-512 then corrupt memory. Each primitive
	// here owns its scratchpad instead, and its dnnlConv's mutex keeps
	// two runs from sharing it.
	attr uintptr
}

var (
	dnnlAPIOnce sync.Once
	dnnlAPIVal  *dnnlAPI
	dnnlAPIErr  error
)

// loadDNNLAPI binds oneDNN once per process (dlopen is process-wide).
func loadDNNLAPI() (*dnnlAPI, error) {
	dnnlAPIOnce.Do(func() {
		lib, err := dl.Open("libdnnl.so.2")
		if err != nil {
			dnnlAPIErr = fmt.Errorf("open libdnnl.so.2: %w", err)
			return
		}
		a := &dnnlAPI{}
		for _, f := range []struct {
			p    any
			name string
		}{
			{&a.mdInitByTag, "dnnl_memory_desc_init_by_tag"},
			{&a.mdInitStrides, "dnnl_memory_desc_init_by_strides"},
			{&a.convFwdInit, "dnnl_convolution_forward_desc_init"},
			{&a.convBwdDInit, "dnnl_convolution_backward_data_desc_init"},
			{&a.convBwdWInit, "dnnl_convolution_backward_weights_desc_init"},
			{&a.pdCreate, "dnnl_primitive_desc_create"},
			{&a.pdQueryMD, "dnnl_primitive_desc_query_md"},
			{&a.pdQuery, "dnnl_primitive_desc_query"},
			{&a.primCreate, "dnnl_primitive_create"},
			{&a.primExecute, "dnnl_primitive_execute"},
			{&a.memCreate, "dnnl_memory_create"},
			{&a.memSetHandle, "dnnl_memory_set_data_handle"},
			{&a.mdEqual, "dnnl_memory_desc_equal"},
			{&a.reorderCreate, "dnnl_reorder_primitive_desc_create"},
			{&a.engineCreate, "dnnl_engine_create"},
			{&a.streamCreate, "dnnl_stream_create"},
			{&a.streamWait, "dnnl_stream_wait"},
			{&a.attrCreate, "dnnl_primitive_attr_create"},
			{&a.attrSetScrMode, "dnnl_primitive_attr_set_scratchpad_mode"},
			{&a.mdGetSize, "dnnl_memory_desc_get_size"},
		} {
			sym, err := dl.Sym(lib, f.name)
			if err != nil {
				dnnlAPIErr = fmt.Errorf("libdnnl.so.2: symbol %s: %w", f.name, err)
				return
			}
			purego.RegisterFunc(f.p, sym)
		}
		if sym, err := dl.Sym(lib, "dnnl_gemm_bf16bf16f32"); err == nil {
			purego.RegisterFunc(&a.gemmBF16, sym)
		}
		if gomp, err := dl.Open("libgomp.so.1"); err == nil {
			if sym, err := dl.Sym(gomp, "omp_set_num_threads"); err == nil {
				purego.RegisterFunc(&a.ompSetThreads, sym)
			}
		}
		if st := a.engineCreate(&a.engine, dnnlCPU, 0); st != dnnlSuccess {
			dnnlAPIErr = fmt.Errorf("dnnl_engine_create: status %d", st)
			return
		}
		if st := a.attrCreate(&a.attr); st != dnnlSuccess {
			dnnlAPIErr = fmt.Errorf("dnnl_primitive_attr_create: status %d", st)
			return
		}
		if st := a.attrSetScrMode(a.attr, dnnlScratchpadUser); st != dnnlSuccess {
			dnnlAPIErr = fmt.Errorf("dnnl_primitive_attr_set_scratchpad_mode: status %d", st)
			return
		}
		dnnlAPIVal = a
	})
	return dnnlAPIVal, dnnlAPIErr
}

// dnnlPrim is a primitive with its own scratchpad memory (0 when it
// needs none).
type dnnlPrim struct {
	p, scratch uintptr
}

// newPrim creates pd's primitive and allocates the scratchpad it asks for.
func (a *dnnlAPI) newPrim(pd uintptr, what string) (dnnlPrim, error) {
	var p dnnlPrim
	if st := a.primCreate(&p.p, pd); st != dnnlSuccess {
		return p, fmt.Errorf("dnnl_primitive_create(%s): status %d", what, st)
	}
	if md := a.pdQueryMD(pd, dnnlQueryScratchpad, 0); md != nil && a.mdGetSize(md) > 0 {
		if st := a.memCreate(&p.scratch, md, a.engine, dnnlMemoryAllocate); st != dnnlSuccess {
			return p, fmt.Errorf("dnnl_memory_create(%s scratchpad): status %d", what, st)
		}
	}
	return p, nil
}

// exec runs p on stream with args (plus its scratchpad).
func (a *dnnlAPI) exec(p dnnlPrim, stream uintptr, args []execArg) int32 {
	if p.scratch != 0 {
		args = append(args, execArg{arg: dnnlArgScratchpad, mem: p.scratch})
	}
	return a.primExecute(p.p, stream, int32(len(args)), unsafe.Pointer(&args[0]))
}

// dnnlTensor is one tensor argument of a primitive: the user's memory
// object (plain layout, handle set per call) and, when the primitive wants
// another layout, its own buffer and the reorder between them.
type dnnlTensor struct {
	user       uintptr        // memory with the user layout
	internal   uintptr        // memory with the primitive's layout, or 0 if the same
	internalMD unsafe.Pointer // its descriptor (owned by the primitive descriptor)
	reorder    dnnlPrim       // user->internal (inputs) or internal->user (outputs)
	// direct has the primitive's layout and no buffer of its own: it
	// binds a caller's buffer already in that layout (run's direct), so
	// that internal keeps its own buffer for the calls that reorder.
	direct uintptr
}

// mem returns the memory object the primitive reads or writes.
func (t *dnnlTensor) mem() uintptr {
	if t.internal != 0 {
		return t.internal
	}
	return t.user
}

// dnnlConv is the set of primitives for one ConvDims: forward (with or
// without bias), backward data and backward weights (with or without
// bias), created on first use. A mutex serialises its runs because the
// internal buffers are shared.
type dnnlConv struct {
	mu     sync.Mutex
	api    *dnnlAPI
	stream uintptr // its own, as its runs may come from any OS thread
	d      ConvDims

	userX, userW, userB, userY memDesc
	strides, padL, padR        dims

	mode    convMode
	omp     int                      // OpenMP threads its primitives are made for and run with
	wcaches *[2]*constCache[uintptr] // [bias]: shared by the workers' dnnlConv of one shape
	fwdPD   [2]uintptr               // [bias]
	hintPD  [2]uintptr               // [bias]: fp32 direct training forward, the backward passes' hint: fwdPD when the mode chose that, else made on first use
	fwd     [2]*dnnlStep
	blocked [2]int8 // [bias]: fwd's nChw16c source (bit 1) and destination (bit 2) (see blockedIO); -1 neither; 0 not asked yet
	bwdD    *dnnlStep
	bwdW    [2]*dnnlStep
	impl    string // implementation name of the forward primitive
}

// dnnlStep is one primitive with its tensors.
type dnnlStep struct {
	prim    dnnlPrim
	tensors map[int32]*dnnlTensor // by DNNL_ARG_*
	// wcache holds reordered copies of constant weight buffers
	// (CPUOptions.ConstWeights), shared by the workers' primitives of one
	// chunk shape, which want the same layout.
	wcache *constCache[uintptr]
}

// convMode is how forward convolutions compute (the backward passes are
// always fp32 direct convolutions).
type convMode struct {
	// inference: the weights are constant (CPUOptions.ConstWeights), so
	// the forward pass may use forward-inference primitives: oneDNN's
	// Winograd F(4x4, 3x3) kernel where winogradFaster says so.
	inference bool
	// bf16: source and weights in bf16, accumulation and output in fp32
	// (CPUOptions.BF16; set only with inference).
	bf16 bool
}

// winogradFaster reports whether oneDNN's Winograd kernel measured faster
// than its direct one for the chunk shape d, on this machine's AMD EPYC
// (AVX-512): 3x3 stride-1 convs with at least 32 channels in and out and
// at least 512 output positions in the chunk. Measured per layer with
// DNNL_VERBOSE: 1.5-2.5x at 16x16 and 32x32 with 64-256 channels (DDPM
// CIFAR-10 UNet, batch 4 and 16), 1.3-2.3x with 32 (the diffusers fixture
// and the default MNIST model at batch 16: 32 to 32 channels 7.4 -> 5.1
// ms, 96 to 32 5.6 -> 3.2 ms); 0.7-0.9x at 4x4 and 8x8 with batch 4, and
// with 3 channels in or out.
func winogradFaster(d ConvDims) bool {
	return d.R == 3 && d.S == 3 && d.StrideH == 1 && d.StrideW == 1 &&
		d.C >= 32 && d.K >= 32 && d.N*d.OutH()*d.OutW() >= 512
}

// pinThreads locks the goroutine to its OS thread and sets that
// thread's OpenMP thread count to c.omp until the returned func runs.
// oneDNN sizes a primitive's work split, its scratchpad and (for the
// Winograd kernels) the blocked layout of its weights by
// omp_get_max_threads() on the thread that creates it, and the workers'
// primitives of one shape share one cache of reordered weights, so every
// one of them is made, and run, under the same count: made under
// whatever count the thread had last, a Winograd primitive could read
// another's weight layout, past its end.
func (c *dnnlConv) pinThreads() func() { return c.api.pin(c.omp) }

// pin locks the goroutine to its OS thread and sets that thread's OpenMP
// thread count to n (libgomp keeps it per thread) until the returned
// func runs: oneDNN calls from goroutines go through it.
func (a *dnnlAPI) pin(n int) func() {
	runtime.LockOSThread()
	if a.ompSetThreads != nil {
		a.ompSetThreads(int32(n))
	}
	return runtime.UnlockOSThread
}

// newDNNLConv prepares the user memory descriptors and the forward
// primitive descriptor; it fails when oneDNN rejects the shape. yStrideK
// is the channel count between images in the user's y (and dy) buffer:
// d.K, or more when d covers a slice of a larger output's channels.
func newDNNLConv(api *dnnlAPI, d ConvDims, yStrideK, omp int, mode convMode) (*dnnlConv, error) {
	c := &dnnlConv{api: api, d: d, mode: mode, omp: max(omp, 1)}
	defer c.pinThreads()()
	if st := api.streamCreate(&c.stream, api.engine, dnnlStreamDefault); st != dnnlSuccess {
		return nil, fmt.Errorf("dnnl_stream_create: status %d", st)
	}
	oh, ow := d.OutH(), d.OutW()
	for _, m := range []struct {
		md  *memDesc
		n   int32
		dm  dims
		tag int32
	}{
		{&c.userX, 4, dims{int64(d.N), int64(d.C), int64(d.H), int64(d.W)}, dnnlTagABCD},
		{&c.userW, 4, dims{int64(d.K), int64(d.C), int64(d.R), int64(d.S)}, dnnlTagABCD},
		{&c.userB, 1, dims{int64(d.K)}, dnnlTagA},
		{&c.userY, 4, dims{int64(d.N), int64(d.K), int64(oh), int64(ow)}, dnnlTagABCD},
	} {
		dm := m.dm
		if st := api.mdInitByTag(m.md, m.n, &dm, dnnlF32, m.tag); st != dnnlSuccess {
			return nil, fmt.Errorf("dnnl_memory_desc_init_by_tag: status %d", st)
		}
	}
	if yStrideK > d.K {
		dm := dims{int64(d.N), int64(d.K), int64(oh), int64(ow)}
		st := dims{int64(yStrideK * oh * ow), int64(oh * ow), int64(ow), 1}
		if s := api.mdInitStrides(&c.userY, 4, &dm, dnnlF32, &st); s != dnnlSuccess {
			return nil, fmt.Errorf("dnnl_memory_desc_init_by_strides: status %d", s)
		}
	}
	c.strides = dims{int64(d.StrideH), int64(d.StrideW)}
	c.padL = dims{int64(d.PadTop), int64(d.PadLeft)}
	c.padR = dims{int64(d.PadBottom), int64(d.PadRight)}
	for bias := 0; bias < 2; bias++ {
		pd, err := c.fwdDesc(bias == 1)
		if err != nil {
			return nil, err
		}
		c.fwdPD[bias] = pd
	}
	var info *byte
	if api.pdQuery(c.fwdPD[0], dnnlQueryImplInfoStr, 0, unsafe.Pointer(&info)) == dnnlSuccess && info != nil {
		c.impl = cString(info)
	}
	return c, nil
}

// cString copies a NUL-terminated C string owned by oneDNN (at most 256 bytes).
func cString(p *byte) string {
	var b []byte
	for i := 0; i < 256; i++ {
		ch := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if ch == 0 {
			break
		}
		b = append(b, ch)
	}
	return string(b)
}

// anyLike returns a descriptor with md's dims and format "any".
func (c *dnnlConv) anyLike(n int32, dm dims) (memDesc, error) {
	var md memDesc
	if st := c.api.mdInitByTag(&md, n, &dm, dnnlF32, dnnlTagAny); st != dnnlSuccess {
		return md, fmt.Errorf("dnnl_memory_desc_init_by_tag(any): status %d", st)
	}
	return md, nil
}

func (c *dnnlConv) anyDescs() (x, w, y memDesc, err error) {
	d := c.d
	if x, err = c.anyLike(4, dims{int64(d.N), int64(d.C), int64(d.H), int64(d.W)}); err != nil {
		return
	}
	if w, err = c.anyLike(4, dims{int64(d.K), int64(d.C), int64(d.R), int64(d.S)}); err != nil {
		return
	}
	y, err = c.anyLike(4, dims{int64(d.N), int64(d.K), int64(d.OutH()), int64(d.OutW())})
	return
}

// fwdDesc returns the forward primitive descriptor of c's mode: fp32
// direct (training), fp32 Winograd where faster and oneDNN accepts it
// (inference), or bf16 direct.
func (c *dnnlConv) fwdDesc(bias bool) (uintptr, error) {
	switch {
	case c.mode.bf16:
		// Asked for training, oneDNN picks its jit_bf16 kernels on the
		// blocked layout (nChw16c); for inference its brgconv kernels on
		// NHWC, whose transposes in and out of NCHW cost more than they
		// gain: 219 against 279 thread-ms of convolutions and reorders
		// per DDPM CIFAR-10 forward at batch 4.
		return c.fwdDescWith(bias, dnnlConvDirect, dnnlForwardTraining, dnnlBF16)
	case c.mode.inference && winogradFaster(c.d):
		if pd, err := c.fwdDescWith(bias, dnnlConvWinograd, dnnlForwardInference, dnnlF32); err == nil {
			return pd, nil
		}
	}
	pd, err := c.fwdDescWith(bias, dnnlConvDirect, dnnlForwardTraining, dnnlF32)
	if err == nil {
		c.hintPD[boolIndex(bias)] = pd
	}
	return pd, err
}

// boolIndex is 1 for true, 0 for false.
func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fwdDescWith creates a forward primitive descriptor with the given
// algorithm, propagation kind and data type of the source and weights
// (the bias and destination are fp32).
func (c *dnnlConv) fwdDescWith(bias bool, alg, prop, dt int32) (uintptr, error) {
	x, w, y, err := c.anyDescs()
	if err != nil {
		return 0, err
	}
	if dt != dnnlF32 {
		d := c.d
		xd, wd := dims{int64(d.N), int64(d.C), int64(d.H), int64(d.W)}, dims{int64(d.K), int64(d.C), int64(d.R), int64(d.S)}
		if st := c.api.mdInitByTag(&x, 4, &xd, dt, dnnlTagAny); st != dnnlSuccess {
			return 0, fmt.Errorf("dnnl_memory_desc_init_by_tag(src, type %d): status %d", dt, st)
		}
		if st := c.api.mdInitByTag(&w, 4, &wd, dt, dnnlTagAny); st != dnnlSuccess {
			return 0, fmt.Errorf("dnnl_memory_desc_init_by_tag(weights, type %d): status %d", dt, st)
		}
	}
	var cd convDesc
	var b *memDesc
	if bias {
		b = &c.userB
	}
	if st := c.api.convFwdInit(&cd, prop, alg, &x, &w, b, &y, &c.strides, &c.padL, &c.padR); st != dnnlSuccess {
		return 0, fmt.Errorf("dnnl_convolution_forward_desc_init: status %d", st)
	}
	var pd uintptr
	if st := c.api.pdCreate(&pd, unsafe.Pointer(&cd), c.api.attr, c.api.engine, 0); st != dnnlSuccess {
		return 0, fmt.Errorf("dnnl_primitive_desc_create(conv fwd): status %d", st)
	}
	return pd, nil
}

// hint returns the forward primitive descriptor the backward passes are
// created from: fp32 direct training (fwdPD when c's mode chose it, else
// one made once).
func (c *dnnlConv) hint(bias int) (uintptr, error) {
	if c.hintPD[bias] == 0 {
		pd, err := c.fwdDescWith(bias == 1, dnnlConvDirect, dnnlForwardTraining, dnnlF32)
		if err != nil {
			return 0, err
		}
		c.hintPD[bias] = pd
	}
	return c.hintPD[bias], nil
}

// tensor makes the memory objects for argument query of pd, with user
// layout user; input says which way the reorder goes.
func (c *dnnlConv) tensor(pd uintptr, query int32, user *memDesc, input bool) (*dnnlTensor, error) {
	api := c.api
	t := &dnnlTensor{}
	if st := api.memCreate(&t.user, unsafe.Pointer(user), api.engine, 0); st != dnnlSuccess {
		return nil, fmt.Errorf("dnnl_memory_create: status %d", st)
	}
	want := api.pdQueryMD(pd, query, 0)
	if want == nil {
		return nil, fmt.Errorf("dnnl_primitive_desc_query_md(%d): none", query)
	}
	if api.mdEqual(unsafe.Pointer(user), want) != 0 {
		return t, nil
	}
	if st := api.memCreate(&t.internal, want, api.engine, dnnlMemoryAllocate); st != dnnlSuccess {
		return nil, fmt.Errorf("dnnl_memory_create(internal): status %d", st)
	}
	t.internalMD = want
	src, dst := unsafe.Pointer(user), want
	if !input {
		src, dst = dst, src
	}
	var rpd uintptr
	if st := api.reorderCreate(&rpd, src, api.engine, dst, api.engine, api.attr); st != dnnlSuccess {
		return nil, fmt.Errorf("dnnl_reorder_primitive_desc_create: status %d", st)
	}
	var err error
	if t.reorder, err = api.newPrim(rpd, "reorder"); err != nil {
		return nil, err
	}
	return t, nil
}

type argSpec struct {
	arg   int32
	query int32
	user  *memDesc
	input bool
}

func (c *dnnlConv) step(pd uintptr, specs []argSpec) (*dnnlStep, error) {
	s := &dnnlStep{tensors: map[int32]*dnnlTensor{}}
	for _, a := range specs {
		var t *dnnlTensor
		var err error
		if a.query == 0 { // bias: always the plain layout
			t = &dnnlTensor{}
			if st := c.api.memCreate(&t.user, unsafe.Pointer(a.user), c.api.engine, 0); st != dnnlSuccess {
				return nil, fmt.Errorf("dnnl_memory_create(bias): status %d", st)
			}
		} else if t, err = c.tensor(pd, a.query, a.user, a.input); err != nil {
			return nil, err
		}
		s.tensors[a.arg] = t
	}
	var err error
	if s.prim, err = c.api.newPrim(pd, "conv"); err != nil {
		return nil, err
	}
	return s, nil
}

// run binds the user buffers (by argument), reorders inputs in, executes
// the primitive, reorders outputs out and waits. wmem, when not 0, is an
// already reordered weights memory used instead of bufs' weights; direct
// holds arguments given already in the primitive's layout (see
// blockedIO), bound without reordering. The caller has pinned the
// thread (pinThreads).
func (c *dnnlConv) run(s *dnnlStep, bufs map[int32][]float32, outputs []int32, wmem uintptr, direct map[int32]unsafe.Pointer) error {
	api := c.api
	pre := func(arg int32) bool {
		return (arg == dnnlArgWeights && wmem != 0) || direct[arg] != nil
	}
	args := make([]execArg, 0, len(s.tensors))
	for arg, t := range s.tensors {
		switch {
		case arg == dnnlArgWeights && wmem != 0:
			args = append(args, execArg{arg: arg, mem: wmem})
			continue
		case direct[arg] != nil:
			if t.direct == 0 {
				if st := api.memCreate(&t.direct, t.internalMD, api.engine, 0); st != dnnlSuccess {
					return fmt.Errorf("dnnl_memory_create(direct): status %d", st)
				}
			}
			api.memSetHandle(t.direct, direct[arg])
			args = append(args, execArg{arg: arg, mem: t.direct})
			continue
		default:
			b := bufs[arg]
			api.memSetHandle(t.user, unsafe.Pointer(&b[0]))
		}
		args = append(args, execArg{arg: arg, mem: t.mem()})
	}
	isOut := func(a int32) bool {
		for _, o := range outputs {
			if o == a {
				return true
			}
		}
		return false
	}
	for arg, t := range s.tensors {
		if t.reorder.p != 0 && !isOut(arg) && !pre(arg) {
			ra := []execArg{{arg: dnnlArgSrc, mem: t.user}, {arg: dnnlArgDst, mem: t.internal}}
			if st := api.exec(t.reorder, c.stream, ra); st != dnnlSuccess {
				return fmt.Errorf("reorder in: status %d", st)
			}
		}
	}
	if st := api.exec(s.prim, c.stream, args); st != dnnlSuccess {
		return fmt.Errorf("dnnl_primitive_execute: status %d", st)
	}
	for _, arg := range outputs {
		t := s.tensors[arg]
		if t != nil && t.reorder.p != 0 && !pre(arg) {
			ra := []execArg{{arg: dnnlArgSrc, mem: t.internal}, {arg: dnnlArgDst, mem: t.user}}
			if st := api.exec(t.reorder, c.stream, ra); st != dnnlSuccess {
				return fmt.Errorf("reorder out: status %d", st)
			}
		}
	}
	if st := api.streamWait(c.stream); st != dnnlSuccess {
		return fmt.Errorf("dnnl_stream_wait: status %d", st)
	}
	for _, b := range bufs {
		runtime.KeepAlive(b)
	}
	return nil
}

// fwdStep returns the forward step (with bias when bi is 1), made on
// first use. The caller holds c.mu.
func (c *dnnlConv) fwdStep(bi int) (*dnnlStep, error) {
	if c.fwd[bi] == nil {
		specs := []argSpec{{dnnlArgSrc, dnnlQuerySrcMD, &c.userX, true}, {dnnlArgWeights, dnnlQueryWeightsMD, &c.userW, true},
			{dnnlArgDst, dnnlQueryDstMD, &c.userY, false}}
		if bi == 1 {
			specs = append(specs, argSpec{dnnlArgBias, 0, &c.userB, true})
		}
		s, err := c.step(c.fwdPD[bi], specs)
		if err != nil {
			return nil, err
		}
		s.wcache = c.wcaches[bi]
		c.fwd[bi] = s
	}
	return c.fwd[bi], nil
}

// blockedIO reports whether the forward primitive (with bias when bias)
// reads its source and writes its destination in oneDNN's nChw16c
// layout (the source of bf16 values in bf16 mode, else float32; the
// destination float32), so that forward can take a source written that
// way (by normBlocked) and leave its output that way (for unblockRows)
// instead of reordering from and to NCHW.
func (c *dnnlConv) blockedIO(bias bool) (src, dst bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.pinThreads()()
	bi := boolIndex(bias)
	if c.blocked[bi] == 0 {
		c.blocked[bi] = -1 // known, neither
		if s, err := c.fwdStep(bi); err == nil {
			dt := int32(dnnlF32)
			if c.mode.bf16 {
				dt = dnnlBF16
			}
			var v int8
			if c.d.C%16 == 0 && c.isBlocked(s.tensors[dnnlArgSrc], c.d.N, c.d.C, c.d.H, c.d.W, dt) {
				v |= 1
			}
			if c.d.K%16 == 0 && c.isBlocked(s.tensors[dnnlArgDst], c.d.N, c.d.K, c.d.OutH(), c.d.OutW(), dnnlF32) {
				v |= 2
			}
			if v != 0 {
				c.blocked[bi] = v
			}
		}
	}
	v := c.blocked[bi]
	return v > 0 && v&1 != 0, v > 0 && v&2 != 0
}

// isBlocked reports whether t's primitive layout is nChw16c of type dt
// for dims (n, ch, h, w).
func (c *dnnlConv) isBlocked(t *dnnlTensor, n, ch, h, w int, dt int32) bool {
	if t == nil || t.internalMD == nil {
		return false
	}
	var md memDesc
	d := dims{int64(n), int64(ch), int64(h), int64(w)}
	return c.api.mdInitByTag(&md, 4, &d, dt, dnnlTagABcd16b) == dnnlSuccess &&
		c.api.mdEqual(unsafe.Pointer(&md), t.internalMD) != 0
}

// forward runs y = conv(x, w) + b (b may be nil). With constW the
// reordered weights are cached by w's address (see CPUOptions.ConstWeights).
// src, when not nil, is the source in nChw16c (blockedIO must have said
// yes) and x is not read; dst, when not nil, receives the output in
// nChw16c and y is not written.
func (c *dnnlConv) forward(y, x, w, b []float32, constW bool, src, dst unsafe.Pointer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.pinThreads()()
	bi := 0
	if b != nil {
		bi = 1
	}
	s, err := c.fwdStep(bi)
	if err != nil {
		return err
	}
	bufs := map[int32][]float32{dnnlArgSrc: x, dnnlArgWeights: w, dnnlArgDst: y}
	if bi == 1 {
		bufs[dnnlArgBias] = b
	}
	var wmem uintptr
	if constW {
		if wmem, err = c.cachedWeights(s, w); err != nil {
			return err
		}
	}
	var direct map[int32]unsafe.Pointer
	if src != nil || dst != nil {
		direct = map[int32]unsafe.Pointer{dnnlArgSrc: src, dnnlArgDst: dst}
	}
	return c.run(s, bufs, []int32{dnnlArgDst}, wmem, direct)
}

// cachedWeights returns s's reordered copy of the weight buffer w, making
// it on first use; 0 when the primitive reads the user layout directly.
// The caller has pinned the thread (pinThreads).
func (c *dnnlConv) cachedWeights(s *dnnlStep, w []float32) (uintptr, error) {
	t := s.tensors[dnnlArgWeights]
	if t == nil || t.reorder.p == 0 {
		return 0, nil
	}
	return s.wcache.get(w, func(m uintptr, had bool) (uintptr, error) {
		api := c.api
		if !had { // else w changed in place after all: reorder again into the same memory
			if st := api.memCreate(&m, t.internalMD, api.engine, dnnlMemoryAllocate); st != dnnlSuccess {
				return 0, fmt.Errorf("dnnl_memory_create(weights cache): status %d", st)
			}
		}
		api.memSetHandle(t.user, unsafe.Pointer(&w[0]))
		ra := []execArg{{arg: dnnlArgSrc, mem: t.user}, {arg: dnnlArgDst, mem: m}}
		if st := api.exec(t.reorder, c.stream, ra); st != dnnlSuccess {
			return 0, fmt.Errorf("reorder weights: status %d", st)
		}
		if st := api.streamWait(c.stream); st != dnnlSuccess {
			return 0, fmt.Errorf("dnnl_stream_wait: status %d", st)
		}
		runtime.KeepAlive(w)
		return m, nil
	})
}

// backwardData runs dx = conv^T(dy, w).
func (c *dnnlConv) backwardData(dx, dy, w []float32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.pinThreads()()
	if c.bwdD == nil {
		x, wd, y, err := c.anyDescs()
		if err != nil {
			return err
		}
		var cd convDesc
		if st := c.api.convBwdDInit(&cd, dnnlConvDirect, &x, &wd, &y, &c.strides, &c.padL, &c.padR); st != dnnlSuccess {
			return fmt.Errorf("dnnl_convolution_backward_data_desc_init: status %d", st)
		}
		h, err := c.hint(0)
		if err != nil {
			return err
		}
		var pd uintptr
		if st := c.api.pdCreate(&pd, unsafe.Pointer(&cd), c.api.attr, c.api.engine, h); st != dnnlSuccess {
			return fmt.Errorf("dnnl_primitive_desc_create(conv bwd data): status %d", st)
		}
		s, err := c.step(pd, []argSpec{{dnnlArgDiffDst, dnnlQueryDiffDstMD, &c.userY, true},
			{dnnlArgWeights, dnnlQueryWeightsMD, &c.userW, true}, {dnnlArgDiffSrc, dnnlQueryDiffSrcMD, &c.userX, false}})
		if err != nil {
			return err
		}
		c.bwdD = s
	}
	return c.run(c.bwdD, map[int32][]float32{dnnlArgDiffDst: dy, dnnlArgWeights: w, dnnlArgDiffSrc: dx},
		[]int32{dnnlArgDiffSrc}, 0, nil)
}

// backwardWeights runs dw (and db when not nil) from dy and x.
func (c *dnnlConv) backwardWeights(dw, db, dy, x []float32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.pinThreads()()
	bi := 0
	if db != nil {
		bi = 1
	}
	if c.bwdW[bi] == nil {
		x, wd, y, err := c.anyDescs()
		if err != nil {
			return err
		}
		var cd convDesc
		var b *memDesc
		if bi == 1 {
			b = &c.userB
		}
		if st := c.api.convBwdWInit(&cd, dnnlConvDirect, &x, &wd, b, &y, &c.strides, &c.padL, &c.padR); st != dnnlSuccess {
			return fmt.Errorf("dnnl_convolution_backward_weights_desc_init: status %d", st)
		}
		h, err := c.hint(bi)
		if err != nil {
			return err
		}
		var pd uintptr
		if st := c.api.pdCreate(&pd, unsafe.Pointer(&cd), c.api.attr, c.api.engine, h); st != dnnlSuccess {
			return fmt.Errorf("dnnl_primitive_desc_create(conv bwd weights): status %d", st)
		}
		specs := []argSpec{{dnnlArgSrc, dnnlQuerySrcMD, &c.userX, true}, {dnnlArgDiffDst, dnnlQueryDiffDstMD, &c.userY, true},
			{dnnlArgDiffWeights, dnnlQueryDiffWeights, &c.userW, false}}
		if bi == 1 {
			specs = append(specs, argSpec{dnnlArgDiffBias, 0, &c.userB, false})
		}
		s, err := c.step(pd, specs)
		if err != nil {
			return err
		}
		c.bwdW[bi] = s
	}
	bufs := map[int32][]float32{dnnlArgSrc: x, dnnlArgDiffDst: dy, dnnlArgDiffWeights: dw}
	outs := []int32{dnnlArgDiffWeights}
	if bi == 1 {
		bufs[dnnlArgDiffBias] = db
		outs = append(outs, dnnlArgDiffBias)
	}
	return c.run(c.bwdW[bi], bufs, outs, 0, nil)
}

// dnnlConvs caches dnnlConv values by shape and worker for one CPU.
type dnnlConvs struct {
	api     *dnnlAPI
	mode    convMode
	mu      sync.Mutex
	m       map[dnnlKey]*dnnlConv // nil value: oneDNN rejected the shape
	wcaches map[dnnlKey]*[2]*constCache[uintptr]
}

type dnnlKey struct {
	d        ConvDims
	worker   int
	yStrideK int
	omp      int
}

// get returns worker's primitives for d (y images yStrideK channels
// apart, omp OpenMP threads), or nil when oneDNN cannot run it.
func (p *dnnlConvs) get(d ConvDims, worker, yStrideK, omp int) *dnnlConv {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := dnnlKey{d, worker, yStrideK, omp}
	if c, ok := p.m[k]; ok {
		return c
	}
	c, err := newDNNLConv(p.api, d, yStrideK, omp, p.mode)
	if err != nil {
		c = nil
	} else {
		wk := dnnlKey{d: d, yStrideK: yStrideK, omp: omp}
		if p.wcaches[wk] == nil {
			if p.wcaches == nil {
				p.wcaches = map[dnnlKey]*[2]*constCache[uintptr]{}
			}
			p.wcaches[wk] = &[2]*constCache[uintptr]{{}, {}}
		}
		c.wcaches = p.wcaches[wk]
	}
	p.m[k] = c
	return c
}
