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

// benchBLAS is $DDPM_BLAS as a BLASLibrary (auto when unset).
func benchBLAS(b *testing.B) BLASLibrary {
	var lib BLASLibrary
	if err := lib.UnmarshalText([]byte(os.Getenv("DDPM_BLAS"))); err != nil && os.Getenv("DDPM_BLAS") != "" {
		b.Fatal(err)
	}
	return lib
}

// benchCPU returns the backend under test: BLAS from $DDPM_BLAS (default
// auto), all GOMAXPROCS threads.
func benchCPU(b *testing.B) *CPU {
	c, err := NewCPU(CPUOptions{BLAS: benchBLAS(b)})
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
	pref := benchBLAS(b)
	for _, algo := range []ConvAlgorithm{ConvIm2col, ConvDNNL} {
		c, err := NewCPU(CPUOptions{BLAS: pref, Conv: algo})
		if err != nil {
			b.Logf("skipping conv %s: %v", algo, err)
			continue
		}
		b.Run(algo.String(), func(b *testing.B) { benchConv(b, c) })
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
	for _, bc := range []struct {
		name string
		d    AttnDims
	}{
		{"cifar10-b4", AttnDims{B: 4, T: 256, Heads: 1, HeadDim: 256, Scale: 1.0 / 16}},
		{"fixture-b16", AttnDims{B: 16, T: 256, Heads: 1, HeadDim: 64, Scale: 1.0 / 8}},
	} {
		d := bc.d
		n := d.B * d.T * d.Heads * d.HeadDim
		q, k, v, o, do := rnd(r, n), rnd(r, n), rnd(r, n), make([]float32, n), rnd(r, n)
		dq, dk, dv := make([]float32, n), make([]float32, n), make([]float32, n)
		flops := 4 * float64(d.B*d.Heads*d.T*d.T*d.HeadDim)
		b.Run(bc.name+"/fwd", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c.Attention(o, q, k, v, d)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(bc.name+"/bwd", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c.AttentionBackward(dq, dk, dv, do, q, k, v, d)
			}
			b.ReportMetric(2.5*flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
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
		for _, algo := range []ConvAlgorithm{ConvDNNL, ConvIm2col} {
			c, err := NewCPU(CPUOptions{BLAS: BLASAuto, Conv: algo})
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

// BenchmarkResBlock times a whole ResNet block of the DDPM UNet (diffusers'
// ResnetBlock2D: GroupNorm+SiLU, 3x3 conv, time-embedding projection added
// per channel, GroupNorm+SiLU, 3x3 conv, residual add), forward alone and
// forward+backward (every parameter and input gradient), at the CIFAR-10
// UNet's first level (batch 4, 128 channels, 32x32, embedding 512) and the
// small fixture UNet's (batch 16, 32 channels, 32x32, embedding 128).
// bench/kernels/ops_torch.py times the same block in PyTorch.
func BenchmarkResBlock(b *testing.B) {
	c := benchCPU(b)
	for _, s := range []struct {
		name            string
		n, ch, hw, temb int
	}{{"cifar", 4, 128, 32, 512}, {"small", 16, 32, 32, 128}} {
		rb := newResBlock(c, s.n, s.ch, s.hw, s.temb)
		b.Run(s.name+"/fwd", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				rb.forward()
			}
		})
		b.Run(s.name+"/fwd+bwd", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				rb.forward()
				rb.backward()
			}
		})
		if err := c.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// resBlock holds the buffers of one ResNet block for BenchmarkResBlock.
type resBlock struct {
	c                                  *CPU
	n, ch, hw, temb                    int
	cd                                 ConvDims
	gd                                 GroupNormDims
	x, temb0, out                      []float32
	g1, be1, w1, b1, g2, be2, w2, b2   []float32
	wt, bt                             []float32
	h1, h2, h3, h4, h5, ts, tp         []float32
	m1, r1, m2, r2                     []float32
	dout, dh4, dh3, dh1, dx1, dx       []float32
	dw1, db1, dw2, db2, dg1, dbe1, dg2 []float32
	dbe2, dtp, dts, dwt, dbt, dtemb    []float32
}

func newResBlock(c *CPU, n, ch, hw, temb int) *resBlock {
	r := rand.New(rand.NewPCG(6, 6))
	sz := n * ch * hw * hw
	nw := ch * ch * 9
	rb := &resBlock{c: c, n: n, ch: ch, hw: hw, temb: temb,
		cd: conv3(n, ch, hw, ch),
		gd: GroupNormDims{N: n, C: ch, HW: hw * hw, Groups: 32, Eps: 1e-6, SiLU: true}}
	if ch < 32 {
		rb.gd.Groups = 8
	}
	rb.x, rb.temb0, rb.dout = rnd(r, sz), rnd(r, n*temb), rnd(r, sz)
	rb.g1, rb.be1, rb.g2, rb.be2 = rnd(r, ch), rnd(r, ch), rnd(r, ch), rnd(r, ch)
	rb.w1, rb.b1, rb.w2, rb.b2 = rnd(r, nw), rnd(r, ch), rnd(r, nw), rnd(r, ch)
	rb.wt, rb.bt = rnd(r, ch*temb), rnd(r, ch)
	for _, p := range []*[]float32{&rb.out, &rb.h1, &rb.h2, &rb.h3, &rb.h4, &rb.h5, &rb.dh4, &rb.dh3, &rb.dh1, &rb.dx1, &rb.dx} {
		*p = make([]float32, sz)
	}
	for _, p := range []*[]float32{&rb.m1, &rb.r1, &rb.m2, &rb.r2} {
		*p = make([]float32, n*rb.gd.Groups)
	}
	rb.dw1, rb.dw2 = make([]float32, nw), make([]float32, nw)
	for _, p := range []*[]float32{&rb.db1, &rb.db2, &rb.dg1, &rb.dbe1, &rb.dg2, &rb.dbe2, &rb.bt} {
		if *p == nil {
			*p = make([]float32, ch)
		}
	}
	rb.ts, rb.dts, rb.dtemb = make([]float32, n*temb), make([]float32, n*temb), make([]float32, n*temb)
	rb.tp, rb.dtp = make([]float32, n*ch), make([]float32, n*ch)
	rb.dwt, rb.dbt = make([]float32, ch*temb), make([]float32, ch)
	return rb
}

func (rb *resBlock) forward() {
	c, n, ch, hw2 := rb.c, rb.n, rb.ch, rb.hw*rb.hw
	c.GroupNorm(rb.h1, rb.m1, rb.r1, rb.x, rb.g1, rb.be1, rb.gd)
	c.Conv2D(rb.h2, rb.h1, rb.w1, rb.b1, rb.cd)
	c.SiLU(rb.ts, rb.temb0, n*rb.temb)
	c.Linear(rb.tp, rb.ts, rb.wt, rb.bt, n, rb.temb, ch)
	c.AddChannelBias(rb.h3, rb.h2, rb.tp, n, ch, hw2)
	c.GroupNorm(rb.h4, rb.m2, rb.r2, rb.h3, rb.g2, rb.be2, rb.gd)
	c.Conv2D(rb.h5, rb.h4, rb.w2, rb.b2, rb.cd)
	c.Add(rb.out, rb.x, rb.h5, n*ch*hw2)
}

func (rb *resBlock) backward() {
	c, n, ch, hw2 := rb.c, rb.n, rb.ch, rb.hw*rb.hw
	c.Conv2DBackwardData(rb.dh4, rb.dout, rb.w2, rb.cd)
	c.Conv2DBackwardFilter(rb.dw2, rb.db2, rb.dout, rb.h4, rb.cd)
	c.GroupNormBackward(rb.dh3, rb.dg2, rb.dbe2, rb.dh4, rb.h3, rb.m2, rb.r2, rb.g2, rb.be2, rb.gd)
	c.ChannelSum(rb.dtp, rb.dh3, n, ch, hw2)
	c.LinearBackward(rb.dts, rb.dwt, rb.dbt, rb.dtp, rb.ts, rb.wt, n, rb.temb, ch)
	c.SiLUBackward(rb.dtemb, rb.dts, rb.temb0, n*rb.temb)
	c.Conv2DBackwardData(rb.dh1, rb.dh3, rb.w1, rb.cd)
	c.Conv2DBackwardFilter(rb.dw1, rb.db1, rb.dh3, rb.h1, rb.cd)
	c.GroupNormBackward(rb.dx1, rb.dg1, rb.dbe1, rb.dh1, rb.x, rb.m1, rb.r1, rb.g1, rb.be1, rb.gd)
	c.Add(rb.dx, rb.dx1, rb.dout, n*ch*hw2)
}

// BenchmarkAdamW reports GB/s (28 bytes per parameter: p, m, v, g read,
// p, m, v written) of one AdamW step over 4M parameters.
func BenchmarkAdamW(b *testing.B) {
	c := benchCPU(b)
	r := rand.New(rand.NewPCG(7, 7))
	const n = 1 << 22
	p, m, v, g := rnd(r, n), make([]float32, n), make([]float32, n), rnd(r, n)
	h := AdamWParams{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	for i := 0; i < b.N; i++ {
		c.AdamW(p, m, v, g, h, i+1, n)
	}
	b.ReportMetric(28*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

// BenchmarkGroupNormConv times GroupNormConv2D (the norm writing oneDNN's
// nChw16c source directly) against GroupNorm then Conv2D, inference
// options, on the diffusers fixture's 32-channel 32x32 conv at batch 16
// and a CIFAR-10 128-channel one at batch 4:
//
//	go test -run '^$' -bench GroupNormConv -benchtime 50x ./kernels
func BenchmarkGroupNormConv(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, bf16 := range []bool{false, true} {
		c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, ConstWeights: true, BF16: bf16})
		if err != nil {
			b.Logf("bf16 %v: %v", bf16, err)
			continue
		}
		for _, dc := range []ConvDims{
			{N: 16, C: 32, H: 32, W: 32, K: 32, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
			{N: 4, C: 128, H: 32, W: 32, K: 128, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1},
		} {
			dn := GroupNormDims{N: dc.N, C: dc.C, HW: dc.H * dc.W, Groups: 8, Eps: 1e-5, SiLU: true}
			x, w, bb := rnd(r, dc.N*dc.C*dc.H*dc.W), rnd(r, dc.K*dc.C*9), rnd(r, dc.K)
			g, be := rnd(r, dc.C), rnd(r, dc.C)
			y, h := make([]float32, dc.N*dc.K*dc.H*dc.W), make([]float32, len(x))
			st := make([]float32, 2*dn.N*dn.Groups)
			name := fmt.Sprintf("bf16=%v/N%d_C%d_%dx%d", bf16, dc.N, dc.C, dc.H, dc.W)
			b.Run(name+"/fused", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					c.GroupNormConv2D(y, x, nil, nil, g, be, w, bb, nil, dn, dc)
				}
			})
			b.Run(name+"/two-ops", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					c.GroupNorm(h, st[:dn.N*dn.Groups], st[dn.N*dn.Groups:], x, g, be, dn)
					c.Conv2D(y, h, w, bb, dc)
				}
			})
			b.Run(name+"/norm-only", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					c.GroupNorm(h, st[:dn.N*dn.Groups], st[dn.N*dn.Groups:], x, g, be, dn)
				}
			})
		}
	}
}

