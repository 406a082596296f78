package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/kernels"
)

// devicesOptions are the flags of `ddpm devices`.
type devicesOptions struct {
	Device    string // --device value to resolve
	Precision string // --precision (GPU arithmetic)
	Check     bool   // run a small op on the chosen device
}

const devicesExamples = `  ddpm devices
  ddpm devices --device cuda:1 --check
  ddpm devices --device cpu`

func runDevices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("devices", "devices [--device auto|cpu|cuda[:N]] [--check]", devicesExamples, stderr)
	var o devicesOptions
	fs.StringVar(&o.Device, "device", "auto", "device to resolve: auto (CUDA when a driver, a GPU and cuBLAS are present, else CPU), cpu, cuda, cuda:N")
	fs.StringVar(&o.Precision, "precision", "", precisionHelp)
	fs.BoolVar(&o.Check, "check", false, "run a small computation on the chosen device and compare it with the CPU")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("devices: unexpected argument %q", fs.Arg(0))}
	}
	return devices(ctx, o, stdout)
}

// devices lists the GPUs the driver sees, then resolves o.Device the way
// every command's --device flag does and optionally exercises it.
func devices(ctx context.Context, o devicesOptions, stdout io.Writer) error {
	list, err := cuda.Devices()
	switch {
	case errors.Is(err, cuda.ErrNoDriver):
		fmt.Fprintln(stdout, "GPUs: none (no NVIDIA driver: libcuda.so.1 not found)")
	case err != nil:
		fmt.Fprintf(stdout, "GPUs: none (%v)\n", err)
	case len(list) == 0:
		fmt.Fprintln(stdout, "GPUs: none (the driver sees no device)")
	default:
		for _, d := range list {
			fmt.Fprintf(stdout, "GPU %s\n", d)
		}
	}
	b, err := cuda.Select(o.Device, cuda.SelectOptions{
		GPU:  cuda.Options{Precision: o.Precision},
		Logf: func(f string, a ...any) { fmt.Fprintf(stdout, f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	defer b.Close()
	if !o.Check {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	x := []float32{-3, -1, -0.25, 0, 0.5, 2, 4, 8}
	want := make([]float32, len(x))
	cpu := b.CPU
	if cpu == nil {
		c, err := kernels.NewCPU(kernels.CPUOptions{Threads: 1})
		if err != nil {
			return err
		}
		cpu = c
	}
	cpu.SiLU(want, x, len(x))
	got := make([]float32, len(x))
	if b.GPU != nil {
		d := b.GPU
		p := d.Alloc(len(x))
		d.Upload(p, x)
		d.SiLU(p, p, len(x))
		d.Download(got, p)
		d.Free(p)
		if err := d.Sync(); err != nil {
			return fmt.Errorf("devices --check on %s: %w", d.Name(), err)
		}
	} else {
		cpu.SiLU(got, x, len(x))
	}
	worst := 0.0
	for i := range got {
		worst = max(worst, float64(abs32(got[i]-want[i])))
	}
	if worst > 1e-5 {
		return fmt.Errorf("devices --check on %s: SiLU differs from the CPU by %g", b.Name(), worst)
	}
	fmt.Fprintf(stdout, "check: SiLU on %s matches the CPU (max difference %.2g)\n", b.Name(), worst)
	return nil
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}
