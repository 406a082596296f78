package cuda

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/kernels"
)

// openTest opens GPU 0 or skips the test, saying why, when the machine has
// no driver, GPU or cuBLAS (CI and the development machine have none).
func openTest(t testing.TB, precision string) *Device {
	t.Helper()
	return openTestWith(t, Options{Precision: precision})
}

func openTestWith(t testing.TB, opts Options) *Device {
	t.Helper()
	d, err := Open(0, opts)
	if errors.Is(err, ErrNoDriver) || errors.Is(err, ErrNoDevice) || errors.Is(err, ErrNoCUBLAS) {
		t.Skipf("no GPU here: %v", err)
	}
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func newCPU(t testing.TB) *kernels.CPU {
	t.Helper()
	c, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// opCase is one op checked on the GPU against kernels.CPU: outputs and
// inputs get the same seeded random values in [-1, 1) on both devices
// (outputs too, so in-place ops and stray writes are visible), run is
// called, and every output is compared.
type opCase[B any] struct {
	name string
	ins  []int // input lengths
	outs []int // output lengths
	gemm bool  // goes through cuBLAS or cuDNN (the precision's tolerance, gemmEps)
	tol  float64
	run  func(o kernels.Ops[B], out, in []B)
}

// fp32Eps is the tolerance of the float32 ops against the CPU (different
// summation orders): |got - want| <= eps (rms(want) + |want|).
const fp32Eps = 1e-5

// gemmEps is the tolerance of the GEMM and convolution ops in precision
// p: 8 unit roundoffs of the mode's GEMM inputs (TF32 and FP16 2^-11,
// BF16 2^-8), each product carrying two roundings and the error of a sum
// of them growing with its rms; strict FP32 keeps fp32Eps.
func gemmEps(p Precision) float64 {
	if p == FP32 {
		return fp32Eps
	}
	return 8 * p.UnitRoundoff()
}

// opCases lists the cases for buffer type B; opCases[[]float32] and
// opCases[Ptr] give the same cases in the same order.
func opCases[B any]() []opCase[B] {
	conv := func(name string, d kernels.ConvDims) []opCase[B] {
		xn, wn, yn := d.N*d.C*d.H*d.W, d.K*d.C*d.R*d.S, d.N*d.K*d.OutH()*d.OutW()
		return []opCase[B]{
			{name: "Conv2D/" + name, ins: []int{xn, wn, d.K}, outs: []int{yn}, gemm: true,
				run: func(o kernels.Ops[B], out, in []B) { o.Conv2D(out[0], in[0], in[1], in[2], d) }},
			{name: "Conv2DBackwardData/" + name, ins: []int{yn, wn}, outs: []int{xn}, gemm: true,
				run: func(o kernels.Ops[B], out, in []B) { o.Conv2DBackwardData(out[0], in[0], in[1], d) }},
			{name: "Conv2DBackwardFilter/" + name, ins: []int{yn, xn}, outs: []int{wn, d.K}, gemm: true,
				run: func(o kernels.Ops[B], out, in []B) { o.Conv2DBackwardFilter(out[0], out[1], in[0], in[1], d) }},
		}
	}
	gn := func(name string, g kernels.GroupNormDims) []opCase[B] {
		n, ng := g.N*g.C*g.HW, g.N*g.Groups
		return []opCase[B]{
			{name: "GroupNorm/" + name, ins: []int{n, g.C, g.C}, outs: []int{n, ng, ng},
				run: func(o kernels.Ops[B], out, in []B) { o.GroupNorm(out[0], out[1], out[2], in[0], in[1], in[2], g) }},
			{name: "GroupNormBackward/" + name, ins: []int{n, n, g.C, g.C}, outs: []int{n, g.C, g.C},
				run: func(o kernels.Ops[B], out, in []B) {
					y, m, r := o.Alloc(n), o.Alloc(ng), o.Alloc(ng)
					o.GroupNorm(y, m, r, in[1], in[2], in[3], g)
					o.GroupNormBackward(out[0], out[1], out[2], in[0], in[1], m, r, in[2], in[3], g)
					o.Free(y)
					o.Free(m)
					o.Free(r)
				}},
		}
	}
	attn := func(name string, a kernels.AttnDims) []opCase[B] {
		n := a.B * a.T * a.Heads * a.HeadDim
		return []opCase[B]{
			{name: "Attention/" + name, ins: []int{n, n, n}, outs: []int{n}, gemm: true,
				run: func(o kernels.Ops[B], out, in []B) { o.Attention(out[0], in[0], in[1], in[2], a) }},
			{name: "AttentionBackward/" + name, ins: []int{n, n, n, n}, outs: []int{n, n, n}, gemm: true,
				run: func(o kernels.Ops[B], out, in []B) {
					o.AttentionBackward(out[0], out[1], out[2], in[0], in[1], in[2], in[3], a)
				}},
		}
	}
	const n = 10007
	ids := []int{3, 0, 9, 3, 3, 7}
	cs := []opCase[B]{
		{name: "Copy", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.Copy(out[0], in[0], n) }},
		{name: "Fill", outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.Fill(out[0], -2.5, n) }},
		{name: "SiLU", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.SiLU(out[0], in[0], n) }},
		{name: "SiLUBackward", ins: []int{n, n}, outs: []int{n},
			run: func(o kernels.Ops[B], out, in []B) { o.SiLUBackward(out[0], in[0], in[1], n) }},
		{name: "Add", ins: []int{n, n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.Add(out[0], in[0], in[1], n) }},
		{name: "Axpby", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.Axpby(out[0], 0.7, in[0], -1.3, n) }},
		{name: "Axpby/beta0", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.Axpby(out[0], 0.7, in[0], 0, n) }},
		{name: "Mul", ins: []int{n, n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.Mul(out[0], in[0], in[1], n) }},
		{name: "Clamp", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.Clamp(out[0], in[0], -0.5, 0.25, n) }},
		{name: "SumSquares", ins: []int{n}, outs: []int{1},
			run: func(o kernels.Ops[B], out, in []B) { o.Fill(out[0], o.SumSquares(in[0], n), 1) }},
		{name: "AddChannelBias", ins: []int{3 * 5 * 77, 15}, outs: []int{3 * 5 * 77},
			run: func(o kernels.Ops[B], out, in []B) { o.AddChannelBias(out[0], in[0], in[1], 3, 5, 77) }},
		{name: "ChannelSum", ins: []int{3 * 5 * 300}, outs: []int{15},
			run: func(o kernels.Ops[B], out, in []B) { o.ChannelSum(out[0], in[0], 3, 5, 300) }},
		{name: "Upsample2x", ins: []int{2 * 3 * 5 * 7}, outs: []int{2 * 3 * 10 * 14},
			run: func(o kernels.Ops[B], out, in []B) { o.Upsample2x(out[0], in[0], 2, 3, 5, 7) }},
		{name: "Upsample2xBackward", ins: []int{2 * 3 * 10 * 14}, outs: []int{2 * 3 * 5 * 7},
			run: func(o kernels.Ops[B], out, in []B) { o.Upsample2xBackward(out[0], in[0], 2, 3, 5, 7) }},
		{name: "ConcatChannels", ins: []int{2 * 3 * 17, 2 * 5 * 17}, outs: []int{2 * 8 * 17},
			run: func(o kernels.Ops[B], out, in []B) { o.ConcatChannels(out[0], in[0], in[1], 2, 3, 5, 17) }},
		{name: "SplitChannels", ins: []int{2 * 8 * 17}, outs: []int{2 * 3 * 17, 2 * 5 * 17},
			run: func(o kernels.Ops[B], out, in []B) { o.SplitChannels(out[0], out[1], in[0], 2, 3, 5, 17) }},
		{name: "Transpose12", ins: []int{3 * 45 * 70}, outs: []int{3 * 45 * 70},
			run: func(o kernels.Ops[B], out, in []B) { o.Transpose12(out[0], in[0], 3, 45, 70) }},
		{name: "Embedding", ins: []int{10 * 33}, outs: []int{len(ids) * 33},
			run: func(o kernels.Ops[B], out, in []B) { o.Embedding(out[0], in[0], ids, 33) }},
		{name: "EmbeddingBackward", ins: []int{len(ids) * 33}, outs: []int{10 * 33},
			run: func(o kernels.Ops[B], out, in []B) { o.EmbeddingBackward(out[0], in[0], ids, 10, 33) }},
		{name: "AdamW", ins: []int{n}, outs: []int{n, n, n},
			run: func(o kernels.Ops[B], out, in []B) {
				o.Mul(out[2], out[2], out[2], n) // v >= 0
				h := kernels.AdamWParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
				o.AdamW(out[0], out[1], out[2], in[0], h, 3, n)
			}},
		{name: "EMA", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.EMA(out[0], in[0], 0.999, n) }},
		{name: "Dropout", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.Dropout(out[0], in[0], 0.3, 77, 1234, n) }},
		{name: "Norm", ins: []int{n}, outs: []int{1}, run: func(o kernels.Ops[B], out, in []B) { o.Norm(out[0], in[0], n) }},
		{name: "ClipToNorm/clips", ins: []int{n}, outs: []int{n, 1},
			run: func(o kernels.Ops[B], out, in []B) {
				o.Norm(out[1], in[0], n)
				o.Copy(out[0], in[0], n)
				o.ClipToNorm(out[0], out[1], 2, n)
			}},
		{name: "ClipToNorm/keeps", ins: []int{n}, outs: []int{n, 1},
			run: func(o kernels.Ops[B], out, in []B) {
				o.Norm(out[1], in[0], n)
				o.Copy(out[0], in[0], n)
				o.ClipToNorm(out[0], out[1], 1e6, n)
			}},
		{name: "DiffusionLoss/kl-range", ins: []int{4 * 2 * 50, 4 * 50, 4 * 50}, outs: []int{1, 12, 4 * 2 * 50, 4 * kernels.NumLossCoef}, tol: 2e-4,
			run: func(o kernels.Ops[B], out, in []B) {
				o.Upload(out[3], lossCoefs(4, false))
				o.DiffusionLoss(out[0], out[1], out[2], in[0], in[1], in[2], out[3], kernels.DiffusionLossDims{N: 4, D: 50, Learned: true, Range: true})
			}},
		{name: "DiffusionLoss/decoder", ins: []int{3 * 2 * 40, 3 * 40, 3 * 40}, outs: []int{1, 9, 3 * 2 * 40, 3 * kernels.NumLossCoef}, tol: 2e-4,
			run: func(o kernels.Ops[B], out, in []B) {
				o.Upload(out[3], lossCoefs(3, true))
				o.DiffusionLoss(out[0], out[1], out[2], in[0], in[1], in[2], out[3], kernels.DiffusionLossDims{N: 3, D: 40, Learned: true})
			}},
		{name: "DiffusionLoss/simple", ins: []int{5 * 30, 5 * 30, 5 * 30}, outs: []int{1, 15, 5 * 30, 5 * kernels.NumLossCoef},
			run: func(o kernels.Ops[B], out, in []B) {
				c := lossCoefs(5, false)
				for i := 0; i < 5; i++ {
					c[i*kernels.NumLossCoef+kernels.CoefVB] = 0
				}
				o.Upload(out[3], c)
				o.DiffusionLoss(out[0], out[1], out[2], in[0], in[1], in[2], out[3], kernels.DiffusionLossDims{N: 5, D: 30})
			}},
		{name: "Linear", ins: []int{7 * 33, 19 * 33, 19}, outs: []int{7 * 19}, gemm: true,
			run: func(o kernels.Ops[B], out, in []B) { o.Linear(out[0], in[0], in[1], in[2], 7, 33, 19) }},
		{name: "LinearBackward", ins: []int{7 * 19, 7 * 33, 19 * 33}, outs: []int{7 * 33, 19 * 33, 19}, gemm: true,
			run: func(o kernels.Ops[B], out, in []B) {
				o.LinearBackward(out[0], out[1], out[2], in[0], in[1], in[2], 7, 33, 19)
			}},
		{name: "LinearBackward/many-rows", ins: []int{1500 * 19, 1500 * 8, 19 * 8}, outs: []int{1500 * 8, 19 * 8, 19}, gemm: true,
			run: func(o kernels.Ops[B], out, in []B) {
				o.LinearBackward(out[0], out[1], out[2], in[0], in[1], in[2], 1500, 8, 19)
			}},
	}
	cs = append(cs, conv("3x3", kernels.ConvDims{N: 3, C: 5, H: 9, W: 11, K: 7, R: 3, S: 3, StrideH: 1, StrideW: 1,
		PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1})...)
	cs = append(cs, conv("down", kernels.ConvDims{N: 2, C: 4, H: 8, W: 8, K: 4, R: 3, S: 3, StrideH: 2, StrideW: 2,
		PadBottom: 1, PadRight: 1})...)
	// More than 65535 im2col rows (C*R*S*N): the row kernels' grid-row loop.
	cs = append(cs, conv("manyrows", kernels.ConvDims{N: 120, C: 64, H: 4, W: 4, K: 8, R: 3, S: 3, StrideH: 1, StrideW: 1,
		PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1})...)
	cs = append(cs, conv("1x1", kernels.ConvDims{N: 4, C: 6, H: 5, W: 5, K: 3, R: 1, S: 1, StrideH: 1, StrideW: 1})...)
	cs = append(cs, conv("cifar", kernels.ConvDims{N: 4, C: 128, H: 32, W: 32, K: 128, R: 3, S: 3, StrideH: 1, StrideW: 1,
		PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1})...)
	cs = append(cs, gn("silu", kernels.GroupNormDims{N: 3, C: 8, HW: 50, Groups: 4, Eps: 1e-5, SiLU: true})...)
	cs = append(cs, gn("plain", kernels.GroupNormDims{N: 2, C: 64, HW: 256, Groups: 32, Eps: 1e-6})...)
	cs = append(cs, attn("1head", kernels.AttnDims{B: 2, T: 64, Heads: 1, HeadDim: 32, Scale: 1 / float32(math.Sqrt(32))})...)
	cs = append(cs, attn("3heads", kernels.AttnDims{B: 3, T: 37, Heads: 3, HeadDim: 8, Scale: 1 / float32(math.Sqrt(8))})...)
	cs = append(cs, admCases[B]()...)
	return cs
}

