package cuda

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The driver library is opened once per process (dlopen is process-global
// anyway); the handle and symbol table are immutable after the sync.Once.
var (
	drvOnce sync.Once
	drvLib  *driver
	drvErr  error
)

// driver holds the addresses of the CUDA driver API entry points. Calls go
// through purego.SyscallN (integer and pointer arguments only), which is
// allocation-free and cheaper than reflection-based bindings: the launch
// path matters for small kernels.
type driver struct {
	path string

	cuInit, cuDriverGetVersion                              uintptr
	cuDeviceGetCount, cuDeviceGet, cuDeviceGetName          uintptr
	cuDeviceGetAttribute, cuDeviceTotalMem                  uintptr
	cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease     uintptr
	cuCtxSetCurrent, cuCtxGetCurrent, cuCtxCreate           uintptr
	cuMemAlloc, cuMemFree, cuMemGetInfo                     uintptr
	cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync uintptr
	cuMemsetD32Async                                        uintptr
	cuStreamCreate, cuStreamDestroy, cuStreamSynchronize    uintptr
	cuModuleLoadDataEx, cuModuleGetFunction, cuModuleUnload uintptr
	cuLaunchKernel                                          uintptr
	cuGetErrorName, cuGetErrorString                        uintptr
	cuStreamBeginCapture, cuStreamEndCapture                uintptr
	cuGraphInstantiateWithFlags, cuGraphLaunch              uintptr
	cuGraphExecDestroy, cuGraphDestroy                      uintptr
}

// driverCandidates are the names dlopen tries for the driver library;
// $DDPM_LIBCUDA, when set, is tried first (a path or a library name).
func driverCandidates() []string {
	var out []string
	if p := os.Getenv("DDPM_LIBCUDA"); p != "" {
		out = append(out, p)
	}
	return append(out, "libcuda.so.1", "libcuda.so", "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
		"/usr/lib64/libcuda.so.1", "/usr/local/cuda/compat/libcuda.so.1")
}

// loadDriver opens libcuda.so.1, binds the entry points and calls cuInit(0).
func loadDriver() (*driver, error) {
	drvOnce.Do(func() { drvLib, drvErr = openDriver() })
	return drvLib, drvErr
}

func openDriver() (*driver, error) {
	var lib uintptr
	var path string
	var errs []string
	for _, p := range driverCandidates() {
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			lib, path = h, p
			break
		}
		errs = append(errs, fmt.Sprintf("%s (%s)", p, dlReason(p, err)))
	}
	if lib == 0 {
		return nil, &libError{sentinel: ErrNoDriver, hint: "set DDPM_LIBCUDA to its path", tried: errs}
	}
	d := &driver{path: path}
	required := []struct {
		p    *uintptr
		name string
	}{
		{&d.cuInit, "cuInit"},
		{&d.cuDriverGetVersion, "cuDriverGetVersion"},
		{&d.cuDeviceGetCount, "cuDeviceGetCount"},
		{&d.cuDeviceGet, "cuDeviceGet"},
		{&d.cuDeviceGetName, "cuDeviceGetName"},
		{&d.cuDeviceGetAttribute, "cuDeviceGetAttribute"},
		{&d.cuDeviceTotalMem, "cuDeviceTotalMem_v2"},
		{&d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
		{&d.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"},
		{&d.cuCtxSetCurrent, "cuCtxSetCurrent"},
		{&d.cuCtxGetCurrent, "cuCtxGetCurrent"},
		{&d.cuMemAlloc, "cuMemAlloc_v2"},
		{&d.cuMemFree, "cuMemFree_v2"},
		{&d.cuMemGetInfo, "cuMemGetInfo_v2"},
		{&d.cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"},
		{&d.cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"},
		{&d.cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2"},
		{&d.cuMemsetD32Async, "cuMemsetD32Async"},
		{&d.cuStreamCreate, "cuStreamCreate"},
		{&d.cuStreamDestroy, "cuStreamDestroy_v2"},
		{&d.cuStreamSynchronize, "cuStreamSynchronize"},
		{&d.cuModuleLoadDataEx, "cuModuleLoadDataEx"},
		{&d.cuModuleGetFunction, "cuModuleGetFunction"},
		{&d.cuModuleUnload, "cuModuleUnload"},
		{&d.cuLaunchKernel, "cuLaunchKernel"},
		{&d.cuGetErrorName, "cuGetErrorName"},
		{&d.cuGetErrorString, "cuGetErrorString"},
	}
	for _, s := range required {
		a, err := purego.Dlsym(lib, s.name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s lacks %s: %v", ErrNoDriver, path, s.name, err)
		}
		*s.p = a
	}
	// Optional: graph capture (CUDA >= 10) and the legacy context creator.
	optional := []struct {
		p    *uintptr
		name string
	}{
		{&d.cuCtxCreate, "cuCtxCreate_v2"},
		{&d.cuStreamBeginCapture, "cuStreamBeginCapture_v2"},
		{&d.cuStreamEndCapture, "cuStreamEndCapture"},
		{&d.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags"},
		{&d.cuGraphLaunch, "cuGraphLaunch"},
		{&d.cuGraphExecDestroy, "cuGraphExecDestroy"},
		{&d.cuGraphDestroy, "cuGraphDestroy"},
	}
	for _, s := range optional {
		if a, err := purego.Dlsym(lib, s.name); err == nil {
			*s.p = a
		}
	}
	if r := d.call(d.cuInit, 0); r != 0 {
		// CUDA_ERROR_NO_DEVICE (100) from cuInit means a driver without GPUs.
		if r == 100 {
			return nil, fmt.Errorf("%w: cuInit: %v (driver %s)", ErrNoDevice, d.describe(r), path)
		}
		return nil, fmt.Errorf("%w: cuInit: %v (driver %s)", ErrNoDriver, d.describe(r), path)
	}
	return d, nil
}

// call invokes a driver function and returns its CUresult.
func (d *driver) call(fn uintptr, args ...uintptr) Result {
	r, _, _ := purego.SyscallN(fn, args...)
	return Result(int32(r))
}

// describe formats a result without re-entering loadDriver (used during load).
func (d *driver) describe(r Result) string {
	if n := d.errorName(r); n != "" {
		return fmt.Sprintf("%s (%d): %s", n, int32(r), d.errorString(r))
	}
	return fmt.Sprintf("CUresult %d", int32(r))
}

func (d *driver) errorName(r Result) string {
	var pn runtime.Pinner
	defer pn.Unpin()
	s := hp[*byte](&pn)
	if d.call(d.cuGetErrorName, uintptr(r), uintptr(unsafe.Pointer(s))) != 0 {
		return ""
	}
	return cString(*s)
}

func (d *driver) errorString(r Result) string {
	var pn runtime.Pinner
	defer pn.Unpin()
	s := hp[*byte](&pn)
	if d.call(d.cuGetErrorString, uintptr(r), uintptr(unsafe.Pointer(s))) != 0 {
		return ""
	}
	return cString(*s)
}

// cString copies a NUL-terminated C string (at most 4 KiB).
func cString(p *byte) string {
	if p == nil {
		return ""
	}
	var b []byte
	for i := 0; i < 4096; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// hp returns a new zero T on the heap, pinned by pn, for a C out-parameter.
// Stack variables must never be passed to C as a uintptr: a goroutine's
// stack moves when it grows, which can happen inside the call sequence,
// leaving C to write to the old stack. (pn.Pin takes an interface, so the
// object escapes to the heap, and pinning keeps it in place.)
func hp[T any](pn *runtime.Pinner) *T {
	p := new(T)
	pn.Pin(p)
	return p
}

// pinSlice pins the backing array of a non-empty slice for a C call.
func pinSlice[T any](pn *runtime.Pinner, s []T) uintptr {
	pn.Pin(&s[0])
	return uintptr(unsafe.Pointer(&s[0]))
}

// check wraps a non-zero result with the operation's name.
func check(op string, r Result) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("cuda: %s: %w", op, r)
}

// DeviceInfo describes one GPU as the driver reports it.
type DeviceInfo struct {
	Index          int    // ordinal passed to Open
	Name           string // e.g. "NVIDIA H100 80GB HBM3"
	Major, Minor   int    // compute capability
	Multiprocessor int    // number of SMs
	TotalMem       int64  // bytes
	DriverVersion  int    // e.g. 13000 for CUDA 13.0
	DriverPath     string // the libcuda that was opened
}

// String is a one-line summary for logs.
func (i DeviceInfo) String() string {
	return fmt.Sprintf("cuda:%d %s (sm_%d%d, %d SMs, %.1f GiB, driver API %d.%d)", i.Index, i.Name,
		i.Major, i.Minor, i.Multiprocessor, float64(i.TotalMem)/(1<<30), i.DriverVersion/1000, i.DriverVersion%1000/10)
}

// Devices lists the GPUs the driver sees. It returns ErrNoDriver (wrapped,
// naming the paths tried) without a driver and an empty list without GPUs.
func Devices() ([]DeviceInfo, error) {
	d, err := loadDriver()
	if err != nil {
		if isNoDevice(err) {
			return nil, nil
		}
		return nil, err
	}
	var pn runtime.Pinner
	defer pn.Unpin()
	n := hp[int32](&pn)
	if err := check("cuDeviceGetCount", d.call(d.cuDeviceGetCount, uintptr(unsafe.Pointer(n)))); err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, 0, *n)
	for i := 0; i < int(*n); i++ {
		info, err := d.info(i)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

func (d *driver) info(index int) (DeviceInfo, error) {
	var pn runtime.Pinner
	defer pn.Unpin()
	pdev := hp[int32](&pn)
	if err := check("cuDeviceGet", d.call(d.cuDeviceGet, uintptr(unsafe.Pointer(pdev)), uintptr(index))); err != nil {
		return DeviceInfo{}, err
	}
	dev := *pdev
	info := DeviceInfo{Index: index, DriverPath: d.path}
	name := hp[[256]byte](&pn)
	if err := check("cuDeviceGetName", d.call(d.cuDeviceGetName, uintptr(unsafe.Pointer(name)), 255, uintptr(dev))); err != nil {
		return info, err
	}
	info.Name = cString(&name[0])
	v := hp[int32](&pn)
	attr := func(a int) int {
		*v = 0
		d.call(d.cuDeviceGetAttribute, uintptr(unsafe.Pointer(v)), uintptr(a), uintptr(dev))
		return int(*v)
	}
	info.Major = attr(75)          // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	info.Minor = attr(76)          // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
	info.Multiprocessor = attr(16) // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	total := hp[uint64](&pn)
	d.call(d.cuDeviceTotalMem, uintptr(unsafe.Pointer(total)), uintptr(dev))
	info.TotalMem = int64(*total)
	ver := hp[int32](&pn)
	d.call(d.cuDriverGetVersion, uintptr(unsafe.Pointer(ver)))
	info.DriverVersion = int(*ver)
	return info, nil
}

func isNoDevice(err error) bool {
	return errors.Is(err, ErrNoDevice)
}
