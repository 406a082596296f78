package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
)

// benchConvShapes are the convolutions of the DDPM CIFAR-10 UNet (channels
// 128/256, batch 4) and of the small fixture UNet (channels 32/64, batch 16).
var benchConvShapes = []struct {
	name string
	d    ConvDims
}{
	{"cifar_c128_32x32_3x3", conv3(4, 128, 32, 128)},
	{"cifar_c128to256_16x16_3x3", conv3(4, 128, 16, 256)},
	{"cifar_c256_16x16_3x3", conv3(4, 256, 16, 256)},
	{"cifar_c256_8x8_3x3", conv3(4, 256, 8, 256)},
	{"cifar_c256_4x4_3x3", conv3(4, 256, 4, 256)},
	{"cifar_c128_down_32to16", ConvDims{N: 4, C: 128, H: 32, W: 32, K: 128, R: 3, S: 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}},
	{"cifar_c128to256_16x16_1x1", ConvDims{N: 4, C: 128, H: 16, W: 16, K: 256, R: 1, S: 1, StrideH: 1, StrideW: 1}},
	{"small_c32_32x32_3x3", conv3(16, 32, 32, 32)},
	{"small_c64_16x16_3x3", conv3(16, 64, 16, 64)},
	{"small_c64_8x8_3x3", conv3(16, 64, 8, 64)},
}