// admCases are the ADM (guided-diffusion) ops of kernels/adm.go.
func admCases[B any]() []opCase[B] {
	gnss := func(name string, g kernels.GroupNormDims) []opCase[B] {
		n, ng, nss := g.N*g.C*g.HW, g.N*g.Groups, 2*g.N*g.C
		return []opCase[B]{
			{name: "GroupNormScaleShift/" + name, ins: []int{n, g.C, g.C, nss}, outs: []int{n, ng, ng},
				run: func(o kernels.Ops[B], out, in []B) {
					o.GroupNormScaleShift(out[0], out[1], out[2], in[0], in[1], in[2], in[3], g)
				}},
			{name: "GroupNormScaleShiftBackward/" + name, ins: []int{n, n, g.C, g.C, nss}, outs: []int{n, g.C, g.C, nss}, tol: 2e-5,
				run: func(o kernels.Ops[B], out, in []B) {
					y, m, r := o.Alloc(n), o.Alloc(ng), o.Alloc(ng)
					o.GroupNormScaleShift(y, m, r, in[1], in[2], in[3], in[4], g)
					o.GroupNormScaleShiftBackward(out[0], out[1], out[2], out[3], in[0], in[1], m, r, in[2], in[3], in[4], g)
					o.Free(y)
					o.Free(m)
					o.Free(r)
				}},
		}
	}
	qkv := func(name string, a kernels.QKVAttnDims) []opCase[B] {
		n := a.B * a.Heads * a.HeadDim * a.T
		return []opCase[B]{
			{name: "QKVAttention/" + name, ins: []int{3 * n}, outs: []int{n}, gemm: true,
				run: func(o kernels.Ops[B], out, in []B) { o.QKVAttention(out[0], in[0], a) }},
			{name: "QKVAttentionBackward/" + name, ins: []int{n, 3 * n}, outs: []int{3 * n}, gemm: true,
				run: func(o kernels.Ops[B], out, in []B) { o.QKVAttentionBackward(out[0], in[0], in[1], a) }},
		}
	}
	const n = 10007
	cs := []opCase[B]{
		{name: "AvgPool2x", ins: []int{2 * 3 * 10 * 14}, outs: []int{2 * 3 * 5 * 7},
			run: func(o kernels.Ops[B], out, in []B) { o.AvgPool2x(out[0], in[0], 2, 3, 5, 7) }},
		{name: "AvgPool2xBackward", ins: []int{2 * 3 * 5 * 7}, outs: []int{2 * 3 * 10 * 14},
			run: func(o kernels.Ops[B], out, in []B) { o.AvgPool2xBackward(out[0], in[0], 2, 3, 5, 7) }},
		{name: "AttnPoolTokens", ins: []int{3 * 5 * 64, 5 * 65}, outs: []int{3 * 5 * 65},
			run: func(o kernels.Ops[B], out, in []B) { o.AttnPoolTokens(out[0], in[0], in[1], 3, 5, 64) }},
		{name: "AttnPoolTokensBackward", ins: []int{3 * 5 * 65}, outs: []int{3 * 5 * 64, 5 * 65},
			run: func(o kernels.Ops[B], out, in []B) { o.AttnPoolTokensBackward(out[0], out[1], in[0], 3, 5, 64) }},
		{name: "AttnPoolTokensBackward/no-dpos", ins: []int{3 * 5 * 65}, outs: []int{3 * 5 * 64},
			run: func(o kernels.Ops[B], out, in []B) {
				var zero B
				o.AttnPoolTokensBackward(out[0], zero, in[0], 3, 5, 64)
			}},
		{name: "ChannelMean", ins: []int{3 * 5 * 300}, outs: []int{15},
			run: func(o kernels.Ops[B], out, in []B) { o.ChannelMean(out[0], in[0], 3, 5, 300) }},
		{name: "ChannelMeanBackward", ins: []int{15}, outs: []int{3 * 5 * 300},
			run: func(o kernels.Ops[B], out, in []B) { o.ChannelMeanBackward(out[0], in[0], 3, 5, 300) }},
		{name: "ReLU", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) { o.ReLU(out[0], in[0], n) }},
		{name: "ReLUBackward", ins: []int{n, n}, outs: []int{n},
			run: func(o kernels.Ops[B], out, in []B) { o.ReLUBackward(out[0], in[0], in[1], n) }},
		// GELU on x in [-6, 6): the inputs scaled by 6 first (tails included).
		{name: "GELU", ins: []int{n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) {
			x := o.Alloc(n)
			o.Axpby(x, 6, in[0], 0, n)
			o.GELU(out[0], x, n)
			o.Free(x)
		}},
		{name: "GELUBackward", ins: []int{n, n}, outs: []int{n}, run: func(o kernels.Ops[B], out, in []B) {
			x := o.Alloc(n)
			o.Axpby(x, 6, in[1], 0, n)
			o.GELUBackward(out[0], in[0], x, n)
			o.Free(x)
		}},
	}
	cs = append(cs, gnss("silu", kernels.GroupNormDims{N: 3, C: 8, HW: 50, Groups: 4, Eps: 1e-5, SiLU: true})...)
	cs = append(cs, gnss("plain", kernels.GroupNormDims{N: 2, C: 64, HW: 64, Groups: 32, Eps: 1e-5})...)
	cs = append(cs, qkv("new", kernels.QKVAttnDims{B: 2, T: 37, Heads: 3, HeadDim: 8, Scale: 1 / float32(math.Sqrt(8))})...)
	cs = append(cs, qkv("legacy", kernels.QKVAttnDims{B: 3, T: 16, Heads: 2, HeadDim: 16, Legacy: true, Scale: 0.25})...)
	return cs
}

