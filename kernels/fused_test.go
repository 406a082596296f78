package kernels

import (
	"math/rand/v2"
	"testing"
)

// transpose64 is (N, I, J) -> (N, J, I).
func transpose64(x []float64, n, i, j int) []float64 {
	y := make([]float64, len(x))
	for b := 0; b < n; b++ {
		for a := 0; a < i; a++ {
			for c := 0; c < j; c++ {
				y[(b*j+c)*i+a] = x[(b*i+a)*j+c]
			}
		}
	}
	return y
}

// TestLinearToChannels: LinearToChannels against the float64 twin of the
// sequence it replaces (Linear, Transpose12, then Add), with and without
// bias and residual, on odd sizes (one GEMM per example) and outputs a
// multiple of 16 (one GEMM, then the transposes), on every backend.
func TestLinearToChannels(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range backends(t) {
		for _, s := range []struct{ n, t, in, out int }{{1, 5, 3, 4}, {3, 17, 24, 33}, {4, 64, 32, 48}, {2, 37, 16, 32}} {
			tok, w, b := rnd(r, s.n*s.t*s.in), rnd(r, s.out*s.in), rnd(r, s.out)
			res := rnd(r, s.n*s.out*s.t)
			for _, withB := range []bool{true, false} {
				bb, b64 := b, f64(b)
				if !withB {
					bb, b64 = nil, make([]float64, s.out)
				}
				for _, withR := range []bool{true, false} {
					rr := res
					if !withR {
						rr = nil
					}
					y := newOut(s.n * s.out * s.t)
					c.LinearToChannels(y.v(), tok, w, bb, rr, s.n, s.t, s.in, s.out)
					if err := c.Sync(); err != nil {
						t.Fatal(err)
					}
					want := transpose64(refLinear(f64(tok), f64(w), b64, s.n*s.t, s.in, s.out), s.n, s.t, s.out)
					if withR {
						for i := range want {
							want[i] += float64(res[i])
						}
					}
					near(t, c.Name()+" LinearToChannels", y.v(), want, 1e-5, 1e-5)
					y.checkGuard(t, "LinearToChannels y")
				}
			}
		}
	}
}

// affineParams returns GroupNorm's gamma and beta as given to the kernel
// and to the float64 twin: themselves, or (affine false) nil for the
// kernel and ones and zeros for the twin.
func affineParams(gamma, beta []float32, affine bool) (g, be []float32, g64, be64 []float64) {
	if affine {
		return gamma, beta, f64(gamma), f64(beta)
	}
	g64, be64 = make([]float64, len(gamma)), make([]float64, len(beta))
	for i := range g64 {
		g64[i] = 1
	}
	return nil, nil, g64, be64
}

// TestGroupNormChannelBias: the fused kernel against the float64 twin of
// AddChannelBias then GroupNorm (with and without SiLU and affine), and
// its statistics against the twin's; a large common offset in the biases
// checks the variance is taken about the biased mean.
func TestGroupNormChannelBias(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, c := range backends(t) {
		for _, d := range []GroupNormDims{
			{N: 2, C: 8, HW: 5, Groups: 2, Eps: 1e-5},
			{N: 3, C: 12, HW: 300, Groups: 4, Eps: 1e-6, SiLU: true},
			{N: 1, C: 4, HW: 7, Groups: 4, Eps: 1e-5, SiLU: true},
		} {
			x, bias := rnd(r, d.N*d.C*d.HW), rnd(r, d.N*d.C)
			for i := range bias {
				bias[i] += 20
			}
			gamma, beta := rnd(r, d.C), rnd(r, d.C)
			for _, affine := range []bool{true, false} {
				g, be, g64, be64 := affineParams(gamma, beta, affine)
				sum := f64(x)
				for i := range sum {
					sum[i] += float64(bias[i/d.HW])
				}
				want, wmean, wrstd := refGroupNorm(sum, g64, be64, d)
				y, mean, rstd := newOut(len(x)), newOut(d.N*d.Groups), newOut(d.N*d.Groups)
				c.GroupNormChannelBias(y.v(), mean.v(), rstd.v(), x, bias, g, be, d)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				near(t, c.Name()+" GroupNormChannelBias y", y.v(), want, 2e-5, 2e-5)
				near(t, "mean", mean.v(), wmean, 1e-5, 1e-6)
				near(t, "rstd", rstd.v(), wrstd, 1e-5, 1e-5)
				for _, b := range []*gbuf{y, mean, rstd} {
					b.checkGuard(t, "GroupNormChannelBias")
				}
			}
		}
	}
}

