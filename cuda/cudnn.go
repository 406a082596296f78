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

func openCUDNN() (*cudnnAPI, error) {
	var lib uintptr
	var path string
	var tried []string
	for _, p := range cudnnCandidates() {
		if strings.Contains(p, "/") {
			if _, err := os.Stat(p); err != nil {
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
		return nil, fmt.Errorf("cuda: no cuDNN (libcudnn.so.9/.8): tried %s", strings.Join(tried, ", "))
	}
	a := &cudnnAPI{path: path}
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
	return fmt.Errorf("cuda: cuDNN %s: status %d %s", op, st, a.errorString(st))
}

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

// cudnnPlan is one convolution shape's descriptors and chosen algorithms.
type cudnnPlan struct {
	x, y, w, conv            uintptr
	fwd, bwdData, bwdFilter  int32
	wsFwd, wsData, wsFilter  uint64
	haveFwd, haveData, haveF bool
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

func newCUDNN(stream uintptr, tf32 bool) (*cudnnState, error) {
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
func (s *cudnnState) plan(dd kernels.ConvDims, tf32 bool) (*cudnnPlan, error) {
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
	math := uintptr(3) // CUDNN_FMA_MATH: strict float32
	if tf32 {
		math = 1 // CUDNN_TENSOR_OP_MATH: TF32 tensor cores for float data
	}
	if st := a.call(a.setConvMath, p.conv, math); st != 0 {
		return nil, a.errorf("cudnnSetConvolutionMathType", st)
	}
	s.plans[dd] = p
	return p, nil
}

// pick runs a cudnnFind*Algorithm and returns the fastest deterministic
// algorithm that succeeded within maxMem bytes of workspace (the fastest of
// any if none is deterministic).
func (s *cudnnState) pick(op string, maxMem uint64, find uintptr, args ...uintptr) (int32, uint64, error) {
	var pn runtime.Pinner
	defer pn.Unpin()
	const req = 8
	perf := hp[[req]cudnnPerf](&pn)
	n := hp[int32](&pn)
	all := append(append([]uintptr{s.h}, args...), req, uintptr(unsafe.Pointer(n)), uintptr(unsafe.Pointer(perf)))
	if st := s.api.call(find, all...); st != 0 {
		return 0, 0, s.api.errorf(op, st)
	}
	best := -1
	for i := 0; i < int(*n) && i < req; i++ {
		if perf[i].status != 0 || perf[i].memory > maxMem {
			continue
		}
		if best < 0 {
			best = i
		}
		if perf[i].determinism == 1 {
			best = i
			break
		}
	}
	if best < 0 {
		return 0, 0, fmt.Errorf("cuda: cuDNN %s: no algorithm works for this shape", op)
	}
	return perf[best].algo, perf[best].memory, nil
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
	p, err := s.plan(dd, d.tf32)
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
	var pn runtime.Pinner
	defer pn.Unpin()
	one, zero := hp[float32](&pn), hp[float32](&pn)
	*one = 1
	switch op {
	case 0: // y = conv(x, w): a = y, b = x, c = w
		if !p.haveFwd {
			algo, ws, err := s.pick("cudnnFindConvolutionForwardAlgorithm", d.maxWorkspace(), api.findFwd, p.x, p.w, p.conv, p.y)
			if err != nil {
				return err
			}
			p.fwd, p.wsFwd, p.haveFwd = algo, ws, true
		}
		ws, ok := d.scratch(wsCol, int64(max(p.wsFwd, 4)))
		if !ok {
			return fmt.Errorf("cuda: cuDNN workspace")
		}
		if st := api.call(api.convFwd, s.h, uintptr(unsafe.Pointer(one)), p.x, uintptr(b), p.w, uintptr(c), p.conv,
			uintptr(p.fwd), uintptr(ws), uintptr(p.wsFwd), uintptr(unsafe.Pointer(zero)), p.y, uintptr(a)); st != 0 {
			return api.errorf("cudnnConvolutionForward", st)
		}
	case 1: // dx = conv^T(dy, w): a = dx, b = dy, c = w
		if !p.haveData {
			algo, ws, err := s.pick("cudnnFindConvolutionBackwardDataAlgorithm", d.maxWorkspace(), api.findBwdData, p.w, p.y, p.conv, p.x)
			if err != nil {
				return err
			}
			p.bwdData, p.wsData, p.haveData = algo, ws, true
		}
		ws, ok := d.scratch(wsCol, int64(max(p.wsData, 4)))
		if !ok {
			return fmt.Errorf("cuda: cuDNN workspace")
		}
		if st := api.call(api.convBwdData, s.h, uintptr(unsafe.Pointer(one)), p.w, uintptr(c), p.y, uintptr(b), p.conv,
			uintptr(p.bwdData), uintptr(ws), uintptr(p.wsData), uintptr(unsafe.Pointer(zero)), p.x, uintptr(a)); st != 0 {
			return api.errorf("cudnnConvolutionBackwardData", st)
		}
	case 2: // dw = x (*) dy: a = dw, b = dy, c = x
		if !p.haveF {
			algo, ws, err := s.pick("cudnnFindConvolutionBackwardFilterAlgorithm", d.maxWorkspace(), api.findBwdFilter, p.x, p.y, p.conv, p.w)
			if err != nil {
				return err
			}
			p.bwdFilter, p.wsFilter, p.haveF = algo, ws, true
		}
		ws, ok := d.scratch(wsCol, int64(max(p.wsFilter, 4)))
		if !ok {
			return fmt.Errorf("cuda: cuDNN workspace")
		}
		if st := api.call(api.convBwdFilter, s.h, uintptr(unsafe.Pointer(one)), p.x, uintptr(c), p.y, uintptr(b), p.conv,
			uintptr(p.bwdFilter), uintptr(ws), uintptr(p.wsFilter), uintptr(unsafe.Pointer(zero)), p.w, uintptr(a)); st != 0 {
			return api.errorf("cudnnConvolutionBackwardFilter", st)
		}
	}
	return nil
}