// lossCoefs returns DiffusionLoss coefficient rows of a plausible
// timestep (epsilon prediction, hybrid weights) for n examples, with the
// decoder term (t = 0) or a KL term.
func lossCoefs(n int, decoder bool) []float32 {
	row := make([]float32, kernels.NumLossCoef)
	row[kernels.CoefTargetNoise] = 1
	row[kernels.CoefSqrtAB], row[kernels.CoefSqrt1mAB] = 0.8, 0.6
	row[kernels.CoefX0FromXt], row[kernels.CoefX0FromOut] = 1.25, -0.75
	row[kernels.CoefMean1], row[kernels.CoefMean2] = 0.3, 0.69
	row[kernels.CoefPostLogVar], row[kernels.CoefMinLogVar], row[kernels.CoefMaxLogVar] = -4.5, -4.5, -4.1
	row[kernels.CoefMSE], row[kernels.CoefVB], row[kernels.CoefStopMean] = 1, 1, 0
	if decoder {
		row[kernels.CoefSqrtAB], row[kernels.CoefSqrt1mAB] = 0.99995, 0.01
		row[kernels.CoefX0FromXt], row[kernels.CoefX0FromOut] = 1.00005, -0.01
		row[kernels.CoefMean1], row[kernels.CoefMean2] = 1, 0
		row[kernels.CoefMinLogVar], row[kernels.CoefMaxLogVar] = -9.9, -9.2
		row[kernels.CoefDecoder] = 1
	}
	out := make([]float32, 0, n*kernels.NumLossCoef)
	for i := 0; i < n; i++ {
		row[kernels.CoefWeight] = float32(i+1) / float32(n)
		out = append(out, row...)
	}
	return out
}

