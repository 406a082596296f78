package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ebitengine/purego"
)

// cuDNN (libcudnn.so.9 or .8, e.g. from the nvidia-cudnn pip wheel that
// PyTorch brings) runs the convolutions when present: its implicit-GEMM
// and Winograd kernels avoid im2col's column matrix. Only its legacy
// convolution API is used (descriptors, Find*Algorithm, Convolution*),
// with symmetric padding; other shapes, or any cuDNN failure, fall back to
// im2col + cuBLAS for that shape.

var (
	dnnOnce sync.Once
	dnnLib  *cudnnAPI
	dnnErr  error
)

type cudnnAPI struct {
	path                                            string
	hint                                            string // cuDNN 9 sub-library advice for errors
	create, destroy, setStream, getVersion          uintptr
	createTensor, setTensor4d, destroyTensor        uintptr
	createFilter, setFilter4d, destroyFilter        uintptr
	createConv, setConv2d, setConvMath, destroyConv uintptr
	findFwd, findBwdData, findBwdFilter             uintptr
	convFwd, convBwdData, convBwdFilter             uintptr
	errorString                                     func(status int32) string
}

func cudnnCandidates() []string {
	names := []string{"libcudnn.so.9", "libcudnn.so.8"}
	var out []string
	if p := os.Getenv("DDPM_LIBCUDNN"); p != "" {
		out = append(out, p)
	}
	out = append(out, names...)
	var dirs []string
	if h := os.Getenv("CUDA_HOME"); h != "" {
		dirs = append(dirs, filepath.Join(h, "lib64"))
	}
	dirs = append(dirs, "/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu")
	for _, pat := range []string{
		"/usr/local/lib/python3*/dist-packages/nvidia/cudnn/lib",
		"/usr/local/lib/python3*/site-packages/nvidia/cudnn/lib",
		"/usr/lib/python3*/dist-packages/nvidia/cudnn/lib",
		"/opt/conda/lib/python3*/site-packages/nvidia/cudnn/lib",
		"/opt/conda/lib",
	} {
		m, _ := filepath.Glob(pat)
		sort.Sort(sort.Reverse(sort.StringSlice(m)))
		dirs = append(dirs, m...)
	}
	for _, d := range dirs {
		for _, n := range names {
			out = append(out, filepath.Join(d, n))
		}
	}
	return out
}

func loadCUDNN() (*cudnnAPI, error) {
	dnnOnce.Do(func() { dnnLib, dnnErr = openCUDNN() })
	return dnnLib, dnnErr
}

// cudnn9Subs are the libraries cuDNN 9's libcudnn.so.9 dlopens by name
// when it first needs them, in dependency order.
var cudnn9Subs = []string{"libcudnn_graph.so.9", "libcudnn_engines_precompiled.so.9",
	"libcudnn_engines_runtime_compiled.so.9", "libcudnn_heuristic.so.9", "libcudnn_ops.so.9",
	"libcudnn_cnn.so.9", "libcudnn_adv.so.9"}

