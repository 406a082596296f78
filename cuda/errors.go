package cuda

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors for a missing GPU stack; test with errors.Is. The
// wrapping error names every path that was tried, so a user can see why
// the CPU was chosen instead.
var (
	// ErrNoDriver: libcuda.so.1 (the NVIDIA driver's user-space library)
	// could not be opened or lacks a required symbol.
	ErrNoDriver = errors.New("cuda: no NVIDIA driver found (libcuda.so.1)")
	// ErrNoDevice: the driver loaded but reports no GPU with that index.
	ErrNoDevice = errors.New("cuda: no CUDA device")
	// ErrNoCUBLAS: no libcublas.so.{13,12,11} was found.
	ErrNoCUBLAS = errors.New("cuda: no cuBLAS library")
)

// libError is a missing library: a short first sentence (the sentinel
// and what to set), then every path tried, one per line. errors.Is
// matches the sentinel.
type libError struct {
	sentinel error
	hint     string   // e.g. "set DDPM_LIBCUDA to its path"
	tried    []string // "path (reason)"
}

func (e *libError) Error() string {
	var b strings.Builder
	b.WriteString(e.sentinel.Error())
	if e.hint != "" {
		b.WriteString("; " + e.hint)
	}
	if len(e.tried) > 0 {
		b.WriteString("\n  tried:")
		for _, t := range e.tried {
			b.WriteString("\n    " + t)
		}
	}
	return b.String()
}

func (e *libError) Unwrap() error { return e.sentinel }

// dlReason is dlopen's message without the path it starts with.
func dlReason(path string, err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, path+": ")
	return strings.TrimSpace(s)
}

// Result is a CUDA driver API status code (CUresult); zero is success.
type Result int32

// Error returns the driver's name and description of the code when the
// driver is loaded, else the number.
func (r Result) Error() string {
	if d, err := loadDriver(); err == nil {
		if name, desc := d.errorName(r), d.errorString(r); name != "" {
			return fmt.Sprintf("%s (%d): %s", name, int32(r), desc)
		}
	}
	return fmt.Sprintf("CUresult %d", int32(r))
}

// BLASStatus is a cuBLAS status code (cublasStatus_t); zero is success.
type BLASStatus int32

var blasStatusNames = map[BLASStatus]string{
	1:  "CUBLAS_STATUS_NOT_INITIALIZED",
	3:  "CUBLAS_STATUS_ALLOC_FAILED",
	7:  "CUBLAS_STATUS_INVALID_VALUE",
	8:  "CUBLAS_STATUS_ARCH_MISMATCH",
	11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR",
	15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

// Error names the status as cublas_api.h does.
func (s BLASStatus) Error() string {
	if n, ok := blasStatusNames[s]; ok {
		return fmt.Sprintf("%s (%d)", n, int32(s))
	}
	return fmt.Sprintf("cublasStatus %d", int32(s))
}
