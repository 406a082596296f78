package diffusion

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestTimestepSamplerUniform(t *testing.T) {
	s, err := NewUniformSampler(10)
	if err != nil {
		t.Fatal(err)
	}
	ts, w := s.Sample(rand.New(rand.NewPCG(1, 1)), 1000)
	for i := range ts {
		if ts[i] < 0 || ts[i] >= 10 || w[i] != 1 {
			t.Fatalf("sample %d: t=%d w=%v", i, ts[i], w[i])
		}
	}
	if _, err := NewUniformSampler(0); err == nil {
		t.Error("T=0 accepted")
	}
	if _, err := NewLossSecondMomentSampler(1<<40, 10, 0.001); err == nil || !strings.Contains(err.Error(), "timesteps") {
		t.Errorf("T=2^40: %v, want an error naming timesteps", err)
	}
}

func TestTimestepSamplerSecondMoment(t *testing.T) {
	const T = 4
	s, err := NewLossSecondMomentSampler(T, 3, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	// Not warmed up: uniform.
	_, w := s.Sample(rng, 5)
	for _, v := range w {
		if v != 1 {
			t.Fatal("weights before warm-up must be 1")
		}
	}
	loss := []float64{1, 2, 4, 8}
	for range 3 {
		if err := s.Update([]int{0, 1, 2, 3}, loss); err != nil {
			t.Fatal(err)
		}
	}
	p := s.Probabilities()
	sum := 0.0
	for i, v := range p {
		sum += v
		want := loss[i]/15*(1-0.01) + 0.01/T
		if math.Abs(v-want) > 1e-12 {
			t.Errorf("p[%d] = %v, want %v", i, v, want)
		}
	}
	if math.Abs(sum-1) > 1e-12 {
		t.Errorf("probabilities sum to %v", sum)
	}
	// Importance weights make the estimate unbiased: E_p[w L_t] = mean_t L_t.
	n := 200000
	ts, ws := s.Sample(rng, n)
	est := 0.0
	for i := range ts {
		est += ws[i] * loss[ts[i]] / float64(n)
	}
	if math.Abs(est-3.75) > 0.05 {
		t.Errorf("importance-weighted mean %v, want 3.75", est)
	}
	// History keeps the last 3 values.
	_ = s.Update([]int{0}, []float64{100})
	if h := s.History[0]; len(h) != 3 || h[2] != 100 || h[0] != 1 {
		t.Errorf("history %v", h)
	}
	// State round trip.
	b, err := s.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := UnmarshalTimestepSampler(b)
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := s.Sample(rand.New(rand.NewPCG(5, 5)), 20)
	a2, _ := s2.Sample(rand.New(rand.NewPCG(5, 5)), 20)
	for i := range a1 {
		if a1[i] != a2[i] {
			t.Fatal("restored sampler draws differently")
		}
	}
	for _, bad := range []string{`{`, `{"timesteps":0}`, `{"timesteps":1000000000,"second_moment":true,"history_per_term":1,"uniform_prob":0.1}`, `{"timesteps":2,"second_moment":true,"history_per_term":1000000000,"uniform_prob":0.1}`, `{"timesteps":2,"second_moment":true,"history_per_term":1,"uniform_prob":0.1,"history":[[1,2],[]]}`} {
		if _, err := UnmarshalTimestepSampler([]byte(bad)); err == nil {
			t.Errorf("state %s accepted", bad)
		}
	}
	if err := s.Update([]int{9}, []float64{1}); err == nil {
		t.Error("t out of range accepted")
	}
	if err := s.Update([]int{0}, []float64{math.NaN()}); err == nil {
		t.Error("NaN loss accepted")
	}
}

func TestNewTrainingBatch(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Timesteps = 20
	d, _ := New(cfg)
	x0 := NewBatch(3, 1, 2, 2)
	for i := range x0.Data {
		x0.Data[i] = 0.5
	}
	s, _ := NewLossSecondMomentSampler(20, 2, 0.1)
	tb, err := d.NewTrainingBatch(x0, s, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := d.QSample(x0, tb.Noise, tb.T)
	for i := range want.Data {
		if want.Data[i] != tb.Xt.Data[i] {
			t.Fatal("Xt is not q_sample(X0, T, Noise)")
		}
	}
	// The ideal epsilon predictor has zero L_simple and zero gradient.
	var terms LossTerms
	dout := make([]float32, len(tb.Noise.Data))
	loss, err := tb.LossFunc(d, &terms)(tb.Noise, dout)
	if err != nil || loss != 0 || len(terms.Loss) != 3 {
		t.Errorf("loss %v terms %v err %v", loss, terms, err)
	}
	if _, err := d.NewTrainingBatch(x0, &TimestepSampler{T: 5}, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("sampler with another T accepted")
	}
	if _, err := d.NewTrainingBatch(x0, nil, nil); err == nil {
		t.Error("nil rng accepted")
	}
}