// preloadCUDNNSubs loads cuDNN 9's sub-libraries from dir (where
// libcudnn.so.9 was found) by path: libcudnn.so.9 opens them by bare
// name, which finds an already loaded library by its soname, so this
// makes a pip wheel's cuDNN work without LD_LIBRARY_PATH. It returns the
// hint for errors: empty when dir is on the loader path or holds no
// sub-libraries.
func preloadCUDNNSubs(dir string) string {
	if _, err := os.Stat(filepath.Join(dir, "libcudnn_cnn.so.9")); err != nil {
		return ""
	}
	for _, n := range cudnn9Subs {
		if p := filepath.Join(dir, n); fileExists(p) {
			purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL) // best effort; cuDNN reports what is missing
		}
	}
	for _, d := range filepath.SplitList(os.Getenv("LD_LIBRARY_PATH")) {
		if filepath.Clean(d) == filepath.Clean(dir) {
			return ""
		}
	}
	return fmt.Sprintf("cuDNN 9 opens its sub-libraries (libcudnn_cnn.so.9, libcudnn_ops.so.9, ...) by name: if it "+
		"cannot find them, add %s to LD_LIBRARY_PATH", dir)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func openCUDNN() (*cudnnAPI, error) {
	var lib uintptr
	var path, hint string
	var tried []string
	for _, p := range cudnnCandidates() {
		if strings.Contains(p, "/") {
			if !fileExists(p) {
				continue
			}
			if strings.HasSuffix(p, ".so.9") {
				hint = preloadCUDNNSubs(filepath.Dir(p))
			}
		}
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			lib, path = h, p
			break
		}
		tried = append(tried, fmt.Sprintf("%s (%s)", p, dlReason(p, err)))
	}
	if lib == 0 {
		return nil, &libError{sentinel: errNoCUDNN, hint: "set DDPM_LIBCUDNN or LD_LIBRARY_PATH; convolutions use im2col", tried: tried}
	}
	a := &cudnnAPI{path: path, hint: hint}
	for _, s := range []struct {
		p    *uintptr
		name string
	}{
		{&a.create, "cudnnCreate"}, {&a.destroy, "cudnnDestroy"}, {&a.setStream, "cudnnSetStream"},
		{&a.getVersion, "cudnnGetVersion"},
		{&a.createTensor, "cudnnCreateTensorDescriptor"}, {&a.setTensor4d, "cudnnSetTensor4dDescriptor"},
		{&a.destroyTensor, "cudnnDestroyTensorDescriptor"},
		{&a.createFilter, "cudnnCreateFilterDescriptor"}, {&a.setFilter4d, "cudnnSetFilter4dDescriptor"},
		{&a.destroyFilter, "cudnnDestroyFilterDescriptor"},
		{&a.createConv, "cudnnCreateConvolutionDescriptor"}, {&a.setConv2d, "cudnnSetConvolution2dDescriptor"},
		{&a.setConvMath, "cudnnSetConvolutionMathType"}, {&a.destroyConv, "cudnnDestroyConvolutionDescriptor"},
		{&a.findFwd, "cudnnFindConvolutionForwardAlgorithm"},
		{&a.findBwdData, "cudnnFindConvolutionBackwardDataAlgorithm"},
		{&a.findBwdFilter, "cudnnFindConvolutionBackwardFilterAlgorithm"},
		{&a.convFwd, "cudnnConvolutionForward"}, {&a.convBwdData, "cudnnConvolutionBackwardData"},
		{&a.convBwdFilter, "cudnnConvolutionBackwardFilter"},
	} {
		sym, err := purego.Dlsym(lib, s.name)
		if err != nil {
			return nil, fmt.Errorf("cuda: %s lacks %s: %v", path, s.name, err)
		}
		*s.p = sym
	}
	sym, err := purego.Dlsym(lib, "cudnnGetErrorString")
	if err != nil {
		return nil, fmt.Errorf("cuda: %s lacks cudnnGetErrorString: %v", path, err)
	}
	purego.RegisterFunc(&a.errorString, sym) // returns a C string constant
	return a, nil
}

// version returns cudnnGetVersion (e.g. 90100 for 9.1.0).
func (a *cudnnAPI) version() int {
	r, _, _ := purego.SyscallN(a.getVersion)
	return int(r)
}

func (a *cudnnAPI) call(fn uintptr, args ...uintptr) int32 {
	r, _, _ := purego.SyscallN(fn, args...)
	return int32(r)
}

func (a *cudnnAPI) errorf(op string, st int32) error {
	if a.hint != "" {
		return fmt.Errorf("cuda: cuDNN %s: status %d %s (%s)", op, st, a.errorString(st), a.hint)
	}
	return fmt.Errorf("cuda: cuDNN %s: status %d %s", op, st, a.errorString(st))
}

// errNoCUDNN: no libcudnn.so.9/.8 (not an error of Open: convolutions
// then run as im2col + cuBLAS).
var errNoCUDNN = errors.New("cuda: no cuDNN (libcudnn.so.9/.8)")

// cudnnPerf is cudnnConvolution*AlgoPerf_t (same layout for the three).
type cudnnPerf struct {
	algo, status int32
	time         float32
	_            int32
	memory       uint64
	determinism  int32
	mathType     int32
	_            [3]int32
}

// cudnnChoice is the algorithm chosen for one direction of one shape.
type cudnnChoice struct {
	algo, math int32  // cudnnConvolution*Algo_t and the math type Find reported for it
	ws         uint64 // workspace bytes
	why        string // "fastest" or "first deterministic"
	have       bool
}

