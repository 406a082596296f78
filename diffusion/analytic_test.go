package diffusion

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpm-go/ddpm/schedule"
)

// gaussModel is the Bayes-optimal network for data x_0 ~ N(mu, s^2) i.i.d.
// per pixel: x_t = sqrt(ab) x_0 + sqrt(1-ab) eps is jointly Gaussian with
// x_0, so E[x_0 | x_t] = mu + s^2 sqrt(ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)
// and Var(x_0 | x_t) = s^2 (1 - ab) / (ab s^2 + 1 - ab). It predicts the
// epsilon, x_0 or v implied by E[x_0 | x_t], and for a learned variance the
// exact log Var(x_{t-1} | x_t) = log(betatilde_t + coef1_t^2 Var(x_0 | x_t)).
type gaussModel struct {
	mu, s float64
	pred  Prediction
	learn bool // output 2C channels with the exact log variance
	s0    *schedule.Schedule
	calls int
}

func (g *gaussModel) moments(t int) (a, b, v float64) {
	ab := g.s0.AlphasCumprod[t]
	s2 := g.s * g.s
	den := ab*s2 + 1 - ab
	a = s2 * math.Sqrt(ab) / den // E[x0|xt] = mu + a (xt - sqrt(ab) mu)
	v = s2 * (1 - ab) / den
	return a, math.Sqrt(ab), v
}

func (g *gaussModel) Predict(ctx context.Context, x Batch, tf []float64, y []int) (Batch, error) {
	t := make([]int, len(tf))
	for i, v := range tf {
		t[i] = int(v)
	}
	g.calls++
	c := x.C
	if g.learn {
		c *= 2
	}
	out := NewBatch(x.N, c, x.H, x.W)
	D := x.C * x.H * x.W
	for i := range x.N {
		tt := t[i]
		a, sab, v := g.moments(tt)
		ab := g.s0.AlphasCumprod[tt]
		base := i * out.C * x.H * x.W
		for j := range D {
			xt := float64(x.Data[i*D+j])
			x0 := g.mu + a*(xt-sab*g.mu)
			eps := (xt - sab*x0) / math.Sqrt(1-ab)
			var o float64
			switch g.pred {
			case PredictX0:
				o = x0
			case PredictV:
				o = sab*eps - math.Sqrt(1-ab)*x0
			default:
				o = eps
			}
			out.Data[base+j] = float32(o)
			if g.learn {
				c1 := g.s0.PosteriorMeanCoef1[tt]
				out.Data[base+D+j] = float32(math.Log(g.s0.PosteriorVariance[tt] + c1*c1*v))
			}
		}
	}
	return out, nil
}

func newGauss(mu, s float64, pred Prediction, learn bool, s0 *schedule.Schedule) *gaussModel {
	return &gaussModel{mu: mu, s: s, pred: pred, learn: learn, s0: s0}
}

// gaussData fills a batch with x_0 ~ N(mu, s^2).
func gaussData(rng *rand.Rand, n, c, h, w int, mu, s float64) Batch {
	b := NewBatch(n, c, h, w)
	for i := range b.Data {
		b.Data[i] = float32(mu + s*rng.NormFloat64())
	}
	return b
}

