package diffusion

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func allConfigs(T int) []Config {
	var cs []Config
	for _, p := range []Prediction{PredictEpsilon, PredictX0, PredictV} {
		for _, v := range []Variance{FixedSmall, FixedLarge, Learned, LearnedRange} {
			for _, l := range []Loss{LossSimple, LossVLB, LossHybrid} {
				c := DefaultConfig()
				c.Timesteps = T
				c.Prediction, c.Variance, c.Loss = p, v, l
				cs = append(cs, c)
			}
		}
	}
	return cs
}

// TestLossGradientFiniteDifference checks the analytic dLoss/dout of every
// loss, prediction and variance type against central differences of the
// float64 loss, at t = 0 (decoder NLL) and t > 0 (Gaussian KL). For hybrid
// the reference perturbs only the variance channels through the VLB term,
// since the mean's gradient is stopped there by definition.
func TestLossGradientFiniteDifference(t *testing.T) {
	const D = 6
	rng := rand.New(rand.NewPCG(3, 4))
	for _, cfg := range allConfigs(50) {
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []int{0, 1, 25, 49} {
			name := fmt.Sprintf("%s/%s/%s/t=%d", cfg.Prediction, cfg.Variance, cfg.Loss, tt)
			t.Run(name, func(t *testing.T) {
				per := D
				if cfg.Variance.IsLearned() {
					per = 2 * D
				}
				x0 := make([]float64, D)
				noise := make([]float64, D)
				out := make([]float64, per)
				for j := range D {
					// pixel values on the 8-bit grid, including both edges
					x0[j] = float64(rng.IntN(256))*2/255 - 1
					noise[j] = rng.NormFloat64()
				}
				x0[0], x0[1] = -1, 1
				for j := range out {
					out[j] = 0.5 * rng.NormFloat64()
				}
				if cfg.Variance == Learned {
					for j := D; j < per; j++ {
						out[j] = math.Log(d.s.Betas[tt]) + 0.3*rng.NormFloat64()
					}
				}
				g := make([]float64, per)
				d.lossExample(out, x0, noise, tt, g)
				// Reference loss for finite differences: for hybrid, the
				// mean channels see only L_simple and the variance channels
				// L_simple + lambda T L_t with the mean held at its value.
				ref := func(o []float64) float64 {
					l, _, _ := d.lossExample(o, x0, noise, tt, make([]float64, per))
					return l
				}
				h := 1e-6
				for j := range out {
					f := ref
					if cfg.Loss == LossHybrid && cfg.Variance.IsLearned() && j < D {
						f = func(o []float64) float64 {
							_, mse, _ := d.lossExample(o, x0, noise, tt, make([]float64, per))
							return mse
						}
					}
					o := append([]float64(nil), out...)
					o[j] = out[j] + h
					lp := f(o)
					o[j] = out[j] - h
					lm := f(o)
					fd := (lp - lm) / (2 * h)
					if math.Abs(fd-g[j]) > 1e-5+1e-4*math.Abs(fd) {
						t.Errorf("dout[%d] = %.9g, finite difference %.9g", j, g[j], fd)
					}
				}
			})
		}
	}
}

func TestTrainingLossBatchAndWeights(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Variance, cfg.Loss = LearnedRange, LossHybrid
	d, _ := New(cfg)
	rng := rand.New(rand.NewPCG(5, 6))
	x0, noise := NewBatch(3, 2, 2, 2), NewBatch(3, 2, 2, 2)
	out := NewBatch(3, 4, 2, 2)
	for i := range x0.Data {
		x0.Data[i] = float32(rng.Float64()*2 - 1)
		noise.Data[i] = float32(rng.NormFloat64())
	}
	for i := range out.Data {
		out.Data[i] = float32(rng.NormFloat64() * 0.3)
	}
	ts := []int{0, 500, 999}
	w := []float64{0.5, 1, 2}
	var terms LossTerms
	f := d.LossFunc(x0, noise, ts, w, &terms)
	dout := make([]float32, len(out.Data))
	loss, err := f(out, dout)
	if err != nil {
		t.Fatal(err)
	}
	want := (0.5*terms.Loss[0] + terms.Loss[1] + 2*terms.Loss[2]) / 3
	if math.Abs(loss-want) > 1e-12 {
		t.Errorf("loss %v, want weighted mean %v", loss, want)
	}
	for i := range terms.Loss {
		if math.Abs(terms.Loss[i]-(terms.MSE[i]+1000*0.001*terms.VB[i])) > 1e-9 {
			t.Errorf("hybrid %d: %v != %v + %v", i, terms.Loss[i], terms.MSE[i], terms.VB[i])
		}
	}
	// Errors name the field.
	if _, _, err := d.TrainingLoss(NewBatch(3, 2, 2, 2), x0, noise, ts, nil); err == nil {
		t.Error("output with C channels accepted for a learned variance")
	}
	if _, _, err := d.TrainingLoss(out, x0, noise, []int{0, 1, 1000}, nil); err == nil {
		t.Error("t = T accepted")
	}
	if _, _, err := d.TrainingLoss(out, x0, noise, ts, []float64{1}); err == nil {
		t.Error("short weights accepted")
	}
	bad := NewBatch(3, 4, 2, 2)
	bad.Data[0] = float32(math.NaN())
	if _, _, err := d.TrainingLoss(bad, x0, noise, ts, nil); err == nil {
		t.Error("NaN output gave no error")
	}
}