// TestGroupNormConv2D: the fused norm and convolution against the float64
// twin of GroupNorm (plain, with the channel bias before it, with the
// scale-shift after it, with both) then Conv2D and the residual, on
// the pure-Go backend, oneDNN (training primitives, then inference ones
// with Winograd), and oneDNN bf16 where the CPU has it; shapes where the
// source goes to oneDNN in nChw16c (channels a multiple of 16, pixel
// counts that are not, one image split by output channels, a 1x1 and a
// stride-2 conv) and where it cannot (24 channels).
func TestGroupNormConv2D(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	type cfg struct {
		o   CPUOptions
		tol float64
	}
	cfgs := []cfg{
		{CPUOptions{BLAS: BLASGonum, Threads: 2}, 1e-5},
		{CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: 2}, 1e-5},
		{CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: 2, ConstWeights: true}, 2e-6},
	}
	if BF16Supported() == nil {
		cfgs = append(cfgs, cfg{CPUOptions{BLAS: BLASDNNL, Conv: ConvDNNL, Threads: 2, ConstWeights: true, BF16: true}, 1e-2})
	}
	conv := func(n, c, h, w, k, rs, stride, pad int) ConvDims {
		return ConvDims{N: n, C: c, H: h, W: w, K: k, R: rs, S: rs, StrideH: stride, StrideW: stride,
			PadTop: pad, PadLeft: pad, PadBottom: pad, PadRight: pad}
	}
	shapes := []ConvDims{
		conv(4, 32, 16, 16, 48, 3, 1, 1), // Winograd with ConstWeights
		conv(2, 64, 5, 7, 32, 3, 1, 1),   // 35 pixels
		conv(1, 32, 8, 8, 64, 3, 1, 1),   // one image: split by output channels
		conv(2, 32, 8, 8, 16, 1, 1, 0),   // 1x1
		conv(2, 32, 9, 9, 32, 3, 2, 0),   // stride 2
		conv(2, 24, 6, 6, 16, 3, 1, 1),   // 24 channels: the unfused path
		conv(7, 16, 6, 6, 16, 3, 1, 1),   // chunks of 2, 2 and 3 images taken in turn by 2 goroutines
		conv(10, 32, 8, 8, 32, 3, 1, 1),  // 5 chunks of 2 images
	}
	blkDst, sawDNNL := 0, false
	for _, cf := range cfgs {
		c, err := NewCPU(cf.o)
		if err != nil {
			t.Logf("skipping %+v: %v", cf.o, err)
			continue
		}
		sawDNNL = sawDNNL || c.dconv != nil
		for _, dc := range shapes {
			dn := GroupNormDims{N: dc.N, C: dc.C, HW: dc.H * dc.W, Groups: 8, Eps: 1e-5, SiLU: true}
			x, w, b := rnd(r, dc.N*dc.C*dc.H*dc.W), rnd(r, dc.K*dc.C*dc.R*dc.S), rnd(r, dc.K)
			gamma, beta, bias := rnd(r, dc.C), rnd(r, dc.C), rnd(r, dc.N*dc.C)
			res := rnd(r, dc.N*dc.K*dc.OutH()*dc.OutW())
			ss := rnd(r, 2*dc.N*dc.C)
			// cond: 0 plain GroupNorm, 1 the channel bias first, 2 the
			// scale-shift after, 3 both.
			for cond := 0; cond < 4; cond++ {
				in := f64(x)
				var bb, sc []float32
				if cond&1 != 0 {
					bb = bias
					for i := range in {
						in[i] += float64(bias[i/dn.HW])
					}
				}
				var h []float64
				if cond&2 != 0 {
					sc = ss
					h = refGroupNormSS(in, f64(gamma), f64(beta), f64(ss), dn)
				} else {
					h, _, _ = refGroupNorm(in, f64(gamma), f64(beta), dn)
				}
				want := refConv(h, f64(w), f64(b), dc)
				for _, withRes := range []bool{false, true} {
					var rr []float32
					wantR := want
					if withRes {
						rr = res
						wantR = make([]float64, len(want))
						for i := range want {
							wantR[i] = want[i] + float64(res[i])
						}
					}
					y := newOut(len(want))
					for rep := 0; rep < 2; rep++ { // the second run reuses primitives and cached weights
						c.GroupNormConv2D(y.v(), x, bb, sc, gamma, beta, w, b, rr, dn, dc)
					}
					if err := c.Sync(); err != nil {
						t.Fatalf("%s %+v: %v", c.Name(), dc, err)
					}
					if e := relL2(y.v(), wantR); e > cf.tol {
						t.Errorf("%s %+v conditioning %d residual %v: relative L2 error %.3g > %.3g", c.Name(), dc, cond, withRes, e, cf.tol)
					}
					y.checkGuard(t, "GroupNormConv2D y")
				}
			}
			elem, src, dst := c.blockedConv(dc, true)
			if src != (c.dconv != nil && dc.C%16 == 0) {
				t.Errorf("%s %+v: blockedConv = %d, %v, %v: want the nChw16c source exactly with oneDNN and channels a multiple of 16", c.Name(), dc, elem, src, dst)
			}
			if dst && (dc.N == 1 || dc.K%16 != 0) {
				t.Errorf("%s %+v: nChw16c output with one image (split by output channels) or %d output channels", c.Name(), dc, dc.K)
			}
			blkDst += boolIndex(dst)
			if p, ok := c.planDNNL(dc, passForward); ok && dc.N >= 6 && p.w <= p.g {
				t.Errorf("%s %+v: %d chunks on %d goroutines: want more chunks than goroutines (smallChunkWeights)", c.Name(), dc, p.w, p.g)
			}
		}
	}
	if blkDst == 0 && sawDNNL {
		t.Error("no shape left its output in nChw16c: the residual path went untested")
	}
}

