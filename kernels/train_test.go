package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDropout checks the kept fraction, the scale, determinism and that a
// batch split at any offset draws the same mask as the whole.
func TestDropout(t *testing.T) {
	c := newTestCPU(t)
	const n, p = 100000, 0.3
	x := make([]float32, n)
	for i := range x {
		x[i] = 1
	}
	y := make([]float32, n)
	c.Dropout(y, x, p, 42, 0, n)
	kept := 0
	for _, v := range y {
		switch v {
		case 0:
		case float32(1 / (1 - p)):
			kept++
		default:
			t.Fatalf("value %v: want 0 or 1/(1-p)", v)
		}
	}
	// Binomial(n, 0.7): standard deviation 145.
	if f := float64(kept) / n; math.Abs(f-(1-p)) > 0.006 {
		t.Fatalf("kept fraction %v, want %v", f, 1-p)
	}
	part := make([]float32, 1000)
	c.Dropout(part, x[:1000], p, 42, 5000, 1000)
	for i := range part {
		if part[i] != y[5000+i] {
			t.Fatalf("offset 5000: element %d = %v, the whole batch has %v", i, part[i], y[5000+i])
		}
	}
	other := make([]float32, n)
	c.Dropout(other, x, p, 43, 0, n)
	same := 0
	for i := range y {
		if y[i] == other[i] {
			same++
		}
	}
	if same > n*62/100 { // independent masks agree on 0.7^2 + 0.3^2 = 58%
		t.Fatalf("seeds 42 and 43 agree on %d of %d elements", same, n)
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	c.Dropout(y, x, 1, 1, 0, n)
	if c.Sync() == nil {
		t.Fatal("p = 1: no error")
	}
}

// TestDiffusionLossGradient checks dout against central differences of
// the batch loss for every branch: fixed and learned (range) variances,
// KL and decoder terms, with and without the mean's gradient stopped.
func TestDiffusionLossGradient(t *testing.T) {
	c := newTestCPU(t)
	for _, tc := range []struct {
		name                   string
		learned, rng, decoder  bool
		stop                   bool
		mse, vb, post, lo, hi  float32
		sa, sb, cx, co, c1, c2 float32
	}{
		{"simple", false, false, false, false, 1, 0, 0, 0, 0, 0.8, 0.6, 1.25, -0.75, 0.3, 0.69},
		{"vlb-fixed", false, false, false, false, 0, 1000, -4.5, -4.5, 0, 0.8, 0.6, 1.25, -0.75, 0.3, 0.69},
		{"hybrid-range", true, true, false, true, 1, 1, -4.5, -4.5, -4.1, 0.8, 0.6, 1.25, -0.75, 0.3, 0.69},
		{"vlb-learned", true, false, false, false, 0, 1, -4.5, 0, 0, 0.8, 0.6, 1.25, -0.75, 0.3, 0.69},
		{"decoder-range", true, true, true, false, 1, 1, -9.9, -9.9, -9.2, 0.99995, 0.01, 1.00005, -0.01, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const N, D = 3, 20
			per := D
			if tc.learned {
				per = 2 * D
			}
			r := rand.New(rand.NewPCG(9, 9))
			x0, noise, out := make([]float32, N*D), make([]float32, N*D), make([]float32, N*per)
			for i := range x0 {
				x0[i] = float32(math.Round(float64(r.IntN(256)))/127.5 - 1) // on the 8-bit grid
				noise[i] = float32(r.NormFloat64())
			}
			for i := range out {
				out[i] = float32(0.5 * r.NormFloat64())
			}
			coef := make([]float32, N*NumLossCoef)
			for i := range N {
				k := coef[i*NumLossCoef : (i+1)*NumLossCoef]
				k[CoefTargetNoise], k[CoefSqrtAB], k[CoefSqrt1mAB] = 1, tc.sa, tc.sb
				k[CoefX0FromXt], k[CoefX0FromOut], k[CoefMean1], k[CoefMean2] = tc.cx, tc.co, tc.c1, tc.c2
				k[CoefPostLogVar], k[CoefMinLogVar], k[CoefMaxLogVar] = tc.post, tc.lo, tc.hi
				k[CoefMSE], k[CoefVB], k[CoefWeight] = tc.mse, tc.vb, float32(i+1)/N
				if tc.decoder {
					k[CoefDecoder] = 1
				}
				if tc.stop {
					k[CoefStopMean] = 1
				}
			}
			d := DiffusionLossDims{N: N, D: D, Learned: tc.learned, Range: tc.rng}
			loss, terms, dout := make([]float32, 1), make([]float32, 3*N), make([]float32, N*per)
			c.DiffusionLoss(loss, terms, dout, out, x0, noise, coef, d)
			if err := c.Sync(); err != nil {
				t.Fatal(err)
			}
			// The batch loss in float64 (the kernel's float32 output is too
			// coarse for central differences).
			f := func(o []float32) float64 {
				g := make([]float32, per)
				var sum float64
				for i := range N {
					k := coef[i*NumLossCoef : (i+1)*NumLossCoef]
					l, _, _ := diffusionLossExample(g, o[i*per:(i+1)*per], x0[i*D:(i+1)*D], noise[i*D:(i+1)*D], k, d)
					sum += float64(k[CoefWeight]) * l
				}
				return sum
			}
			if got := f(out); math.Abs(got-float64(loss[0])) > 1e-6*math.Abs(got) {
				t.Fatalf("batch loss %v, sum of weighted terms %v", loss[0], got)
			}
			for _, j := range []int{0, 7, per - 1, per + 3, N*per - 1} {
				if tc.stop && j%per < D {
					continue // the mean's gradient of the VB term is stopped on purpose
				}
				o := append([]float32(nil), out...)
				const h = 1e-3
				o[j] = out[j] + h
				fp, up := f(o), o[j]
				o[j] = out[j] - h
				fm, lo := f(o), o[j]
				num := (fp - fm) / float64(up-lo)
				if got := float64(dout[j]); math.Abs(got-num) > 2e-3*math.Max(1e-3, math.Abs(num))+2e-5 {
					t.Errorf("dout[%d] = %.6g, central difference %.6g", j, got, num)
				}
			}
		})
	}
}

func newTestCPU(t *testing.T) *CPU {
	t.Helper()
	c, err := NewCPU(CPUOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
