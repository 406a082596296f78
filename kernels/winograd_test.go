package kernels

import (
	"math/rand/v2"
	"testing"
)

// bf16CPU returns an inference CPU in bf16 mode with the Winograd
// kernels, or skips.
func bf16CPU(t *testing.T, threads int) *CPU {
	t.Helper()
	if err := BF16Supported(); err != nil {
		t.Skipf("no bf16 on this CPU: %v", err)
	}
	c, err := NewCPU(CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: threads, ConstWeights: true, BF16: true})
	if err != nil {
		t.Skipf("bf16 backend: %v", err)
	}
	if c.bf16w == nil {
		t.Skip("no Winograd kernels: the CPU lacks AVX512_BF16 or oneDNN lacks dnnl_gemm_bf16bf16f32")
	}
	return c
}

// TestWinograd: the bf16 Winograd F(2x2, 3x3) convolution against the
// float64 direct convolution, called directly on shapes winoFaster would
// not pick (small ones: 2x2 images, one tile row per thread, more
// threads than tile rows, 16 channels) and through Conv2D and
// GroupNormConv2D (with the residual) on shapes it picks; with and
// without bias, twice (the second run on the cached transformed
// weights). Measured: 4.0e-3 relative L2, against 2.3e-3 for oneDNN's
// direct bf16 kernel on the same inputs (the transformed values are
// rounded to bf16, and the output transform's sums lose a little more).
func TestWinograd(t *testing.T) {
	const tol = 1e-2
	r := rand.New(rand.NewPCG(7, 8))
	conv := func(n, c, h, w, k int) ConvDims {
		return ConvDims{N: n, C: c, H: h, W: w, K: k, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	}
	for _, threads := range []int{1, 2, 3} {
		c := bf16CPU(t, threads)
		for _, d := range []ConvDims{conv(1, 16, 2, 2, 16), conv(2, 32, 6, 10, 48), conv(3, 16, 4, 8, 32), conv(1, 48, 12, 4, 16)} {
			x, w, b := rnd(r, d.N*d.C*d.H*d.W), rnd(r, d.K*d.C*9), rnd(r, d.K)
			for _, bias := range [][]float32{nil, b} {
				var bb []float64
				if bias != nil {
					bb = f64(bias)
				}
				want := refConv(f64(x), f64(w), bb, d)
				for rep := 0; rep < 2; rep++ {
					y := newOut(len(want))
					c.winoForward("test", y.v(), nil, w, bias, d, func(src []float32, lo, hi int) { blockImage(src, x, lo, hi, d.H, d.W) })
					if err := c.Sync(); err != nil {
						t.Fatalf("%d threads %+v: %v", threads, d, err)
					}
					if e := relL2(y.v(), want); e > tol {
						t.Errorf("%d threads %+v bias %v: relative L2 error %.3g > %.3g", threads, d, bias != nil, e, tol)
					}
				}
			}
		}
	}
	c := bf16CPU(t, 2)
	for _, d := range []ConvDims{conv(2, 128, 8, 8, 128), conv(1, 128, 16, 16, 144)} {
		if !c.winoFits(d) {
			t.Fatalf("%+v: winoFits false, want the Winograd kernels", d)
		}
		x, w, b, res := rnd(r, d.N*d.C*d.H*d.W), rnd(r, d.K*d.C*9), rnd(r, d.K), rnd(r, d.N*d.K*d.H*d.W)
		want := refConv(f64(x), f64(w), f64(b), d)
		y := newOut(len(want))
		c.Conv2D(y.v(), x, w, b, d)
		if err := c.Sync(); err != nil {
			t.Fatal(err)
		}
		e := relL2(y.v(), want)
		c.bf16w = nil // oneDNN's direct bf16 kernel on the same inputs, for the log
		direct := newOut(len(want))
		c.Conv2D(direct.v(), x, w, b, d)
		c.bf16w = &constCache[[]uint16]{}
		t.Logf("%+v: relative L2 error %.3g (oneDNN direct bf16: %.3g)", d, e, relL2(direct.v(), want))
		if e > tol {
			t.Errorf("%+v Conv2D: relative L2 error %.3g > %.3g", d, e, tol)
		}
		dn := GroupNormDims{N: d.N, C: d.C, HW: d.H * d.W, Groups: 32, Eps: 1e-5, SiLU: true}
		gamma, beta := rnd(r, d.C), rnd(r, d.C)
		h, _, _ := refGroupNorm(f64(x), f64(gamma), f64(beta), dn)
		want = refConv(h, f64(w), f64(b), d)
		for i := range want {
			want[i] += float64(res[i])
		}
		c.GroupNormConv2D(y.v(), x, nil, nil, gamma, beta, w, b, res, dn, d)
		if err := c.Sync(); err != nil {
			t.Fatal(err)
		}
		if e := relL2(y.v(), want); e > tol {
			t.Errorf("%+v GroupNormConv2D: relative L2 error %.3g > %.3g", d, e, tol)
		}
	}
}

// TestWinoFaster: the shapes of the DDPM CIFAR-10 UNet that the Winograd
// kernels take, and the small ones they leave to oneDNN.
func TestWinoFaster(t *testing.T) {
	conv := func(n, c, h, k int) ConvDims {
		return ConvDims{N: n, C: c, H: h, W: h, K: k, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	}
	for _, tc := range []struct {
		d    ConvDims
		want bool
	}{
		{conv(4, 128, 32, 128), true},
		{conv(4, 384, 32, 128), true},
		{conv(1, 256, 16, 256), true},
		{conv(4, 256, 8, 256), true},
		{conv(4, 256, 4, 256), false}, // 4x4
		{conv(16, 64, 16, 64), false}, // 64 channels
		{conv(16, 128, 16, 64), false},
		{ConvDims{N: 4, C: 128, H: 32, W: 32, K: 128, R: 3, S: 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}, false}, // stride 2
		{ConvDims{N: 4, C: 128, H: 15, W: 15, K: 128, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}, false}, // odd size
	} {
		if got := winoShape(tc.d) && winoFaster(tc.d); got != tc.want {
			t.Errorf("%+v: Winograd %v, want %v", tc.d, got, tc.want)
		}
	}
}

// TestWinogradConcurrent: one bf16 CPU shared by goroutines (as the
// server shares it between requests), each running the Winograd
// convolution and a bf16 Linear on the same weights from their first
// use on: every result equals the one computed alone, bit for bit.
func TestWinogradConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	d := ConvDims{N: 2, C: 128, H: 8, W: 8, K: 128, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	x, w, b := rnd(r, d.N*d.C*d.H*d.W), rnd(r, d.K*d.C*9), rnd(r, d.K)
	lx, lw := rnd(r, 128*64), rnd(r, 32*64)
	run := func(c *CPU) ([]float32, []float32) {
		y, ly := make([]float32, d.N*d.K*d.H*d.W), make([]float32, 128*32)
		c.Conv2D(y, x, w, b, d)
		c.Linear(ly, lx, lw, nil, 128, 64, 32)
		return y, ly
	}
	wantY, wantL := run(bf16CPU(t, 2))
	c := bf16CPU(t, 2)
	const goroutines = 4
	got := make([][2][]float32, goroutines)
	done := make(chan int)
	for g := 0; g < goroutines; g++ {
		go func() {
			for rep := 0; rep < 3; rep++ {
				y, ly := run(c)
				got[g] = [2][]float32{y, ly}
			}
			done <- g
		}()
	}
	for g := 0; g < goroutines; g++ {
		<-done
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	for g, res := range got {
		for i, v := range res[0] {
			if v != wantY[i] {
				t.Fatalf("goroutine %d: conv y[%d] = %v, alone %v", g, i, v, wantY[i])
			}
		}
		for i, v := range res[1] {
			if v != wantL[i] {
				t.Fatalf("goroutine %d: linear y[%d] = %v, alone %v", g, i, v, wantL[i])
			}
		}
	}
}
