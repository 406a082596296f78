package cuda

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/kernels"
)

// DeviceSpec is a parsed --device flag value.
type DeviceSpec struct {
	Kind  string // "auto", "cpu" or "cuda"
	Index int    // GPU ordinal for "cuda" (and the one "auto" tries)
}

// String formats the spec as the flag accepts it.
func (s DeviceSpec) String() string {
	if s.Kind == "cuda" {
		return fmt.Sprintf("cuda:%d", s.Index)
	}
	return s.Kind
}

// ParseDevice parses a --device value: "auto" (or empty), "cpu", "cuda" or
// "cuda:N" with N >= 0.
func ParseDevice(s string) (DeviceSpec, error) {
	switch v := strings.ToLower(strings.TrimSpace(s)); {
	case v == "" || v == "auto":
		return DeviceSpec{Kind: "auto"}, nil
	case v == "cpu":
		return DeviceSpec{Kind: "cpu"}, nil
	case v == "cuda" || v == "gpu":
		return DeviceSpec{Kind: "cuda"}, nil
	case strings.HasPrefix(v, "cuda:"):
		n, err := strconv.Atoi(v[len("cuda:"):])
		if err != nil || n < 0 {
			return DeviceSpec{}, fmt.Errorf("--device %q: the GPU index after cuda: must be an integer >= 0", s)
		}
		return DeviceSpec{Kind: "cuda", Index: n}, nil
	}
	return DeviceSpec{}, fmt.Errorf("--device %q: allowed are auto, cpu, cuda, cuda:N", s)
}

// Backend is the device a command runs on: exactly one of CPU and GPU is
// set. Callers pick the buffer type from it (kernels.Ops[[]float32] for
// CPU, kernels.Ops[Ptr] for GPU).
type Backend struct {
	CPU    *kernels.CPU
	GPU    *Device
	Reason string // why this device, e.g. "auto: no NVIDIA driver (libcuda.so.1)"
}

// Name is the running device's Name().
func (b *Backend) Name() string {
	if b.GPU != nil {
		return b.GPU.Name()
	}
	return b.CPU.Name()
}

// Close releases the GPU, if any.
func (b *Backend) Close() error {
	if b.GPU != nil {
		return b.GPU.Close()
	}
	return nil
}

// SelectOptions configure Select.
type SelectOptions struct {
	CPU kernels.CPUOptions
	GPU Options
	// Logf receives the one line saying which device runs (nil: no log).
	Logf func(format string, args ...any)
}

// Select resolves a --device value: "cpu" is kernels.CPU; "cuda[:N]"
// opens that GPU and fails with a clear error (wrapping ErrNoDriver,
// ErrNoDevice or ErrNoCUBLAS) when the driver, the GPU or cuBLAS is
// missing; "auto" opens GPU 0 when all three are there and otherwise falls
// back to the CPU. Either way it logs one line naming the device.
func Select(flag string, opts SelectOptions) (*Backend, error) {
	spec, err := ParseDevice(flag)
	if err != nil {
		return nil, err
	}
	// Bad options are the caller's error on any device (not a reason to
	// fall back to the CPU under auto).
	if _, err := opts.GPU.validate(); err != nil {
		return nil, err
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if spec.Kind != "cpu" {
		d, err := Open(spec.Index, opts.GPU)
		switch {
		case err == nil:
			b := &Backend{GPU: d, Reason: spec.String()}
			logf("device: %s (--device %s)", d.Name(), spec)
			return b, nil
		case spec.Kind == "cuda":
			return nil, &selectError{flag: spec.String(), err: err}
		case !errors.Is(err, ErrNoDriver) && !errors.Is(err, ErrNoDevice) && !errors.Is(err, ErrNoCUBLAS):
			// A GPU stack that is present but broken is worth an error even
			// under auto: silently running 100x slower hides it.
			return nil, fmt.Errorf("--device auto: a GPU is present but failed to open (use --device cpu to skip it): %w", err)
		default:
			if err := cpuPrecision(opts.GPU.Precision, &opts.CPU, logf); err != nil {
				return nil, err
			}
			c, cerr := kernels.NewCPU(opts.CPU)
			if cerr != nil {
				return nil, cerr
			}
			reason := "auto: " + shortReason(err)
			logf("device: %s (%s)", c.Name(), reason)
			return &Backend{CPU: c, Reason: reason}, nil
		}
	}
	if err := cpuPrecision(opts.GPU.Precision, &opts.CPU, logf); err != nil {
		return nil, err
	}
	c, err := kernels.NewCPU(opts.CPU)
	if err != nil {
		return nil, err
	}
	logf("device: %s (--device cpu)", c.Name())
	return &Backend{CPU: c, Reason: "cpu"}, nil
}

// cpuPrecision applies CPUPrecision to a run that ends up on the CPU.
func cpuPrecision(prec string, opts *kernels.CPUOptions, logf func(string, ...any)) error {
	note, err := CPUPrecision(prec, opts)
	if err != nil {
		return err
	}
	if note != "" {
		logf("note: %s", note)
	}
	return nil
}

// selectError is a --device cuda[:N] that cannot open: "--device cuda: "
// and the cause's message without its package prefix (a short first
// sentence, then the paths tried).
type selectError struct {
	flag string
	err  error
}

func (e *selectError) Error() string {
	return "--device " + e.flag + ": " + strings.TrimPrefix(e.err.Error(), "cuda: ")
}

func (e *selectError) Unwrap() error { return e.err }

// shortReason names the missing piece without the list of paths tried.
func shortReason(err error) string {
	for _, e := range []error{ErrNoDriver, ErrNoDevice, ErrNoCUBLAS} {
		if errors.Is(err, e) {
			return strings.TrimPrefix(e.Error(), "cuda: ")
		}
	}
	return err.Error()
}