// cudnnPlan is one convolution shape's descriptors and chosen algorithms
// (forward, backward data, backward filter).
type cudnnPlan struct {
	x, y, w, conv uintptr
	dir           [3]cudnnChoice
	math          int32 // the math type last set on conv
}

// cudnnState is a Device's cuDNN handle and per-shape plans.
type cudnnState struct {
	api   *cudnnAPI
	h     uintptr
	plans map[kernels.ConvDims]*cudnnPlan
	bad   map[kernels.ConvDims]bool // shapes that fell back to im2col
	one   float32
	zero  float32
}

func newCUDNN(stream uintptr) (*cudnnState, error) {
	api, err := loadCUDNN()
	if err != nil {
		return nil, err
	}
	s := &cudnnState{api: api, plans: map[kernels.ConvDims]*cudnnPlan{}, bad: map[kernels.ConvDims]bool{}, one: 1}
	var pn runtime.Pinner
	defer pn.Unpin()
	h := hp[uintptr](&pn)
	if st := api.call(api.create, uintptr(unsafe.Pointer(h))); st != 0 {
		return nil, api.errorf("cudnnCreate", st)
	}
	s.h = *h
	if st := api.call(api.setStream, s.h, stream); st != 0 {
		return nil, api.errorf("cudnnSetStream", st)
	}
	return s, nil
}

func (s *cudnnState) close() {
	if s == nil {
		return
	}
	for _, p := range s.plans {
		s.api.call(s.api.destroyTensor, p.x)
		s.api.call(s.api.destroyTensor, p.y)
		s.api.call(s.api.destroyFilter, p.w)
		s.api.call(s.api.destroyConv, p.conv)
	}
	s.api.call(s.api.destroy, s.h)
}

// cudnnOK reports whether cuDNN can run this shape (symmetric padding).
func cudnnOK(dd kernels.ConvDims) bool {
	return dd.PadTop == dd.PadBottom && dd.PadLeft == dd.PadRight
}

// plan returns (creating) the descriptors for dd.
func (s *cudnnState) plan(dd kernels.ConvDims, prec Precision) (*cudnnPlan, error) {
	if p, ok := s.plans[dd]; ok {
		return p, nil
	}
	a := s.api
	var pn runtime.Pinner
	defer pn.Unpin()
	out := hp[[4]uintptr](&pn)
	p := &cudnnPlan{}
	for i, c := range []uintptr{a.createTensor, a.createTensor, a.createFilter, a.createConv} {
		if st := a.call(c, uintptr(unsafe.Pointer(&out[i]))); st != 0 {
			return nil, a.errorf("create descriptor", st)
		}
	}
	p.x, p.y, p.w, p.conv = out[0], out[1], out[2], out[3]
	const nchw, float = 0, 0
	if st := a.call(a.setTensor4d, p.x, nchw, float, uintptr(dd.N), uintptr(dd.C), uintptr(dd.H), uintptr(dd.W)); st != 0 {
		return nil, a.errorf("cudnnSetTensor4dDescriptor(x)", st)
	}
	if st := a.call(a.setTensor4d, p.y, nchw, float, uintptr(dd.N), uintptr(dd.K), uintptr(dd.OutH()), uintptr(dd.OutW())); st != 0 {
		return nil, a.errorf("cudnnSetTensor4dDescriptor(y)", st)
	}
	if st := a.call(a.setFilter4d, p.w, float, nchw, uintptr(dd.K), uintptr(dd.C), uintptr(dd.R), uintptr(dd.S)); st != 0 {
		return nil, a.errorf("cudnnSetFilter4dDescriptor", st)
	}
	const crossCorrelation = 1
	if st := a.call(a.setConv2d, p.conv, uintptr(dd.PadTop), uintptr(dd.PadLeft), uintptr(dd.StrideH), uintptr(dd.StrideW),
		1, 1, crossCorrelation, float); st != 0 {
		return nil, a.errorf("cudnnSetConvolution2dDescriptor", st)
	}
	// The math type allowed while Find searches; each algorithm then runs
	// with the math type Find reports for it (as PyTorch does).
	p.math = cudnnMathFor(prec)
	if st := a.call(a.setConvMath, p.conv, uintptr(p.math)); st != 0 {
		return nil, a.errorf("cudnnSetConvolutionMathType", st)
	}
	s.plans[dd] = p
	return p, nil
}

