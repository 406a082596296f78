package dev

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/weights"
)

// TestUNetParams: the lab UNet has google/ddpm-cifar10-32's parameter count.
func TestUNetParams(t *testing.T) {
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := NewUNet[[]float32](cpu, CIFAR10(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.NumParams(), 35746307; got != want {
		t.Fatalf("NumParams = %d, want %d (diffusers google/ddpm-cifar10-32)", got, want)
	}
}

// smallConfig is a reduced UNet with every block kind, for quick checks.
func smallConfig() UNetConfig {
	return UNetConfig{InChannels: 3, Channels: []int{32, 64}, Attention: []bool{false, true}, Layers: 1, Groups: 8, Eps: 1e-6}
}

// checkForward compares the GPU forward with the CPU forward on the same
// seeded weights and input.
func checkForward(t *testing.T, name string, cfg UNetConfig, n, size int, tol float64) {
	d := open(t, cuda.Options{Precision: "fp32"})
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := NewUNet[[]float32](cpu, cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	ug, err := NewUNet[cuda.Ptr](d, cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer ug.Close()
	r := rand.New(rand.NewPCG(5, 5))
	m := n * cfg.InChannels * size * size
	x := randVec(r, m)
	ts := make([]int, n)
	for i := range ts {
		ts[i] = r.IntN(1000)
	}
	want := make([]float32, m)
	uc.Forward(want, x, ts, size, size)
	if err := cpu.Sync(); err != nil {
		t.Fatal(err)
	}
	gx, gout := upload(d, x), d.Alloc(m)
	ug.Forward(gout, gx, ts, size, size)
	got := download(d, gout, m)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	e := relErr(got, want)
	t.Logf("whole-UNet forward %s, GPU vs CPU: relative error %.3g (tolerance %.0e)", name, e, tol)
	if e > tol {
		t.Fatalf("relative error %.3g > %.0e", e, tol)
	}
}

// TestUNetForwardSmall runs the reduced UNet on the GPU (or the emulator).
func TestUNetForwardSmall(t *testing.T) { checkForward(t, "small", smallConfig(), 2, 16, 1e-4) }

// TestUNetForwardCIFAR10 runs the full ddpm-cifar10 UNet at batch 2 (GPU only).
func TestUNetForwardCIFAR10(t *testing.T) {
	if emulated || testing.Short() {
		t.Skip("full CIFAR-10 UNet: GPU only")
	}
	checkForward(t, "cifar10", CIFAR10(), 2, 32, 1e-4)
}

// BenchmarkLabUNetForward times one ddpm-cifar10 forward at batch 128 (TF32).
func BenchmarkLabUNetForward(b *testing.B) {
	for _, v := range unetVariants {
		b.Run(v.name, func(b *testing.B) {
			d := open(b, v.opts)
			u, err := NewUNet[cuda.Ptr](d, CIFAR10(), 1)
			if err != nil {
				b.Fatal(err)
			}
			defer u.Close()
			const n = 128
			x, out := d.Alloc(n*3*32*32), d.Alloc(n*3*32*32)
			ts := make([]int, n)
			timeIt(b, d, func() { u.Forward(out, x, ts, 32, 32) })
		})
	}
}

// unetVariants are the backend settings the whole-network benchmarks
// compare: the default (cuDNN convolutions where libcudnn loads), im2col
// with fixed 512 MiB chunks, and im2col with ConvAutotune.
var unetVariants = []variant{
	{"default", cuda.Options{}},
	{"im2col", cuda.Options{Conv: "im2col"}},
	{"im2col-autotune", cuda.Options{Conv: "im2col", ConvAutotune: true}},
}

// BenchmarkLabUNetSampleDDIM50 times 50 DDIM steps at batch 128 (TF32) and
// reports images/s, the sampling figure.
func BenchmarkLabUNetSampleDDIM50(b *testing.B) {
	for _, v := range unetVariants {
		b.Run(v.name, func(b *testing.B) { benchSample(b, v.opts) })
	}
}

func benchSample(b *testing.B, opts cuda.Options) {
	d := open(b, opts)
	if emulated {
		b.Skip("timing on the CPU emulator means nothing")
	}
	u, err := NewUNet[cuda.Ptr](d, CIFAR10(), 1)
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	const n = 128
	x := upload(d, randVec(rand.New(rand.NewPCG(9, 9)), n*3*32*32))
	u.SampleDDIM(x, n, 32, 32, 2) // warm-up
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		u.SampleDDIM(x, n, 32, 32, 50)
	}
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	el := time.Since(t0).Seconds() / float64(b.N)
	b.ReportMetric(el*1e3, "ms/call")
	b.ReportMetric(n/el, "images/s")
}

// TestUNetFixture checks the lab UNet against diffusers on the shared
// fixture (a real diffusers 0.21.4 UNet2DModel: weights, input, timesteps
// and output), on the CPU and on the GPU (or the emulator).
func TestUNetFixture(t *testing.T) {
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "diffusers-unet-small")
	if d := os.Getenv("DDPM_UNET_FIXTURE"); d != "" { // gpu-check carries a copy
		dir = d
	}
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("fixture %s absent (../shared not mounted): %v", dir, err)
	}
	src, err := weights.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tensors := map[string][]float32{}
	for name, tt := range src.Tensors {
		tensors[name] = tt.Data
	}
	xa, err := npy.ReadFile(filepath.Join(dir, "x.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ta, err := npy.ReadFile(filepath.Join(dir, "timesteps.npy"))
	if err != nil {
		t.Fatal(err)
	}
	oa, err := npy.ReadFile(filepath.Join(dir, "out.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ts64, err := ta.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	ts := make([]int, len(ts64))
	for i, v := range ts64 {
		ts[i] = int(v)
	}
	x, want := xa.Float32s(), oa.Float32s()
	cfg := UNetConfig{InChannels: 1, Channels: []int{32, 64, 64}, Attention: []bool{false, true, false},
		Layers: 1, Groups: 8, Eps: 1e-6, DownPad: 0}
	h := xa.Shape[2]
	relL2 := func(got []float32) float64 {
		var num, den float64
		for i := range want {
			d := float64(got[i] - want[i])
			num += d * d
			den += float64(want[i]) * float64(want[i])
		}
		return math.Sqrt(num / den)
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := NewUNet[[]float32](cpu, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := uc.Load(tensors); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, len(want))
	uc.Forward(got, x, ts, h, h)
	if e := relL2(got); e > 1e-4 {
		t.Fatalf("CPU: relative L2 error %.3g against diffusers > 1e-4", e)
	} else {
		t.Logf("CPU: relative L2 error %.3g against diffusers", e)
	}
	d := open(t, cuda.Options{Precision: "fp32"})
	ug, err := NewUNet[cuda.Ptr](d, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ug.Close()
	if err := ug.Load(tensors); err != nil {
		t.Fatal(err)
	}
	gx, gout := upload(d, x), d.Alloc(len(want))
	ug.Forward(gout, gx, ts, h, h)
	if e := relL2(download(d, gout, len(want))); e > 1e-4 {
		t.Fatalf("GPU: relative L2 error %.3g against diffusers > 1e-4", e)
	} else {
		t.Logf("GPU: relative L2 error %.3g against diffusers", e)
	}
}