// TestGroupNormTokens: the token-major norm against the float64 twin of
// GroupNorm then Transpose12, with channels a multiple of 16 (written in
// token order from the tiles) and not (the two ops), with and without
// SiLU and affine, on every backend.
func TestGroupNormTokens(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, c := range backends(t) {
		for _, d := range []GroupNormDims{
			{N: 3, C: 32, HW: 35, Groups: 8, Eps: 1e-5},
			{N: 2, C: 64, HW: 256, Groups: 32, Eps: 1e-6, SiLU: true},
			{N: 2, C: 12, HW: 20, Groups: 4, Eps: 1e-5},
		} {
			x, gamma, beta := rnd(r, d.N*d.C*d.HW), rnd(r, d.C), rnd(r, d.C)
			for _, affine := range []bool{true, false} {
				g, be, g64, be64 := affineParams(gamma, beta, affine)
				h, _, _ := refGroupNorm(f64(x), g64, be64, d)
				want := transpose64(h, d.N, d.C, d.HW)
				y := newOut(len(x))
				c.GroupNormTokens(y.v(), x, g, be, d)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				near(t, c.Name()+" GroupNormTokens", y.v(), want, 2e-5, 2e-5)
				y.checkGuard(t, "GroupNormTokens y")
			}
		}
	}
}