// TestAnalyticNLL checks the bits/dim of the Bayes-optimal model for
// Gaussian data against the closed form. With p(x_{t-1} | x_t) equal to the
// true reverse conditional q(x_{t-1} | x_t), the expected bound is
//
//	E[L] = H(x_0) - H(x_0 | x_1) + KL(q(x_T) || N(0, 1)) + E[-log P_bin(x_0 | x_1)]
//
// (all but the decoder telescope), where the decoder term is a 1-D integral
// over the residual r = x_0 - E[x_0 | x_1] ~ N(0, v_0) of
// -log(Phi((r + 1/255)/sqrt(v_0)) - Phi((r - 1/255)/sqrt(v_0))). The
// per-pixel -log q(x_0) is used as a control variate to reduce Monte-Carlo
// noise.
func TestAnalyticNLL(t *testing.T) {
	const mu, s = 0.1, 0.25
	T := 100
	if testing.Short() {
		T = 40
	}
	cfg := DefaultConfig()
	cfg.Timesteps, cfg.Variance, cfg.ClipDenoised = T, Learned, false
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	x0 := gaussData(rng, 16, 1, 32, 32, mu, s)
	m := newGauss(mu, s, PredictEpsilon, true, d.Schedule())
	calls := 0
	res, err := d.NLL(context.Background(), m, x0, nil, rng, func(done, total int) {
		calls++
		if total != T || done != calls {
			t.Fatalf("progress(%d, %d) at call %d", done, total, calls)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != T || m.calls != T {
		t.Fatalf("%d progress calls, %d model calls, want %d", calls, m.calls, T)
	}
	// Closed form, nats per dim.
	s0 := d.Schedule()
	hx0 := 0.5 * math.Log(2*math.Pi*math.E*s*s)
	_, _, v0 := m.moments(0)
	hx0x1 := 0.5 * math.Log(2*math.Pi*math.E*v0)
	abT := s0.AlphasCumprod[T-1]
	klPrior := NormalKL(math.Sqrt(abT)*mu, math.Log(abT*s*s+1-abT), 0, 0)
	sig := math.Sqrt(v0)
	dec := 0.0
	n := 20000
	for i := 0; i <= n; i++ {
		r := -10*sig + 20*sig*float64(i)/float64(n)
		w := math.Exp(-r*r/(2*v0)) / math.Sqrt(2*math.Pi*v0) * 20 * sig / float64(n)
		a, b := (r+1.0/255)/sig, (r-1.0/255)/sig
		p := StdNormalCDF(a) - StdNormalCDF(b)
		if r > 0 {
			p = StdNormalCDF(-b) - StdNormalCDF(-a)
		}
		dec -= w * math.Log(p)
	}
	want := (hx0 - hx0x1 + klPrior + dec) / math.Ln2
	// Control variate: replace the sample's -log q(x_0) by its mean H(x_0).
	cv := 0.0
	for _, v := range x0.Data {
		z := (float64(v) - mu) / s
		cv += 0.5*math.Log(2*math.Pi*s*s) + 0.5*z*z
	}
	cv /= float64(len(x0.Data))
	got := res.MeanBPD() - (cv-hx0)/math.Ln2
	t.Logf("bits/dim: raw %.4f, with control variate %.4f, closed form %.4f (decoder %.4f, prior %.2g)", res.MeanBPD(), got, want, dec/math.Ln2, klPrior/math.Ln2)
	// Monte-Carlo standard error is about 0.01 bits/dim (16384 pixels).
	if math.Abs(got-want) > 0.04 {
		t.Errorf("NLL %.4f bits/dim, closed form %.4f", got, want)
	}
	for i, p := range res.PriorBPD {
		if !(p >= 0) || len(res.Terms) != T {
			t.Fatalf("prior %d = %v", i, p)
		}
	}
}

// TestAnalyticLSimple checks that the Bayes-optimal predictor reaches the
// irreducible L_simple: E[(eps - E[eps | x_t])^2] = Var(eps | x_t)
// = ab s^2 / (ab s^2 + 1 - ab), for every prediction type (with targets
// scaled accordingly: x_0's error is Var(x_0 | x_t) and v's is
// Var(eps | x_t) / ab, since v's error is eps's over sqrt(ab)).
func TestAnalyticLSimple(t *testing.T) {
	const mu, s = -0.2, 0.4
	for _, pred := range []Prediction{PredictEpsilon, PredictX0, PredictV} {
		cfg := DefaultConfig()
		cfg.Prediction = pred
		d, _ := New(cfg)
		rng := rand.New(rand.NewPCG(9, uint64(pred)))
		for _, tt := range []int{10, 300, 900} {
			n := 16
			x0 := gaussData(rng, n, 1, 16, 16, mu, s)
			noise := gaussData(rng, n, 1, 16, 16, 0, 1)
			ts := make([]int, n)
			for i := range ts {
				ts[i] = tt
			}
			xt, _ := d.QSample(x0, noise, ts)
			m := newGauss(mu, s, pred, false, d.Schedule())
			out, _ := m.Predict(context.Background(), xt, floats(ts), nil)
			terms, _, err := d.TrainingLoss(out, x0, noise, ts, nil)
			if err != nil {
				t.Fatal(err)
			}
			mse := 0.0
			for _, v := range terms.MSE {
				mse += v / float64(n)
			}
			ab := d.Schedule().AlphasCumprod[tt]
			veps := ab * s * s / (ab*s*s + 1 - ab)
			want := veps
			switch pred {
			case PredictX0:
				want = veps * (1 - ab) / ab
			case PredictV:
				want = veps / ab
			}
			se := want * math.Sqrt(2/float64(n*256))
			if math.Abs(mse-want) > 5*se {
				t.Errorf("%s t=%d: L_simple %.5g, irreducible %.5g (se %.2g)", pred, tt, mse, want, se)
			}
		}
	}
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed+1)) }

func TestNLLCancel(t *testing.T) {
	d := gaussDiffusion(t, 50, FixedSmall)
	m := newGauss(0, 0.5, PredictEpsilon, false, d.Schedule())
	ctx, cancel := context.WithCancel(context.Background())
	x0 := gaussData(newRNG(1), 1, 1, 4, 4, 0, 0.5)
	_, err := d.NLL(ctx, m, x0, nil, newRNG(2), func(done, total int) {
		if done == 2 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || m.calls != 2 {
		t.Fatalf("err %v after %d calls, want context.Canceled after 2", err, m.calls)
	}
	if _, err := d.NLL(context.Background(), m, x0, []int{1, 2}, newRNG(2), nil); err == nil {
		t.Error("wrong label count accepted")
	}
}
