package cuda

import (
	"math"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/kernels"
)

// The GPU benchmarks use the DDPM CIFAR-10 UNet's hot shapes at batch 128;
// pytorch/bench_gpu.py --ops times the same shapes in PyTorch, and
// bench/gpu-check.sh prints the two side by side. Each reports ms/call
// (waiting for the GPU) and GFLOP/s where the op is GEMM-bound. The
// convolutions run once per engine: cudnn (Options.Conv auto), im2col,
// and im2col-autotune (Options.ConvAutotune).

// benchDevice opens GPU 0 in the precision of the DDPM_CUDA_PRECISION
// environment variable (default tf32) or skips.
func benchDevice(b *testing.B) *Device { return benchDeviceWith(b, Options{}) }

func benchDeviceWith(b *testing.B, o Options) *Device {
	o.Precision = "tf32"
	if v := getenv("DDPM_CUDA_PRECISION"); v != "" {
		o.Precision = v
	}
	return openTestWith(b, o)
}

// convEngines are the convolution engines the benchmarks compare.
var convEngines = []struct {
	name string
	opts Options
}{
	{"cudnn", Options{}},
	{"im2col", Options{Conv: "im2col"}},
	{"im2col-autotune", Options{Conv: "im2col", ConvAutotune: true}},
}

func randDev(d *Device, n int) Ptr {
	p := d.Alloc(n)
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.Sin(float64(i)*0.37)) * 0.5
	}
	d.Upload(p, v)
	return p
}

func timeGPU(b *testing.B, d *Device, flops float64, f func()) {
	f() // warm-up: scratch growth, cuBLAS heuristics, JIT
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		f()
	}
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start).Seconds() / float64(b.N)
	b.ReportMetric(el*1e3, "ms/call")
	if flops > 0 {
		b.ReportMetric(flops/el/1e9, "GFLOP/s")
	}
}

var benchConv = kernels.ConvDims{N: 128, C: 128, H: 32, W: 32, K: 128, R: 3, S: 3, StrideH: 1, StrideW: 1,
	PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}

func BenchmarkGPUConv3x3Fwd(b *testing.B) {
	for _, e := range convEngines {
		b.Run(e.name, func(b *testing.B) {
			d := benchDeviceWith(b, e.opts)
			c := benchConv
			x, w, bias := randDev(d, c.N*c.C*c.H*c.W), randDev(d, c.K*c.C*9), randDev(d, c.K)
			y := d.Alloc(c.N * c.K * c.H * c.W)
			timeGPU(b, d, 2*float64(c.N*c.K*c.H*c.W*c.C*9), func() { d.Conv2D(y, x, w, bias, c) })
		})
	}
}

func BenchmarkGPUConv3x3Bwd(b *testing.B) {
	for _, e := range convEngines {
		b.Run(e.name, func(b *testing.B) {
			d := benchDeviceWith(b, e.opts)
			c := benchConv
			x, w, dy := randDev(d, c.N*c.C*c.H*c.W), randDev(d, c.K*c.C*9), randDev(d, c.N*c.K*c.H*c.W)
			dx, dw, db := d.Alloc(c.N*c.C*c.H*c.W), d.Alloc(c.K*c.C*9), d.Alloc(c.K)
			timeGPU(b, d, 4*float64(c.N*c.K*c.H*c.W*c.C*9), func() {
				d.Conv2DBackwardData(dx, dy, w, c)
				d.Conv2DBackwardFilter(dw, db, dy, x, c)
			})
		})
	}
}

var benchGN = kernels.GroupNormDims{N: 128, C: 128, HW: 1024, Groups: 32, Eps: 1e-6, SiLU: true}

func BenchmarkGPUGroupNormSiLUFwd(b *testing.B) {
	d := benchDevice(b)
	g := benchGN
	n := g.N * g.C * g.HW
	x, y, gm, bt := randDev(d, n), d.Alloc(n), randDev(d, g.C), randDev(d, g.C)
	m, r := d.Alloc(g.N*g.Groups), d.Alloc(g.N*g.Groups)
	timeGPU(b, d, 0, func() { d.GroupNorm(y, m, r, x, gm, bt, g) })
}

func BenchmarkGPUGroupNormSiLUBwd(b *testing.B) {
	d := benchDevice(b)
	g := benchGN
	n := g.N * g.C * g.HW
	x, y, dy, gm, bt := randDev(d, n), d.Alloc(n), randDev(d, n), randDev(d, g.C), randDev(d, g.C)
	m, r := d.Alloc(g.N*g.Groups), d.Alloc(g.N*g.Groups)
	dx, dg, db := d.Alloc(n), d.Alloc(g.C), d.Alloc(g.C)
	d.GroupNorm(y, m, r, x, gm, bt, g)
	timeGPU(b, d, 0, func() { d.GroupNormBackward(dx, dg, db, dy, x, m, r, gm, bt, g) })
}

var benchAttn = kernels.AttnDims{B: 128, T: 256, Heads: 1, HeadDim: 256, Scale: 1.0 / 16}

func BenchmarkGPUAttentionFwd(b *testing.B) {
	d := benchDevice(b)
	a := benchAttn
	n := a.B * a.T * a.Heads * a.HeadDim
	q, k, v, o := randDev(d, n), randDev(d, n), randDev(d, n), d.Alloc(n)
	timeGPU(b, d, 4*float64(a.B*a.Heads*a.T*a.T*a.HeadDim), func() { d.Attention(o, q, k, v, a) })
}

func BenchmarkGPUAttentionBwd(b *testing.B) {
	d := benchDevice(b)
	a := benchAttn
	n := a.B * a.T * a.Heads * a.HeadDim
	q, k, v, do := randDev(d, n), randDev(d, n), randDev(d, n), randDev(d, n)
	dq, dk, dv := d.Alloc(n), d.Alloc(n), d.Alloc(n)
	timeGPU(b, d, 10*float64(a.B*a.Heads*a.T*a.T*a.HeadDim), func() { d.AttentionBackward(dq, dk, dv, do, q, k, v, a) })
}

// BenchmarkGPULaunch measures the per-call overhead of a tiny kernel
// (the floor under every op of the sampling loop), queued one by one
// ("eager") and replayed by GraphOps as a CUDA graph of 100 launches
// ("graph100", per kernel).
func BenchmarkGPULaunch(b *testing.B) {
	b.Run("eager", func(b *testing.B) {
		d := benchDevice(b)
		x := d.Alloc(256)
		timeGPU(b, d, 0, func() { d.SiLU(x, x, 256) })
	})
	b.Run("graph100", func(b *testing.B) {
		d := benchDevice(b)
		g := NewGraphOps(d)
		x := g.Alloc(256)
		seq := func() {
			for i := 0; i < 100; i++ {
				g.SiLU(x, x, 256)
			}
			g.Sync()
		}
		seq()
		seq() // captured
		if err := g.Sync(); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			seq()
		}
		el := time.Since(start).Seconds() / float64(b.N) / 100
		b.ReportMetric(el*1e3, "ms/call")
		if st := g.Stats(); st.Replayed == 0 {
			b.Fatalf("no graph replays: %+v", st)
		}
	})
}