// BenchmarkWinograd times bf16 convolutions on the Winograd kernels
// against oneDNN's direct bf16 kernel, per shape (the DDPM CIFAR-10
// UNet's at batch 4 and 1, the diffusers fixture's at batch 16); the
// figures behind winoFaster:
//
//	go test -run '^$' -bench Winograd -benchtime 40x ./kernels
func BenchmarkWinograd(b *testing.B) {
	c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, ConstWeights: true, BF16: true})
	if err != nil || c.bf16w == nil {
		b.Skipf("no bf16 Winograd kernels: %v", err)
	}
	wino := c.bf16w
	for _, s := range [][4]int{ // N, C, K, H=W
		{4, 128, 128, 32}, {4, 384, 128, 32}, {4, 256, 256, 16}, {4, 256, 256, 8}, {4, 512, 256, 8}, {4, 256, 256, 4},
		{1, 128, 128, 32}, {1, 256, 256, 16}, {16, 32, 32, 32}, {16, 64, 64, 16}, {16, 96, 64, 16},
	} {
		d := ConvDims{N: s[0], C: s[1], H: s[3], W: s[3], K: s[2], R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
		r := rand.New(rand.NewPCG(1, 2))
		x, w := rnd(r, d.N*d.C*d.H*d.W), rnd(r, d.K*d.C*9)
		y := make([]float32, d.N*d.K*d.H*d.W)
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("N%d_C%d_K%d_%dx%d/winograd=%v", d.N, d.C, d.K, d.H, d.W, on), func(b *testing.B) {
				if on {
					c.winoForward("bench", y, nil, w, nil, d, func(src []float32, lo, hi int) { blockImage(src, x, lo, hi, d.H, d.W) })
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						c.winoForward("bench", y, nil, w, nil, d, func(src []float32, lo, hi int) { blockImage(src, x, lo, hi, d.H, d.W) })
					}
				} else {
					c.bf16w = nil
					defer func() { c.bf16w = wino }()
					for i := 0; i < b.N; i++ {
						c.Conv2D(y, x, w, nil, d)
					}
				}
				b.ReportMetric(2*float64(d.N*d.K*d.C*9*d.H*d.W)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkLinearBF16 times an attention projection (1024 tokens, 256 to
// 256) on one thread in fp32 and in bf16 mode:
//
//	go test -run '^$' -bench LinearBF16 -benchtime 200x ./kernels
func BenchmarkLinearBF16(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	m, in, out := 1024, 256, 256
	x, w, bb := rnd(r, m*in), rnd(r, out*in), rnd(r, out)
	y := make([]float32, m*out)
	for _, bf16 := range []bool{false, true} {
		c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, ConstWeights: true, BF16: bf16, Threads: 1})
		if err != nil {
			b.Logf("bf16 %v: %v", bf16, err)
			continue
		}
		b.Run(fmt.Sprintf("bf16=%v", bf16), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c.Linear(y, x, w, bb, m, in, out)
			}
		})
	}
}
