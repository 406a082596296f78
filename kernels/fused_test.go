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

// TestFusedLinears: LinearFromChannels and LinearToChannels against the
// float64 twins of the sequences they replace (Transpose12 then Linear;
// Linear, Transpose12, then Add), with and without bias and residual, on
// odd sizes and on every backend.
func TestFusedLinears(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range backends(t) {
		for _, s := range []struct{ n, t, in, out int }{{1, 5, 3, 4}, {3, 17, 24, 33}, {4, 64, 32, 48}} {
			x, w, b := rnd(r, s.n*s.in*s.t), rnd(r, s.out*s.in), rnd(r, s.out)
			res := rnd(r, s.n*s.out*s.t)
			for _, withB := range []bool{true, false} {
				bb, b64 := b, f64(b)
				if !withB {
					bb, b64 = nil, make([]float64, s.out)
				}
				// LinearFromChannels: x is (N, In, T).
				y := newOut(s.n * s.t * s.out)
				c.LinearFromChannels(y.v(), x, w, bb, s.n, s.t, s.in, s.out)
				if err := c.Sync(); err != nil {
					t.Fatal(err)
				}
				want := refLinear(transpose64(f64(x), s.n, s.in, s.t), f64(w), b64, s.n*s.t, s.in, s.out)
				near(t, c.Name()+" LinearFromChannels", y.v(), want, 1e-5, 1e-5)
				y.checkGuard(t, "LinearFromChannels y")

				// LinearToChannels: tokens (N, T, In), with and without r.
				tok := x // reuse the values as (N, T, In)
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
				g, be, g64, be64 := gamma, beta, f64(gamma), f64(beta)
				if !affine {
					g, be = nil, nil
					g64, be64 = make([]float64, d.C), make([]float64, d.C)
					for i := range g64 {
						g64[i] = 1
					}
				}
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