const guard = 64 // NaN guard band on each side of every GPU buffer

// tolerance is an elementwise bound: |got - want| <= Abs + Rel |want|.
type tolerance struct{ Abs, Rel float64 }

// scaled is the tolerance eps (rms(want) + |want|): relative to each
// value, with an absolute floor at the output's scale, for values that
// come out near zero from sums of larger terms.
func scaled(eps float64, want []float32) tolerance {
	return tolerance{Abs: eps * rms(want), Rel: eps}
}

func rms(v []float32) float64 {
	var s float64
	for _, x := range v {
		if x == x {
			s += float64(x) * float64(x)
		}
	}
	if len(v) == 0 {
		return 0
	}
	return math.Sqrt(s / float64(len(v)))
}

// mismatch compares got with want elementwise under tol and returns the
// number of values out of tolerance, the worst ratio |got - want| /
// (Abs + Rel |want|) (1 is the bound; NaN where only one side is NaN
// counts as +Inf) and its index.
func mismatch(got, want []float32, tol tolerance) (bad int, worst float64, at int) {
	at = -1
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(w) && math.IsNaN(g) {
			continue
		}
		r := math.Abs(g-w) / (tol.Abs + tol.Rel*math.Abs(w))
		if math.IsNaN(r) || math.IsNaN(g) != math.IsNaN(w) {
			r = math.Inf(1)
		}
		if g == w {
			r = 0
		}
		if r > 1 {
			bad++
		}
		if r > worst || at < 0 {
			worst, at = r, i
		}
	}
	return bad, worst, at
}

