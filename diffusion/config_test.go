package diffusion

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/schedule"
)

func TestEnumsRoundTrip(t *testing.T) {
	for _, p := range []Prediction{PredictEpsilon, PredictX0, PredictV} {
		if q, err := ParsePrediction(p.String()); err != nil || q != p {
			t.Errorf("prediction %v: %v %v", p, q, err)
		}
	}
	for _, v := range []Variance{FixedSmall, FixedLarge, Learned, LearnedRange} {
		if q, err := ParseVariance(v.String()); err != nil || q != v {
			t.Errorf("variance %v: %v %v", v, q, err)
		}
	}
	for _, l := range []Loss{LossSimple, LossVLB, LossHybrid} {
		if q, err := ParseLoss(l.String()); err != nil || q != l {
			t.Errorf("loss %v: %v %v", l, q, err)
		}
	}
	for _, s := range Samplers() {
		if q, err := ParseSampler(s.String()); err != nil || q != s {
			t.Errorf("sampler %v: %v %v", s, q, err)
		}
	}
	for in, want := range map[string]Prediction{"eps": PredictEpsilon, "x0": PredictX0, "v": PredictV} {
		if got, _ := ParsePrediction(in); got != want {
			t.Errorf("ParsePrediction(%q) = %v", in, got)
		}
	}
	if v, _ := ParseVariance("learned-range"); v != LearnedRange {
		t.Error("learned-range")
	}
	// A failed UnmarshalText leaves the value as it was.
	p, v, l, sm := PredictV, Learned, LossHybrid, SamplerDDIM
	if p.UnmarshalText([]byte("noise")) == nil || v.UnmarshalText([]byte("small")) == nil || l.UnmarshalText([]byte("l1")) == nil || sm.UnmarshalText([]byte("plms")) == nil {
		t.Error("UnmarshalText accepted an unknown name")
	}
	if p != PredictV || v != Learned || l != LossHybrid || sm != SamplerDDIM {
		t.Errorf("failed UnmarshalText changed the values to %v %v %v %v", p, v, l, sm)
	}
	for _, f := range []func() error{
		func() error { _, err := ParsePrediction("noise"); return err },
		func() error { _, err := ParseVariance("small"); return err },
		func() error { _, err := ParseLoss("l1"); return err },
		func() error { _, err := ParseSampler("plms"); return err },
	} {
		if err := f(); err == nil || !strings.Contains(err.Error(), "allowed") {
			t.Errorf("unknown name: %v", err)
		}
	}
}

func TestConfigJSON(t *testing.T) {
	c := DefaultConfig()
	c.Schedule, c.Prediction, c.Variance, c.Loss = schedule.Cosine, PredictV, LearnedRange, LossHybrid
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"schedule":"cosine"`, `"prediction":"v_prediction"`, `"variance":"learned_range"`, `"loss":"hybrid"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
	var c2 Config
	if err := json.Unmarshal(b, &c2); err != nil {
		t.Fatal(err)
	}
	if c2.Schedule != c.Schedule || c2.Prediction != c.Prediction || c2.Variance != c.Variance || c2.Loss != c.Loss || c2.Timesteps != 1000 {
		t.Errorf("round trip %+v", c2)
	}
	if err := json.Unmarshal([]byte(`{"prediction":"noise"}`), &c2); err == nil {
		t.Error("bad prediction accepted")
	}
	d, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if d.Config().HybridLambda != 0.001 || d.Config().ClipRange != 1 || d.OutChannels(3) != 6 {
		t.Errorf("defaults %+v", d.Config())
	}
}

func TestConfigInvalid(t *testing.T) {
	base := DefaultConfig()
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"T", func(c *Config) { c.Timesteps = 0 }, "timesteps"},
		{"prediction", func(c *Config) { c.Prediction = 7 }, "prediction"},
		{"variance", func(c *Config) { c.Variance = -1 }, "variance"},
		{"loss", func(c *Config) { c.Loss = 9 }, "loss"},
		{"clip range", func(c *Config) { c.ClipRange = math.NaN() }, "clip_range"},
		{"ratio", func(c *Config) { c.ThresholdRatio = 2 }, "threshold_ratio"},
		{"max", func(c *Config) { c.ThresholdMax = 0.5 }, "threshold_max"},
		{"lambda", func(c *Config) { c.HybridLambda = -1 }, "hybrid_lambda"},
		{"betas", func(c *Config) { c.Betas = []float64{0.5, 1.5}; c.Timesteps = 2 }, "(0, 1)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			c.mod(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
}