// cuDNN math types (cudnnMathType_t).
const (
	cudnnDefaultMath       = 0
	cudnnTensorOpMath      = 1 // TF32 tensor cores for float data
	cudnnTensorOpMathAllow = 2 // CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: float down-converted to half
	cudnnFMAMath           = 3 // strict float32
)

func cudnnMathFor(p Precision) int32 {
	switch p {
	case FP32:
		return cudnnFMAMath
	case FP16:
		return cudnnTensorOpMathAllow
	}
	return cudnnTensorOpMath
}

// cudnnInexact lists, per direction, the algorithms whose float32 error
// grows past the strict-fp32 tolerance (1e-5 relative): the FFT and
// Winograd transforms. Strict FP32 never picks them.
var cudnnInexact = [3]map[int32]string{
	{4: "FFT", 5: "FFT_TILING", 6: "WINOGRAD", 7: "WINOGRAD_NONFUSED"}, // forward
	{2: "FFT", 3: "FFT_TILING", 4: "WINOGRAD", 5: "WINOGRAD_NONFUSED"}, // backward data
	{2: "FFT", 4: "WINOGRAD", 5: "WINOGRAD_NONFUSED", 6: "FFT_TILING"}, // backward filter
}

var cudnnDirNames = [3]string{"fwd", "bwd-data", "bwd-filter"}

// pickPerf chooses among Find's results (sorted fastest first): the
// fastest that succeeded within maxMem bytes and is allowed (strict FP32
// excludes cudnnInexact), replaced by the first deterministic one when
// the fastest is not; why says which ("fastest", "first deterministic",
// or "fastest, none deterministic").
func pickPerf(perf []cudnnPerf, dir int, maxMem uint64, prec Precision) (best int, why string) {
	best = -1
	for i, p := range perf {
		if p.status != 0 || p.memory > maxMem {
			continue
		}
		if _, bad := cudnnInexact[dir][p.algo]; bad && prec == FP32 {
			continue
		}
		if best < 0 {
			best, why = i, "fastest"
			if p.determinism == 1 {
				return best, why
			}
			continue
		}
		if p.determinism == 1 {
			return i, "first deterministic"
		}
	}
	if best >= 0 {
		why = "fastest, none deterministic"
	}
	return best, why
}

// pick runs a cudnnFind*Algorithm for direction dir and chooses with
// pickPerf.
func (s *cudnnState) pick(dir int, op string, maxMem uint64, prec Precision, find uintptr, args ...uintptr) (cudnnChoice, error) {
	var pn runtime.Pinner
	defer pn.Unpin()
	const req = 8
	perf := hp[[req]cudnnPerf](&pn)
	n := hp[int32](&pn)
	all := append(append([]uintptr{s.h}, args...), req, uintptr(unsafe.Pointer(n)), uintptr(unsafe.Pointer(perf)))
	if st := s.api.call(find, all...); st != 0 {
		return cudnnChoice{}, s.api.errorf(op, st)
	}
	best, why := pickPerf(perf[:min(max(int(*n), 0), req)], dir, maxMem, prec)
	if best < 0 {
		return cudnnChoice{}, fmt.Errorf("cuda: cuDNN %s: no algorithm works for this shape in %s", op, prec)
	}
	p := perf[best]
	return cudnnChoice{algo: p.algo, math: p.mathType, ws: p.memory, why: why, have: true}, nil
}

// ConvChoices lists the cuDNN algorithm chosen for each convolution shape
// and direction so far, with the math type it runs with and why it was
// chosen ("fastest" or "first deterministic"), e.g. "fwd N128 C128
// 32x32 K128 3x3/1: algo 1 math 1: fastest".
func (d *Device) ConvChoices() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dnn == nil {
		return nil
	}
	var out []string
	for dd, p := range d.dnn.plans {
		for dir, c := range p.dir {
			if c.have {
				out = append(out, fmt.Sprintf("%s N%d C%d %dx%d K%d %dx%d/%d: algo %d math %d: %s", cudnnDirNames[dir],
					dd.N, dd.C, dd.H, dd.W, dd.K, dd.R, dd.S, dd.StrideH, c.algo, c.math, c.why))
			}
		}
	}
	sort.Strings(out)
	return out
}