// equal reports whether two vectors hold the same bits.
func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 2*r.Float32() - 1
	}
	return v
}

// checkOps runs every case on d and on the CPU and compares.
func checkOps(t *testing.T, d *Device) { checkOpsMatching(t, d, "") }

// checkOpsMatching runs the cases whose name starts with prefix and
// compares every output elementwise: |got - want| <= eps (rms(want) +
// |want|), eps fp32Eps (or the case's own), gemmEps for the GEMM and
// convolution ops in d's precision.
func checkOpsMatching(t *testing.T, d *Device, prefix string) {
	cpu := newCPU(t)
	cc, gc := opCases[[]float32](), opCases[Ptr]()
	for i := range cc {
		c, g := cc[i], gc[i]
		if !strings.HasPrefix(c.name, prefix) {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			if emulated && strings.Contains(c.name, "cifar") {
				t.Skip("CIFAR-size case: too slow on the CPU emulator")
			}
			r := rand.New(rand.NewPCG(uint64(i), 7))
			tol := fp32Eps
			if c.tol > 0 {
				tol = c.tol
			}
			if c.gemm {
				tol = max(tol, gemmEps(d.Precision()))
			}
			hostIn := make([][]float32, len(c.ins))
			for j, n := range c.ins {
				hostIn[j] = randVec(r, n)
			}
			hostOut := make([][]float32, len(c.outs))
			for j, n := range c.outs {
				hostOut[j] = randVec(r, n)
			}
			// GPU buffers: NaN guard bands around each.
			nan := float32(math.NaN())
			mk := func(v []float32) (Ptr, Ptr) {
				full := d.Alloc(len(v) + 2*guard)
				band := make([]float32, len(v)+2*guard)
				for k := range band {
					band[k] = nan
				}
				copy(band[guard:], v)
				d.Upload(full, band)
				return full, d.Slice(full, guard, len(v))
			}
			var fullIn, fullOut, gin, gout []Ptr
			for _, v := range hostIn {
				f, s := mk(v)
				fullIn, gin = append(fullIn, f), append(gin, s)
			}
			for _, v := range hostOut {
				f, s := mk(v)
				fullOut, gout = append(fullOut, f), append(gout, s)
			}
			cin := make([][]float32, len(hostIn))
			for j := range hostIn {
				cin[j] = append([]float32(nil), hostIn[j]...)
			}
			cout := make([][]float32, len(hostOut))
			for j := range hostOut {
				cout[j] = append([]float32(nil), hostOut[j]...)
			}
			c.run(cpu, cout, cin)
			if err := cpu.Sync(); err != nil {
				t.Fatalf("cpu: %v", err)
			}
			g.run(d, gout, gin)
			if err := d.Sync(); err != nil {
				t.Fatalf("gpu: %v", err)
			}
			worst := 0.0
			for j, f := range fullOut {
				all := make([]float32, len(hostOut[j])+2*guard)
				d.Download(all, f)
				for k := 0; k < guard; k++ {
					if !isNaN(all[k]) || !isNaN(all[len(all)-1-k]) {
						t.Fatalf("output %d: write outside the buffer (guard band %d touched)", j, k)
					}
				}
				got := all[guard : guard+len(hostOut[j])]
				bad, w, at := mismatch(got, cout[j], scaled(tol, cout[j]))
				worst = math.Max(worst, w)
				if bad > 0 {
					t.Errorf("output %d: %d of %d values out of tolerance eps %.1g (abs %.2g + rel %.1g); worst [%d] = %.7g, want %.7g",
						j, bad, len(got), tol, tol*rms(cout[j]), tol, at, got[at], cout[j][at])
				}
			}
			for j, f := range fullIn {
				all := make([]float32, len(hostIn[j])+2*guard)
				d.Download(all, f)
				if !equal(all[guard:guard+len(hostIn[j])], hostIn[j]) {
					t.Errorf("input %d modified", j)
				}
			}
			t.Logf("op %-32s worst %.3g of tol eps %.1g (%s)", c.name, worst, tol, d.Precision())
			for _, f := range append(fullIn, fullOut...) {
				d.Free(f)
			}
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func isNaN(v float32) bool { return v != v }

// TestOpsFP32 compares every op with kernels.CPU in strict float32
// (eps 1e-5), and logs the cuDNN algorithm choices.
func TestOpsFP32(t *testing.T) {
	d := openTest(t, "fp32")
	checkOps(t, d)
	logConvEngine(t, d)
}

func logConvEngine(t *testing.T, d *Device) {
	e, why, fb := d.ConvEngine()
	t.Logf("convolution engine %s %s; cuDNN fallbacks: %q", e, why, fb)
	for _, c := range d.ConvChoices() {
		t.Logf("cudnn choice (%s): %s", d.Precision(), c)
	}
	if len(fb) > 0 && emulated {
		t.Errorf("cuDNN fell back to im2col: %q", fb)
	}
}

// TestOpsTF32 repeats the comparison with TF32 GEMMs and convolutions
// (eps 8 * 2^-11 for them).
func TestOpsTF32(t *testing.T) {
	d := openTest(t, "tf32")
	checkOps(t, d)
	logConvEngine(t, d)
}

// TestOpsBF16 runs the GEMMs on bfloat16 inputs (cublasGemmEx with
// CUBLAS_COMPUTE_32F_FAST_16BF; convolutions as im2col + those GEMMs):
// eps 8 * 2^-8 for them, every other op float32.
func TestOpsBF16(t *testing.T) {
	d := openTest(t, "bf16")
	if e, _, _ := d.ConvEngine(); e != "im2col" {
		t.Errorf("ConvEngine = %s in bf16, want im2col", e)
	}
	checkOps(t, d)
}

// TestOpsFP16 runs the GEMMs on half inputs (CUBLAS_COMPUTE_32F_FAST_16F)
// and the cuDNN convolutions with CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
// eps 8 * 2^-11.
func TestOpsFP16(t *testing.T) {
	d := openTest(t, "fp16")
	checkOps(t, d)
	logConvEngine(t, d)
}

// TestConvChunks forces several im2col chunks per call.
func TestConvChunks(t *testing.T) {
	checkOpsMatching(t, openTestWith(t, Options{Precision: "fp32", Conv: "im2col", ConvWorkspace: 1 << 14}), "Conv")
}

// TestConvAutotune runs the convolutions with ConvAutotune (every
// candidate chunking must give the same results).
func TestConvAutotune(t *testing.T) {
	checkOpsMatching(t, openTestWith(t, Options{Precision: "fp32", Conv: "im2col", ConvAutotune: true}), "Conv")
}

// TestConvIm2col checks the im2col + GEMM convolutions (the default runs
// cuDNN where it loads, and im2col only for asymmetric padding).
func TestConvIm2col(t *testing.T) {
	d := openTestWith(t, Options{Precision: "fp32", Conv: "im2col"})
	if e, _, _ := d.ConvEngine(); e != "im2col" {
		t.Fatalf("ConvEngine = %s with Options.Conv im2col", e)
	}
	checkOpsMatching(t, d, "Conv")
}

// TestGroupNormKernel1 checks the GroupNorm kernels that read the group
// from global memory in each pass (the default caches it in shared memory).
func TestGroupNormKernel1(t *testing.T) {
	checkOpsMatching(t, openTestWith(t, Options{Precision: "fp32", GroupNormKernel: 1}), "GroupNorm")
}

// TestCasesOnCPU runs every case through kernels.CPU twice, checking the
// harness itself (and that the cases are deterministic) without a GPU.
func TestCasesOnCPU(t *testing.T) {
	cpu := newCPU(t)
	for i, c := range opCases[[]float32]() {
		var res [2][][]float32
		for k := range res {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			in := make([][]float32, len(c.ins))
			for j, n := range c.ins {
				in[j] = randVec(r, n)
			}
			out := make([][]float32, len(c.outs))
			for j, n := range c.outs {
				out[j] = randVec(r, n)
			}
			c.run(cpu, out, in)
			if err := cpu.Sync(); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			res[k] = out
		}
		for j := range res[0] {
			if !equal(res[1][j], res[0][j]) {
				t.Errorf("%s: output %d differs between runs", c.name, j)
			}
		}
	}
}

// TestOpenErrors checks the argument errors that need no GPU.
func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Precision: "fp8"}, `cuda: Options.Precision = "fp8": allowed are fp32, tf32, bf16, fp16`},
		{Options{Precision: "bf16", Conv: "cudnn"}, "cuda: Options.Conv = cudnn with Precision bf16: cuDNN's convolution API cannot down-convert float32 to bfloat16 (use Conv auto or im2col, or Precision fp16)"},
		{Options{CacheLimit: -1}, "cuda: Options.CacheLimit = -1: must be >= 0"},
		{Options{GroupNormKernel: 3}, "cuda: Options.GroupNormKernel = 3: allowed are 0 (auto), 1, 2"},
		{Options{Conv: "winograd"}, `cuda: Options.Conv = "winograd": allowed are auto, cudnn, im2col`},
		{Options{ConvWorkspace: -5}, "cuda: Options.ConvWorkspace = -5: must be >= 0 (0 means 512 MiB)"},
	} {
		_, err := Open(0, tc.opts)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Open(%+v) = %v, want %s", tc.opts, err, tc.want)
		}
	}
}

