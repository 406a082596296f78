package dev

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/cuda/cudatest"
	"github.com/ddpm-go/ddpm/kernels"
)

var emulated bool

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	used, cleanup, err := cudatest.UseEmulator("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	defer cleanup()
	emulated = used
	return m.Run()
}

func open(t testing.TB, opts cuda.Options) *cuda.Device {
	t.Helper()
	d, err := cuda.Open(0, opts)
	if errors.Is(err, cuda.ErrNoDriver) || errors.Is(err, cuda.ErrNoDevice) || errors.Is(err, cuda.ErrNoCUBLAS) {
		t.Skipf("no GPU: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "no cuDNN") {
		t.Skipf("no cuDNN: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

type variant struct {
	name string
	opts cuda.Options
}

var gnVariants = []variant{
	{"1-global", cuda.Options{Precision: "fp32", GroupNormKernel: 1}},
	{"2-shared", cuda.Options{Precision: "fp32", GroupNormKernel: 2}},
}

var convVariants = []variant{
	{"cudnn", cuda.Options{Conv: "cudnn"}},
	{"im2col-ws32M", cuda.Options{Conv: "im2col", ConvWorkspace: 32 << 20}},
	{"im2col-ws64M", cuda.Options{Conv: "im2col", ConvWorkspace: 64 << 20}},
	{"im2col-ws512M", cuda.Options{Conv: "im2col", ConvWorkspace: 512 << 20}},
	{"im2col-ws2G", cuda.Options{Conv: "im2col", ConvWorkspace: 2 << 30}},
	{"im2col-autotune", cuda.Options{Conv: "im2col", ConvAutotune: true}},
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 2*r.Float32() - 1
	}
	return v
}

func upload(d *cuda.Device, v []float32) cuda.Ptr {
	p := d.Alloc(len(v))
	d.Upload(p, v)
	return p
}

func download(d *cuda.Device, p cuda.Ptr, n int) []float32 {
	v := make([]float32, n)
	d.Download(v, p)
	return v
}

func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		if math.IsNaN(float64(got[i])) {
			return math.Inf(1)
		}
		num = math.Max(num, math.Abs(float64(got[i]-want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	return num / math.Max(den, 1e-30)
}

// TestLabGroupNorm validates every GroupNorm variant against kernels.CPU
// (relative error < 1e-5) on the lab's shape at batch 2.
func TestLabGroupNorm(t *testing.T) {
	g := kernels.GroupNormDims{N: 2, C: 128, HW: 1024, Groups: 32, Eps: 1e-6, SiLU: true}
	if emulated {
		g.HW = 64
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 1))
	n, ng := g.N*g.C*g.HW, g.N*g.Groups
	x, dy, gm, bt := randVec(r, n), randVec(r, n), randVec(r, g.C), randVec(r, g.C)
	y, m, rs := make([]float32, n), make([]float32, ng), make([]float32, ng)
	dx, dg, db := make([]float32, n), make([]float32, g.C), make([]float32, g.C)
	cpu.GroupNorm(y, m, rs, x, gm, bt, g)
	cpu.GroupNormBackward(dx, dg, db, dy, x, m, rs, gm, bt, g)
	for _, v := range gnVariants {
		t.Run(v.name, func(t *testing.T) {
			d := open(t, v.opts)
			px, pdy, pg, pb := upload(d, x), upload(d, dy), upload(d, gm), upload(d, bt)
			py, pm, pr := d.Alloc(n), d.Alloc(ng), d.Alloc(ng)
			pdx, pdg, pdb := d.Alloc(n), d.Alloc(g.C), d.Alloc(g.C)
			d.GroupNorm(py, pm, pr, px, pg, pb, g)
			d.GroupNormBackward(pdx, pdg, pdb, pdy, px, pm, pr, pg, pb, g)
			for _, c := range []struct {
				name string
				p    cuda.Ptr
				want []float32
			}{{"y", py, y}, {"dx", pdx, dx}, {"dgamma", pdg, dg}, {"dbeta", pdb, db}} {
				if e := relErr(download(d, c.p, len(c.want)), c.want); e > 1e-5 {
					t.Errorf("%s: relative error %.3g > 1e-5", c.name, e)
				}
			}
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLabConv validates the conv workspace variants at batch 3 (several
// chunks for the small workspaces at the lab shape's column size).
func TestLabConv(t *testing.T) {
	c := kernels.ConvDims{N: 3, C: 32, H: 16, W: 16, K: 32, R: 3, S: 3, StrideH: 1, StrideW: 1,
		PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(2, 2))
	xn, wn, yn := c.N*c.C*c.H*c.W, c.K*c.C*9, c.N*c.K*c.H*c.W
	x, w, b, dy := randVec(r, xn), randVec(r, wn), randVec(r, c.K), randVec(r, yn)
	y, dx, dw, db := make([]float32, yn), make([]float32, xn), make([]float32, wn), make([]float32, c.K)
	cpu.Conv2D(y, x, w, b, c)
	cpu.Conv2DBackwardData(dx, dy, w, c)
	cpu.Conv2DBackwardFilter(dw, db, dy, x, c)
	for _, v := range append(convVariants, variant{"im2col-ws-tiny", cuda.Options{Conv: "im2col", ConvWorkspace: 1 << 16}}) {
		t.Run(v.name, func(t *testing.T) {
			v.opts.Precision = "fp32"
			d := open(t, v.opts)
			px, pw, pb, pdy := upload(d, x), upload(d, w), upload(d, b), upload(d, dy)
			py, pdx, pdw, pdb := d.Alloc(yn), d.Alloc(xn), d.Alloc(wn), d.Alloc(c.K)
			d.Conv2D(py, px, pw, pb, c)
			d.Conv2DBackwardData(pdx, pdy, pw, c)
			d.Conv2DBackwardFilter(pdw, pdb, pdy, px, c)
			for _, o := range []struct {
				name string
				p    cuda.Ptr
				want []float32
			}{{"y", py, y}, {"dx", pdx, dx}, {"dw", pdw, dw}, {"db", pdb, db}} {
				if e := relErr(download(d, o.p, len(o.want)), o.want); e > 1e-5 {
					t.Errorf("%s: relative error %.3g > 1e-5", o.name, e)
				}
			}
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func timeIt(b *testing.B, d *cuda.Device, f func()) {
	if emulated {
		b.Skip("timing on the CPU emulator means nothing")
	}
	f()
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		f()
	}
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(time.Since(t0).Seconds()*1e3/float64(b.N), "ms/call")
}

func BenchmarkLabGroupNorm(b *testing.B) {
	g := kernels.GroupNormDims{N: 128, C: 128, HW: 1024, Groups: 32, Eps: 1e-6, SiLU: true}
	n, ng := g.N*g.C*g.HW, g.N*g.Groups
	for _, v := range gnVariants {
		b.Run(v.name, func(b *testing.B) {
			d := open(b, v.opts)
			r := rand.New(rand.NewPCG(3, 3))
			x, dy, gm, bt := upload(d, randVec(r, n)), upload(d, randVec(r, n)), upload(d, randVec(r, g.C)), upload(d, randVec(r, g.C))
			y, m, rs := d.Alloc(n), d.Alloc(ng), d.Alloc(ng)
			dx, dg, db := d.Alloc(n), d.Alloc(g.C), d.Alloc(g.C)
			b.Run("fwd", func(b *testing.B) { timeIt(b, d, func() { d.GroupNorm(y, m, rs, x, gm, bt, g) }) })
			b.Run("bwd", func(b *testing.B) {
				timeIt(b, d, func() { d.GroupNormBackward(dx, dg, db, dy, x, m, rs, gm, bt, g) })
			})
		})
	}
}

func BenchmarkLabConv(b *testing.B) {
	c := kernels.ConvDims{N: 128, C: 128, H: 32, W: 32, K: 128, R: 3, S: 3, StrideH: 1, StrideW: 1,
		PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	xn, wn, yn := c.N*c.C*c.H*c.W, c.K*c.C*9, c.N*c.K*c.H*c.W
	for _, v := range convVariants {
		b.Run(v.name, func(b *testing.B) {
			d := open(b, v.opts)
			r := rand.New(rand.NewPCG(4, 4))
			x, w, bias, dy := upload(d, randVec(r, xn)), upload(d, randVec(r, wn)), upload(d, randVec(r, c.K)), upload(d, randVec(r, yn))
			y, dx, dw, db := d.Alloc(yn), d.Alloc(xn), d.Alloc(wn), d.Alloc(c.K)
			b.Run("fwd", func(b *testing.B) { timeIt(b, d, func() { d.Conv2D(y, x, w, bias, c) }) })
			b.Run("bwd", func(b *testing.B) {
				timeIt(b, d, func() {
					d.Conv2DBackwardData(dx, dy, w, c)
					d.Conv2DBackwardFilter(dw, db, dy, x, c)
				})
			})
		})
	}
}
