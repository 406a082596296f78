package diffusion

import (
	"context"
	"math"
	"testing"

	"strings"
)

// mixture is one-pixel data drawn from two classes, x_0 ~ N(mu_y, s^2)
// with mu_0 = -mu, mu_1 = +mu, each with probability 1/2. Everything about
// its noisy marginals is closed form: p(x_t | y) = N(sqrt(ab) mu_y,
// ab s^2 + 1 - ab), so the model below is the exact (unconditional)
// epsilon, and grad is the exact noisy classifier's
// d/dx log p(y | x_t) = d/dx log p(x_t | y) - d/dx log p(x_t). With scale 1
// classifier guidance turns the unconditional score into the class's,
// and a sampler should then draw from N(mu_y, s^2).
type mixture struct {
	mu, s float64
	ab    []float64 // training alphabar table
}

// abAt is alphabar at a real timestep with sigma interpolated linearly,
// written here independently of AlphaBarAt.
func (m mixture) abAt(t float64) float64 {
	i := int(math.Floor(t))
	if i >= len(m.ab)-1 {
		return m.ab[len(m.ab)-1]
	}
	f := t - float64(i)
	s0, s1 := math.Sqrt(1/m.ab[i]-1), math.Sqrt(1/m.ab[i+1]-1)
	s := s0 + f*(s1-s0)
	return 1 / (1 + s*s)
}

// scores returns d/dx log p(x_t | y) for both classes and d/dx log p(x_t).
func (m mixture) scores(x, t float64) (c0, c1, marginal float64) {
	ab := m.abAt(t)
	v := ab*m.s*m.s + 1 - ab
	a := math.Sqrt(ab)
	c0, c1 = -(x+a*m.mu)/v, -(x-a*m.mu)/v
	l0, l1 := -(x+a*m.mu)*(x+a*m.mu)/(2*v), -(x-a*m.mu)*(x-a*m.mu)/(2*v)
	w1 := 1 / (1 + math.Exp(l0-l1)) // p(y = 1 | x_t)
	return c0, c1, (1-w1)*c0 + w1*c1
}

func (m mixture) Predict(_ context.Context, x Batch, t []float64, _ []int) (Batch, error) {
	out := NewBatch(x.N, x.C, x.H, x.W)
	for i, v := range x.Data {
		_, _, sc := m.scores(float64(v), t[i])
		out.Data[i] = float32(-math.Sqrt(1-m.abAt(t[i])) * sc)
	}
	return out, nil
}

func (m mixture) grad(_ context.Context, x Batch, t []float64, y []int) (Batch, error) {
	g := NewBatch(x.N, x.C, x.H, x.W)
	for i, v := range x.Data {
		c0, c1, sc := m.scores(float64(v), t[i])
		c := c0
		if y[i] == 1 {
			c = c1
		}
		g.Data[i] = float32(c - sc)
	}
	return g, nil
}

// condMixture is the mixture's exact class-conditional model: the epsilon
// of p(x_t | y).
type condMixture struct{ mixture }

func (m condMixture) Predict(_ context.Context, x Batch, t []float64, y []int) (Batch, error) {
	out := NewBatch(x.N, x.C, x.H, x.W)
	for i, v := range x.Data {
		c0, c1, _ := m.scores(float64(v), t[i])
		c := c0
		if y[i] == 1 {
			c = c1
		}
		out.Data[i] = float32(-math.Sqrt(1-m.abAt(t[i])) * c)
	}
	return out, nil
}