func TestFromDiffusers(t *testing.T) {
	cfg, dc, err := FromDiffusers([]byte(`{"num_train_timesteps":500,"beta_schedule":"squaredcos_cap_v2","prediction_type":"v_prediction","variance_type":"learned_range","clip_sample":false,"thresholding":true,"dynamic_thresholding_ratio":0.9,"sample_max_value":2,"timestep_spacing":"trailing"}`))
	if err != nil {
		t.Fatal(err)
	}
	// clip_sample false but thresholding true: diffusers thresholds, so
	// ClipDenoised (the switch for x_0 processing here) must be on.
	if cfg.Timesteps != 500 || cfg.Schedule != schedule.Cosine || cfg.Prediction != PredictV || cfg.Variance != LearnedRange || !cfg.ClipDenoised || !cfg.Thresholding || cfg.ThresholdRatio != 0.9 || cfg.ThresholdMax != 2 || dc.Spacing() != schedule.Trailing {
		t.Errorf("config %+v", cfg)
	}
	for _, bad := range []string{`{"variance_type":"huge"}`, `{"prediction_type":"noise"}`, `{"beta_schedule":"x"}`, `not json`} {
		if _, _, err := FromDiffusers([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestFromDiffusersThresholds checks that a diffusers config with
// thresholding and clip_sample false thresholds the x_0 estimate, as
// diffusers' step does.
func TestFromDiffusersThresholds(t *testing.T) {
	// prediction_type sample: the x_0 estimate is the output itself.
	cfg, _, err := FromDiffusers([]byte(`{"num_train_timesteps":10,"prediction_type":"sample","clip_sample":false,"thresholding":true,"dynamic_thresholding_ratio":0.5,"sample_max_value":3}`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	x := Batch{N: 1, C: 1, H: 1, W: 2, Data: []float32{0, 0}}
	out := Batch{N: 1, C: 1, H: 1, W: 2, Data: []float32{2, -4}}
	_, x0, err := d.DDPMStep(out, x, 5, NewBatch(1, 1, 1, 2))
	if err != nil {
		t.Fatal(err)
	}
	// s = the 0.5 quantile of {2, 4} = 3 (in [1, 3]); x0 = clamp(x0, -3, 3) / 3.
	if want := []float32{2.0 / 3, -1}; math.Abs(float64(x0.Data[0]-want[0])) > 1e-6 || x0.Data[1] != want[1] {
		t.Errorf("thresholded x0 %v, want %v", x0.Data, want)
	}
}

func FuzzFromDiffusers(f *testing.F) {
	f.Add([]byte(`{"num_train_timesteps":10,"prediction_type":"epsilon","variance_type":"fixed_small"}`))
	f.Add([]byte(`{"num_train_timesteps":3,"trained_betas":[0.1,0.2,0.3],"variance_type":"learned"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := FromDiffusers(data)
		if err != nil || cfg.Timesteps > 5000 {
			return
		}
		if _, err := New(cfg); err != nil {
			t.Fatalf("accepted config does not build: %v", err)
		}
	})
}

func TestDynamicThreshold(t *testing.T) {
	// 10 values; the 0.9 quantile of |x| with linear interpolation is
	// 8.1 (between order statistics 8 and 9 at position 8.1).
	x := []float64{0, -1, 2, -3, 4, -5, 6, -7, 8, -9}
	dynamicThreshold(x, 0.9, 100)
	s := 8.1
	want := []float64{0, -1 / s, 2 / s, -3 / s, 4 / s, -5 / s, 6 / s, -7 / s, 8 / s, -1}
	for i := range x {
		if math.Abs(x[i]-want[i]) > 1e-12 {
			t.Fatalf("thresholded %v, want %v", x, want)
		}
	}
	// s is clamped to [1, max]: small values are untouched.
	y := []float64{0.1, -0.5, 0.9}
	dynamicThreshold(y, 0.995, 1)
	if !slices.Equal(y, []float64{0.1, -0.5, 0.9}) {
		t.Errorf("values inside [-1, 1] changed: %v", y)
	}
	z := []float64{3, -3, 0.5}
	dynamicThreshold(z, 1, 2)
	if !slices.Equal(z, []float64{1, -1, 0.25}) {
		t.Errorf("s clamped to max 2: %v", z)
	}
}

func TestPMeanVarianceVarianceTypes(t *testing.T) {
	x := Batch{N: 1, C: 1, H: 1, W: 1, Data: []float32{0.3}}
	for _, v := range []Variance{FixedSmall, FixedLarge, Learned, LearnedRange} {
		cfg := DefaultConfig()
		cfg.Variance = v
		d, _ := New(cfg)
		s := d.Schedule()
		for _, tt := range []int{0, 1, 500} {
			out := NewBatch(1, d.OutChannels(1), 1, 1)
			out.Data[0] = 0.1
			if v.IsLearned() {
				out.Data[1] = -0.5
			}
			mean, lv, x0, err := d.PMeanVariance(out, x, []int{tt}, false)
			if err != nil {
				t.Fatal(err)
			}
			var want float64
			switch v {
			case FixedSmall:
				want = s.PosteriorLogVarianceClipped[tt]
			case FixedLarge:
				want = math.Log(s.Betas[tt])
				if tt == 0 {
					want = math.Log(s.PosteriorVariance[1])
				}
			case Learned:
				want = -0.5
			case LearnedRange:
				want = 0.25*math.Log(s.Betas[tt]) + 0.75*s.PosteriorLogVarianceClipped[tt]
			}
			if math.Abs(float64(lv.Data[0])-want) > 1e-5*math.Abs(want) {
				t.Errorf("%s t=%d: log variance %v, want %v", v, tt, lv.Data[0], want)
			}
			wx0 := s.SqrtRecipAlphasCumprod[tt]*0.3 - s.SqrtRecipM1AlphasCumprod[tt]*0.1
			wm := s.PosteriorMeanCoef1[tt]*wx0 + s.PosteriorMeanCoef2[tt]*0.3
			if math.Abs(float64(x0.Data[0])-wx0) > 1e-5*(1+math.Abs(wx0)) || math.Abs(float64(mean.Data[0])-wm) > 1e-5*(1+math.Abs(wm)) {
				t.Errorf("%s t=%d: x0 %v mean %v, want %v %v", v, tt, x0.Data[0], mean.Data[0], wx0, wm)
			}
		}
	}
}

func TestParseConfig(t *testing.T) {
	c := DefaultConfig()
	c.Variance = Learned
	b, _ := json.Marshal(c)
	got, err := ParseConfig(b)
	if err != nil || got.Variance != Learned || got.Timesteps != 1000 {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range []string{`{"timesteps":1000,"colour":1}`, `{"timesteps":0}`, `{"timesteps":10} {}`, `[`, `{"timesteps":10,"schedule":"nope"}`} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"schedule":"cosine","timesteps":100,"prediction":"v","variance":"learned_range","loss":"hybrid"}`))
	f.Add([]byte(`{"schedule":"custom","timesteps":2,"betas":[0.1,0.2]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil || c.Timesteps > 5000 {
			return
		}
		d, err := New(c)
		if err != nil {
			t.Fatalf("accepted config does not build: %v", err)
		}
		b, err := json.Marshal(d.Config())
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		if _, err := ParseConfig(b); err != nil {
			t.Fatalf("config does not round-trip: %v\n%s", err, b)
		}
	})
}

func TestBatchCheck(t *testing.T) {
	cases := []struct {
		name string
		b    Batch
		want string
	}{
		{"zero N", Batch{N: 0, C: 1, H: 1, W: 1}, ">= 1"},
		{"short data", Batch{N: 2, C: 1, H: 2, W: 2, Data: make([]float32, 7)}, "needs 8 values, have 7"},
		// 2^62 * 4 wraps to 0 in int64: must not pass as an empty batch.
		{"overflow", Batch{N: 1 << 62, C: 4, H: 1, W: 1}, "overflows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.b.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Check() = %v, want an error containing %q", err, c.want)
			}
		})
	}
	if err := NewBatch(2, 3, 4, 5).Check(); err != nil {
		t.Errorf("valid batch: %v", err)
	}
}

// TestDefaultSampling: ancestral sampling at 100 steps for a learned
// variance (the only sampler that uses it), DDIM at 50 otherwise, never
// more steps than the process has.
func TestDefaultSampling(t *testing.T) {
	for _, c := range []struct {
		v     Variance
		T     int
		want  Sampler
		steps int
	}{
		{FixedSmall, 1000, SamplerDDIM, 50},
		{FixedLarge, 1000, SamplerDDIM, 50},
		{Learned, 1000, SamplerDDPM, 100},
		{LearnedRange, 4000, SamplerDDPM, 100},
		{LearnedRange, 60, SamplerDDPM, 60},
		{FixedSmall, 20, SamplerDDIM, 20},
	} {
		cfg := DefaultConfig()
		cfg.Variance, cfg.Timesteps = c.v, c.T
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if s, n := d.DefaultSampling(); s != c.want || n != c.steps {
			t.Errorf("%v over %d timesteps: %v at %d steps, want %v at %d", c.v, c.T, s, n, c.want, c.steps)
		}
	}
}

// TestProgressOf: model calls map onto the asked steps, rounding down,
// ending at the step count whatever the calls per step.
func TestProgressOf(t *testing.T) {
	for _, c := range []struct{ step, total, n, want int }{
		{1, 19, 10, 0}, {2, 19, 10, 1}, {19, 19, 10, 10}, {5, 5, 5, 5}, {3, 3, 27, 27}, {0, 0, 4, 0},
	} {
		if got := (Progress{Step: c.step, Total: c.total}).Of(c.n); got != c.want {
			t.Errorf("call %d of %d onto %d steps: %d, want %d", c.step, c.total, c.n, got, c.want)
		}
	}
}