func conv3(n, c, hw, k int) ConvDims {
	return ConvDims{N: n, C: c, H: hw, W: hw, K: k, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
}

// benchCPU returns the backend under test: BLAS from $DDPM_BLAS (default
// auto), all GOMAXPROCS threads.
func benchCPU(b *testing.B) *CPU {
	pref := os.Getenv("DDPM_BLAS")
	if pref == "" {
		pref = "auto"
	}
	c, err := NewCPU(CPUOptions{BLAS: pref})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkConv reports GFLOP/s (2*N*K*C*R*S*OH*OW per pass) of Conv2D,
// Conv2DBackwardData and Conv2DBackwardFilter on the UNet shapes, with
// im2col + GEMM and (where libdnnl.so.2 loads) oneDNN's primitives:
//
//	nice go test -run '^$' -bench Conv -benchtime 20x ./kernels
func BenchmarkConv(b *testing.B) {
	pref := os.Getenv("DDPM_BLAS")
	if pref == "" {
		pref = "auto"
	}
	for _, algo := range []string{"im2col", "dnnl"} {
		c, err := NewCPU(CPUOptions{BLAS: pref, Conv: algo})
		if err != nil {
			b.Logf("skipping conv %s: %v", algo, err)
			continue
		}
		b.Run(algo, func(b *testing.B) { benchConv(b, c) })
	}
}

func benchConv(b *testing.B, c *CPU) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, s := range benchConvShapes {
		d := s.d
		ohw := d.OutH() * d.OutW()
		x, w, bias := rnd(r, d.N*d.C*d.H*d.W), rnd(r, d.K*d.C*d.R*d.S), rnd(r, d.K)
		y, dy := make([]float32, d.N*d.K*ohw), rnd(r, d.N*d.K*ohw)
		dx, dw, db := make([]float32, len(x)), make([]float32, len(w)), make([]float32, d.K)
		flops := 2 * float64(d.N*d.K*d.C*d.R*d.S*ohw)
		for _, pass := range []struct {
			name string
			run  func()
		}{
			{"fwd", func() { c.Conv2D(y, x, w, bias, d) }},
			{"bwd_data", func() { c.Conv2DBackwardData(dx, dy, w, d) }},
			{"bwd_filter", func() { c.Conv2DBackwardFilter(dw, db, dy, x, d) }},
		} {
			b.Run(fmt.Sprintf("%s/%s/%s", c.BLAS().Name(), s.name, pass.name), func(b *testing.B) {
				pass.run() // warm the workspace pool
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					pass.run()
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkGroupNormSiLU reports GB/s of the fused GroupNorm+SiLU forward
// and backward on the CIFAR-10 UNet's largest activation (4, 128, 32x32).
func BenchmarkGroupNormSiLU(b *testing.B) {
	c := benchCPU(b)
	r := rand.New(rand.NewPCG(2, 2))
	d := GroupNormDims{N: 4, C: 128, HW: 1024, Groups: 32, Eps: 1e-6, SiLU: true}
	n := d.N * d.C * d.HW
	x, dy, y, dx := rnd(r, n), rnd(r, n), make([]float32, n), make([]float32, n)
	g, be, dg, dbe := rnd(r, d.C), rnd(r, d.C), make([]float32, d.C), make([]float32, d.C)
	mean, rstd := make([]float32, d.N*d.Groups), make([]float32, d.N*d.Groups)
	b.Run("fwd", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			c.GroupNorm(y, mean, rstd, x, g, be, d)
		}
		b.ReportMetric(float64(8*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	})
	b.Run("bwd", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			c.GroupNormBackward(dx, dg, dbe, dy, x, mean, rstd, g, be, d)
		}
		b.ReportMetric(float64(12*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	})
}

// BenchmarkAttention reports GFLOP/s (4*B*Heads*T*T*HeadDim forward) of
// self-attention at the CIFAR-10 UNet's 16x16 level (T 256, 256 channels).
func BenchmarkAttention(b *testing.B) {
	c := benchCPU(b)
	r := rand.New(rand.NewPCG(3, 3))
	d := AttnDims{B: 4, T: 256, Heads: 1, HeadDim: 256, Scale: 1.0 / 16}
	n := d.B * d.T * d.Heads * d.HeadDim
	q, k, v, o, do := rnd(r, n), rnd(r, n), rnd(r, n), make([]float32, n), rnd(r, n)
	dq, dk, dv := make([]float32, n), make([]float32, n), make([]float32, n)
	flops := 4 * float64(d.B*d.Heads*d.T*d.T*d.HeadDim)
	b.Run("fwd", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			c.Attention(o, q, k, v, d)
		}
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("bwd", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			c.AttentionBackward(dq, dk, dv, do, q, k, v, d)
		}
		b.ReportMetric(2.5*flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}

// BenchmarkConvThenGroupNorm times a 3x3 conv (128 channels, 32x32)
// followed by GroupNorm+SiLU, the pattern of every ResNet block, at batch
// 1 (sampling one image) and 4: it shows threads of one op getting in the
// way of the next (an OpenMP team spinning after its region, say).
func BenchmarkConvThenGroupNorm(b *testing.B) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, n := range []int{1, 4} {
		d := conv3(n, 128, 32, 128)
		x, w := rnd(r, n*128*1024), rnd(r, 128*128*9)
		y := make([]float32, n*128*1024)
		gd := GroupNormDims{N: n, C: 128, HW: 1024, Groups: 32, Eps: 1e-6, SiLU: true}
		m, s := make([]float32, n*32), make([]float32, n*32)
		for _, algo := range []string{"dnnl", "im2col"} {
			c, err := NewCPU(CPUOptions{BLAS: "auto", Conv: algo})
			if err != nil {
				b.Logf("skipping %s: %v", algo, err)
				continue
			}
			b.Run(fmt.Sprintf("%s/batch%d", algo, n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					c.Conv2D(y, x, w, nil, d)
					c.GroupNorm(x, m, s, y, nil, nil, gd)
				}
				b.ReportMetric(2*float64(n*128*128*9*1024)*float64(b.N)/b.Elapsed().Seconds()/1e9, "conv-GFLOP/s")
			})
		}
	}
}

// BenchmarkConvOneImage reports GFLOP/s of one-image forward convs (batch-1
// sampling) of the CIFAR-10 UNet with and without CPUOptions.ConstWeights.
func BenchmarkConvOneImage(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, cw := range []bool{false, true} {
		c, err := NewCPU(CPUOptions{ConstWeights: cw})
		if err != nil {
			b.Fatal(err)
		}
		for _, d := range []ConvDims{conv3(1, 128, 32, 128), conv3(1, 256, 16, 256), conv3(1, 256, 8, 256), conv3(1, 256, 4, 256)} {
			x, w := rnd(r, d.C*d.H*d.W), rnd(r, d.K*d.C*9)
			y := make([]float32, d.K*d.H*d.W)
			b.Run(fmt.Sprintf("constweights=%v/c%d_%dx%d", cw, d.C, d.H, d.W), func(b *testing.B) {
				c.Conv2D(y, x, w, nil, d)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					c.Conv2D(y, x, w, nil, d)
				}
				b.ReportMetric(2*float64(d.K*d.C*9*d.H*d.W)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