// TestClassifierGuidanceExact guides the mixture's unconditional model
// with its exact noisy classifier at scale 1. In score form (DDIM and the
// diffusers solvers, the Euler family at fractional timesteps) the guided
// epsilon is then exactly the class-conditional model's, so from the same
// noise the samples must agree with that model's to float error. Ancestral
// sampling's mean shift (Algorithm 1) is a first-order approximation, so
// there the samples must follow the class's N(mu_y, s^2) in distribution.
// Without guidance half the samples land in each class.
func TestClassifierGuidanceExact(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ClipDenoised = false
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := mixture{mu: 0.5, s: 0.1, ab: d.Schedule().AlphasCumprod}
	const n = 2000
	labels := make([]int, n)
	for i := range labels {
		labels[i] = i % 2
	}
	ctx := context.Background()
	for _, c := range []struct {
		sampler Sampler
		steps   int
		karras  bool
	}{{SamplerDDIM, 50, false}, {SamplerEuler, 30, false}, {SamplerHeun, 20, true}, {SamplerDPMPP2M, 20, false}, {SamplerUniPC, 10, false}} {
		o := Options{Sampler: c.sampler, Steps: c.steps, Karras: c.karras, N: n, C: 1, H: 1, W: 1, Seed: 3}
		want, err := d.Sample(ctx, condMixture{m}, Options{Sampler: c.sampler, Steps: c.steps, Karras: c.karras, N: n, C: 1, H: 1, W: 1, Seed: 3, Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		o.Classifier = &ClassifierGuidance{Grad: m.grad, Scale: 1, Labels: labels}
		got, err := d.Sample(ctx, m, o)
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for i := range got.Data {
			worst = math.Max(worst, math.Abs(float64(got.Data[i]-want.Data[i])))
		}
		if worst > 1e-4 {
			t.Errorf("%v %d steps: guided samples differ from the conditional model's by up to %.2g", c.sampler, c.steps, worst)
		}
	}
	for _, steps := range []int{0, 250} {
		o := Options{Steps: steps, N: n, C: 1, H: 1, W: 1, Seed: 3, Classifier: &ClassifierGuidance{Grad: m.grad, Scale: 1, Labels: labels}}
		x, err := d.Sample(ctx, m, o)
		if err != nil {
			t.Fatal(err)
		}
		for y := range 2 {
			var sum, sq float64
			for i := y; i < n; i += 2 {
				v := float64(x.Data[i])
				sum += v
				sq += v * v
			}
			k := float64(n / 2)
			mean := sum / k
			std := math.Sqrt(sq/k - mean*mean)
			want := m.mu * float64(2*y-1)
			if math.Abs(mean-want) > 0.015 || math.Abs(std-m.s) > 0.015 {
				t.Errorf("ddpm %d steps, class %d: mean %.4f std %.4f, want %.2f and %.2f", steps, y, mean, std, want, m.s)
			}
		}
		o.Classifier.Scale = 0
		if x, err = d.Sample(ctx, m, o); err != nil {
			t.Fatal(err)
		}
		pos := 0
		for _, v := range x.Data {
			if v > 0 {
				pos++
			}
		}
		if f := float64(pos) / n; math.Abs(f-0.5) > 0.05 {
			t.Errorf("ddpm %d steps unguided: %.3f of the samples are class 1, want about 0.5", steps, f)
		}
	}
}

// TestShiftScore checks the score-form shift in each prediction type
// against the epsilon the step itself derives from the output: it must
// move by -sqrt(1 - alphabar) s g.
func TestShiftScore(t *testing.T) {
	for _, p := range []Prediction{PredictEpsilon, PredictX0, PredictV} {
		cfg := DefaultConfig()
		cfg.Prediction = p
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		const step = 400
		ab := d.Schedule().AlphasCumprod[step]
		x := Batch{N: 1, C: 1, H: 1, W: 3, Data: []float32{0.3, -1.2, 0.7}}
		out := Batch{N: 1, C: 1, H: 1, W: 3, Data: []float32{-0.4, 0.9, 0.1}}
		sg := Batch{N: 1, C: 1, H: 1, W: 3, Data: []float32{0.5, -0.25, 2}}
		eps := func(o Batch) []float64 {
			cx, co := d.epsCoefs(step)
			r := make([]float64, 3)
			for j := range r {
				r[j] = cx*float64(x.Data[j]) + co*float64(o.Data[j])
			}
			return r
		}
		before := eps(out)
		shifted := cloneBatch(out)
		shiftScore(shifted, sg, ab, p)
		after := eps(shifted)
		for j := range after {
			want := before[j] - math.Sqrt(1-ab)*float64(sg.Data[j])
			if math.Abs(after[j]-want) > 1e-5 {
				t.Errorf("%v: eps[%d] = %v after the shift, want %v", p, j, after[j], want)
			}
		}
	}
}

// TestClassifierGuidanceErrors checks bad guidance options are refused
// with errors naming what is wrong.
func TestClassifierGuidanceErrors(t *testing.T) {
	d, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	grad := func(_ context.Context, x Batch, _ []float64, _ []int) (Batch, error) {
		return NewBatch(x.N, x.C, x.H, x.W), nil
	}
	m := newGauss(0, 1, PredictEpsilon, false, d.Schedule())
	for _, c := range []struct {
		name string
		g    ClassifierGuidance
		want string
	}{
		{"no grad", ClassifierGuidance{Scale: 1, Labels: []int{0, 1}}, "Grad is nil"},
		{"nan scale", ClassifierGuidance{Grad: grad, Scale: math.NaN(), Labels: []int{0, 1}}, "classifier scale"},
		{"negative scale", ClassifierGuidance{Grad: grad, Scale: -1, Labels: []int{0, 1}}, "classifier scale"},
		{"no labels", ClassifierGuidance{Grad: grad, Scale: 1}, "a class per image"},
		{"null class", ClassifierGuidance{Grad: grad, Scale: 1, Labels: []int{0, -1}}, "labels[1] = -1"},
		{"bad shape", ClassifierGuidance{Grad: func(context.Context, Batch, []float64, []int) (Batch, error) {
			return NewBatch(1, 1, 1, 1), nil
		}, Scale: 1, Labels: []int{0, 1}}, "classifier gradient shape"},
		{"nan grad", ClassifierGuidance{Grad: func(_ context.Context, x Batch, _ []float64, _ []int) (Batch, error) {
			g := NewBatch(x.N, x.C, x.H, x.W)
			g.Data[0] = float32(math.Inf(1))
			return g, nil
		}, Scale: 1, Labels: []int{0, 1}}, "is +Inf"},
	} {
		g := c.g
		_, err := d.Sample(context.Background(), m, Options{N: 2, C: 1, H: 2, W: 2, Steps: 3, Classifier: &g})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}