// TestVLBScaleRespaced checks that L_vlb is scaled by the T of the process
// it is computed on, as improved-diffusion's num_timesteps is for a
// SpacedDiffusion: T' L_t is then unbiased for the respaced bound.
func TestVLBScaleRespaced(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Variance, cfg.Loss = Learned, LossVLB
	base, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, err := base.RespaceSteps(10, "leading")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	x0, noise, out := NewBatch(2, 1, 2, 2), NewBatch(2, 1, 2, 2), NewBatch(2, 2, 2, 2)
	for i := range x0.Data {
		x0.Data[i] = float32(rng.IntN(256))*2/255 - 1
		noise.Data[i] = float32(rng.NormFloat64())
	}
	for i := range out.Data {
		out.Data[i] = float32(rng.NormFloat64() * 0.3)
	}
	terms, _, err := d.TrainingLoss(out, x0, noise, []int{0, 7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range terms.Loss {
		if want := 10 * terms.VB[i]; math.Abs(terms.Loss[i]-want) > 1e-12*want || !(terms.VB[i] > 0) {
			t.Errorf("example %d: vlb loss %v, want T' L_t = 10 * %v", i, terms.Loss[i], terms.VB[i])
		}
	}
}

func TestNormalKL(t *testing.T) {
	cases := []struct{ m1, lv1, m2, lv2 float64 }{
		{0, 0, 0, 0}, {1, -2, 1, -2}, {0.3, 0, -0.2, 1}, {5, -5, -5, 3}, {0, 2, 0, -2},
	}
	for _, c := range cases {
		kl := NormalKL(c.m1, c.lv1, c.m2, c.lv2)
		if c.m1 == c.m2 && c.lv1 == c.lv2 {
			if kl != 0 {
				t.Errorf("KL of equal Gaussians %v = %v", c, kl)
			}
			continue
		}
		if !(kl > 0) {
			t.Errorf("KL %v = %v, want > 0", c, kl)
		}
		// Independent check: numerical integral of p log(p/q).
		s1 := math.Exp(0.5 * c.lv1)
		n := 200000
		lo, hi := c.m1-12*s1, c.m1+12*s1
		h := (hi - lo) / float64(n)
		var sum float64
		for i := 0; i <= n; i++ {
			x := lo + float64(i)*h
			lp := -0.5*math.Log(2*math.Pi) - 0.5*c.lv1 - (x-c.m1)*(x-c.m1)/(2*math.Exp(c.lv1))
			lq := -0.5*math.Log(2*math.Pi) - 0.5*c.lv2 - (x-c.m2)*(x-c.m2)/(2*math.Exp(c.lv2))
			sum += math.Exp(lp) * (lp - lq) * h
		}
		if math.Abs(sum-kl) > 1e-6*(1+kl) {
			t.Errorf("KL %v = %v, integral %v", c, kl, sum)
		}
	}
}

func TestDiscretizedLikelihoodSumsToOne(t *testing.T) {
	for _, c := range []struct{ mean, logScale float64 }{{0, -3}, {0.5, -1}, {-0.99, -5}, {1.3, 0.5}, {0.01, -7}} {
		sum := 0.0
		for k := range 256 {
			x := float64(k)*2/255 - 1
			sum += math.Exp(DiscretizedGaussianLogLikelihood(x, c.mean, c.logScale))
		}
		// The 1e-12 floor can add at most 256e-12.
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("mean %v logScale %v: bins sum to %.12f", c.mean, c.logScale, sum)
		}
	}
}

func TestDiscretizedLikelihoodGradient(t *testing.T) {
	for _, x := range []float64{-1, -0.5, 0, 0.3, 1} {
		for _, c := range []struct{ mean, ls float64 }{{0, -3}, {0.2, -1}, {-0.9, -4}, {0.95, -2}} {
			_, dm, dls := discretizedGaussianLogLikGrad(x, c.mean, c.ls)
			h := 1e-6
			fm := (DiscretizedGaussianLogLikelihood(x, c.mean+h, c.ls) - DiscretizedGaussianLogLikelihood(x, c.mean-h, c.ls)) / (2 * h)
			fs := (DiscretizedGaussianLogLikelihood(x, c.mean, c.ls+h) - DiscretizedGaussianLogLikelihood(x, c.mean, c.ls-h)) / (2 * h)
			if math.Abs(fm-dm) > 1e-4*(1+math.Abs(fm)) || math.Abs(fs-dls) > 1e-4*(1+math.Abs(fs)) {
				t.Errorf("x=%v %v: grad (%v, %v), fd (%v, %v)", x, c, dm, dls, fm, fs)
			}
		}
	}
}