// maxWorkspace bounds a cuDNN algorithm's workspace: an eighth of the GPU.
func (d *Device) maxWorkspace() uint64 { return uint64(max(d.info.TotalMem/8, 64<<20)) }

// cudnnConv runs one direction (0 forward, 1 backward data, 2 backward
// filter) through cuDNN; false means "use im2col" (the shape is marked and
// the reason is not an error of the op).
func (d *Device) cudnnConv(op int, dd kernels.ConvDims, a, b, c Ptr) bool {
	s := d.dnn
	if s == nil || !cudnnOK(dd) || s.bad[dd] {
		return false
	}
	p, err := s.plan(dd, d.prec)
	if err == nil {
		err = d.cudnnRun(op, p, dd, a, b, c)
	}
	if err != nil {
		s.bad[dd] = true
		d.dnnErrs = append(d.dnnErrs, err.Error())
		return false
	}
	return true
}

func (d *Device) cudnnRun(op int, p *cudnnPlan, dd kernels.ConvDims, a, b, c Ptr) error {
	s := d.dnn
	api := s.api
	ch := &p.dir[op]
	if !ch.have {
		// Find searches with the math types the precision allows (an
		// earlier direction may have left another one set).
		if m := cudnnMathFor(d.prec); p.math != m {
			if st := api.call(api.setConvMath, p.conv, uintptr(m)); st != 0 {
				return api.errorf("cudnnSetConvolutionMathType", st)
			}
			p.math = m
		}
		var err error
		switch op {
		case 0:
			*ch, err = s.pick(0, "cudnnFindConvolutionForwardAlgorithm", d.maxWorkspace(), d.prec, api.findFwd, p.x, p.w, p.conv, p.y)
		case 1:
			*ch, err = s.pick(1, "cudnnFindConvolutionBackwardDataAlgorithm", d.maxWorkspace(), d.prec, api.findBwdData, p.w, p.y, p.conv, p.x)
		case 2:
			*ch, err = s.pick(2, "cudnnFindConvolutionBackwardFilterAlgorithm", d.maxWorkspace(), d.prec, api.findBwdFilter, p.x, p.y, p.conv, p.w)
		}
		if err != nil {
			return err
		}
	}
	// Run the algorithm with the math type Find timed it with.
	if p.math != ch.math {
		if st := api.call(api.setConvMath, p.conv, uintptr(ch.math)); st != 0 {
			return api.errorf("cudnnSetConvolutionMathType", st)
		}
		p.math = ch.math
	}
	ws, ok := d.scratch(wsCol, int64(max(ch.ws, 4)))
	if !ok {
		return fmt.Errorf("cuda: cuDNN workspace")
	}
	var pn runtime.Pinner
	defer pn.Unpin()
	one, zero := hp[float32](&pn), hp[float32](&pn)
	*one = 1
	var st int32
	var name string
	switch op {
	case 0: // y = conv(x, w): a = y, b = x, c = w
		name = "cudnnConvolutionForward"
		st = api.call(api.convFwd, s.h, uintptr(unsafe.Pointer(one)), p.x, uintptr(b), p.w, uintptr(c), p.conv,
			uintptr(ch.algo), uintptr(ws), uintptr(ch.ws), uintptr(unsafe.Pointer(zero)), p.y, uintptr(a))
	case 1: // dx = conv^T(dy, w): a = dx, b = dy, c = w
		name = "cudnnConvolutionBackwardData"
		st = api.call(api.convBwdData, s.h, uintptr(unsafe.Pointer(one)), p.w, uintptr(c), p.y, uintptr(b), p.conv,
			uintptr(ch.algo), uintptr(ws), uintptr(ch.ws), uintptr(unsafe.Pointer(zero)), p.x, uintptr(a))
	case 2: // dw = x (*) dy: a = dw, b = dy, c = x
		name = "cudnnConvolutionBackwardFilter"
		st = api.call(api.convBwdFilter, s.h, uintptr(unsafe.Pointer(one)), p.x, uintptr(c), p.y, uintptr(b), p.conv,
			uintptr(ch.algo), uintptr(ws), uintptr(ch.ws), uintptr(unsafe.Pointer(zero)), p.w, uintptr(a))
	}
	if st != 0 {
		return api.errorf(name, st)
	}
	return nil
}