// TestNoGPUError: without a driver, Open names what it tried.
func TestNoGPUError(t *testing.T) {
	d, err := Open(0, Options{})
	if err == nil {
		d.Close()
		t.Skip("a GPU is present")
	}
	if !errors.Is(err, ErrNoDriver) && !errors.Is(err, ErrNoDevice) && !errors.Is(err, ErrNoCUBLAS) {
		t.Fatalf("Open without a GPU: %v is not ErrNoDriver/ErrNoDevice/ErrNoCUBLAS", err)
	}
	t.Logf("%v", err)
}

func ExampleOpen() {
	d, err := Open(0, Options{Precision: "tf32"})
	if err != nil {
		fmt.Println("no GPU; use kernels.CPU")
		return
	}
	defer d.Close()
	x := d.Alloc(4)
	d.Upload(x, []float32{-2, -1, 1, 2})
	d.SiLU(x, x, 4)
	out := make([]float32, 4)
	d.Download(out, x)
	fmt.Println(d.Sync() == nil)
}

// TestCUDNNErrors checks the cuDNN error path (status strings) and that a
// shape cuDNN rejects falls back to im2col instead of failing the op.
func TestCUDNNErrors(t *testing.T) {
	d := openTest(t, "fp32")
	if d.dnn == nil {
		t.Skip("no cuDNN")
	}
	err := d.dnn.api.errorf("test", 3)
	if !strings.Contains(err.Error(), "status 3") || len(err.Error()) < len("cuda: cuDNN test: status 3 x") {
		t.Fatalf("errorf = %q, want the status and its cuDNN string", err)
	}
	t.Logf("%v", err)
	if !emulated {
		return
	}
	// The emulator's cuDNN refuses K = 13: the op must still be right.
	cpu := newCPU(t)
	dd := kernels.ConvDims{N: 2, C: 3, H: 5, W: 5, K: 13, R: 3, S: 3, StrideH: 1, StrideW: 1, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}
	r := rand.New(rand.NewPCG(9, 9))
	x, w := randVec(r, 2*3*25), randVec(r, 13*3*9)
	want := make([]float32, 2*13*25)
	cpu.Conv2D(want, x, w, nil, dd)
	px, pw, py := d.Alloc(len(x)), d.Alloc(len(w)), d.Alloc(len(want))
	d.Upload(px, x)
	d.Upload(pw, w)
	d.Conv2D(py, px, pw, 0, dd)
	got := make([]float32, len(want))
	d.Download(got, py)
	if err := d.Sync(); err != nil {
		t.Fatalf("Conv2D with a shape cuDNN refuses: %v", err)
	}
	if bad, w, at := mismatch(got, want, scaled(fp32Eps, want)); bad > 0 {
		t.Fatalf("fallback Conv2D: %d values out of tolerance, worst %.3g of eps 1e-5 at %d", bad, w, at)
	}
	if _, _, fb := d.ConvEngine(); len(fb) != 1 || !strings.Contains(fb[0], "status 9") {
		t.Fatalf("ConvEngine fallbacks = %q, want the refused shape", fb)
	}
}
