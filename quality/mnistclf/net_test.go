package mnistclf

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestGradientFiniteDifference compares backward with central differences
// (L(p+h) − L(p−h)) / 2h on every parameter tensor, for a random input.
// The loss is float32 arithmetic and ReLU/max-pool kinks make large steps
// unreliable, so h = 2e-4 and the check is |analytic − numeric| <=
// 5e-3 + 2e-2·|numeric| (float32 rounding of a loss near 2.3 is about
// 1e-6/h = 5e-3 in the quotient).
func TestGradientFiniteDifference(t *testing.T) {
	c := New(3)
	r := rand.New(rand.NewPCG(7, 8))
	s := &work{}
	for i := range s.in {
		s.in[i] = float32(r.Float64()*2 - 1)
	}
	const label = 4
	loss := func() float64 {
		forward(c.p, s)
		return lossAndGrad(s, label)
	}
	g := make([]float32, nParam)
	loss()
	backward(c.p, g, s)
	lo := 0
	for k, n := range tensorSizes {
		for range 12 {
			j := lo + r.IntN(n)
			const h = 2e-4
			orig := c.p[j]
			c.p[j] = orig + h
			lp := loss()
			c.p[j] = orig - h
			lm := loss()
			c.p[j] = orig
			num := (lp - lm) / (2 * h)
			if math.Abs(float64(g[j])-num) > 5e-3+2e-2*math.Abs(num) {
				t.Errorf("tensor %d param %d: analytic %.6g, numeric %.6g", k, j, g[j], num)
			}
		}
		lo += n
	}
}

// TestMaxPoolAndConvTwins compares the layer functions with obviously
// correct direct formulas on seeded input.
func TestMaxPoolAndConvTwins(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const cin, cout, hin = 3, 2, 7
	ho := hin - kSize + 1
	in := make([]float32, cin*hin*hin)
	w := make([]float32, cout*cin*kSize*kSize)
	b := []float32{0.5, -0.25}
	for i := range in {
		in[i] = float32(r.NormFloat64())
	}
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	out := make([]float32, cout*ho*ho)
	convValid(out, in, w, b, cin, cout, hin)
	for o := range cout {
		for y := range ho {
			for x := range ho {
				want := float64(b[o])
				for c := range cin {
					for ky := range kSize {
						for kx := range kSize {
							want += float64(w[((o*cin+c)*kSize+ky)*kSize+kx]) * float64(in[(c*hin+y+ky)*hin+x+kx])
						}
					}
				}
				if got := out[(o*ho+y)*ho+x]; math.Abs(float64(got)-want) > 1e-4+1e-5*math.Abs(want) {
					t.Fatalf("conv (%d,%d,%d) = %v, want %v", o, y, x, got, want)
				}
			}
		}
	}
	pin := []float32{1, 5, 2, 0, 3, 2, 9, 1, 0, 0, -1, -2, 4, 7, -3, -4}
	pout := make([]float32, 4)
	idx := make([]int32, 4)
	maxPool2(pout, idx, pin, 1, 4)
	want := []float32{5, 9, 7, -1}
	wantIdx := []int32{1, 6, 13, 10}
	for i := range want {
		if pout[i] != want[i] || idx[i] != wantIdx[i] {
			t.Fatalf("pool %d = %v@%d, want %v@%d", i, pout[i], idx[i], want[i], wantIdx[i])
		}
	}
}
