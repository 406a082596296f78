package diffusion

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/schedule"
)

func TestParseSchedulerConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		want       []string // substrings of the error
	}{
		{"unknown class", `{"_class_name": "FooScheduler"}`, []string{"_class_name", "FooScheduler", "DPMSolverMultistepScheduler"}},
		{"no class", `{"num_train_timesteps": 1000}`, []string{"_class_name missing", "DDIMScheduler"}},
		{"bad algorithm", `{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpm3"}`, []string{"algorithm_type", "dpm3", "sde-dpmsolver++"}},
		{"sde on singlestep", `{"_class_name": "DPMSolverSinglestepScheduler", "algorithm_type": "sde-dpmsolver++"}`, []string{"algorithm_type", "dpmsolver, dpmsolver++"}},
		{"order 4", `{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 4}`, []string{"solver_order 4", "1, 2, 3"}},
		{"order 0 unipc", `{"_class_name": "UniPCMultistepScheduler", "solver_order": -1}`, []string{"solver_order -1"}},
		{"bad solver type", `{"_class_name": "UniPCMultistepScheduler", "solver_type": "bh3"}`, []string{"solver_type", "bh1, bh2"}},
		{"bad deis algorithm", `{"_class_name": "DEISMultistepScheduler", "algorithm_type": "unipc"}`, []string{"algorithm_type", "deis"}},
		{"bad prediction", `{"_class_name": "EulerDiscreteScheduler", "prediction_type": "x0"}`, []string{"prediction_type", "v_prediction"}},
		{"bad schedule", `{"_class_name": "DDIMScheduler", "beta_schedule": "quadratic"}`, []string{"beta_schedule", "squaredcos_cap_v2"}},
		{"bad spacing", `{"_class_name": "DDIMScheduler", "timestep_spacing": "even"}`, []string{"timestep_spacing", "leading, linspace, trailing"}},
		{"bad variance", `{"_class_name": "DDPMScheduler", "variance_type": "big"}`, []string{"variance_type", "learned_range"}},
		{"bad final sigmas", `{"_class_name": "DPMSolverMultistepScheduler", "final_sigmas_type": "one"}`, []string{"final_sigmas_type", "sigma_min, zero"}},
		{"zero with dpmsolver", `{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver", "final_sigmas_type": "zero"}`, []string{"final_sigmas_type zero", "dpmsolver++"}},
		{"bad interpolation", `{"_class_name": "EulerDiscreteScheduler", "interpolation_type": "cubic"}`, []string{"interpolation_type", "log_linear"}},
		{"beta_start", `{"_class_name": "DDPMScheduler", "beta_start": 1.5}`, []string{"beta_start 1.5", "(0, 1)"}},
		{"trained betas length", `{"_class_name": "DDPMScheduler", "num_train_timesteps": 10, "trained_betas": [0.1, 0.2]}`, []string{"trained_betas has 2", "num_train_timesteps is 10"}},
		{"trained betas range", `{"_class_name": "DDPMScheduler", "trained_betas": [0.1, 1.2]}`, []string{"trained_betas[1]"}},
		{"T", `{"_class_name": "DDPMScheduler", "num_train_timesteps": -5}`, []string{"num_train_timesteps -5"}},
		{"steps_offset", `{"_class_name": "DDIMScheduler", "steps_offset": 1000}`, []string{"steps_offset 1000", "0..999"}},
		{"ratio", `{"_class_name": "DDIMScheduler", "dynamic_thresholding_ratio": 1.5}`, []string{"dynamic_thresholding_ratio"}},
		{"lambda NaN", `{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": NaN}`, []string{"lambda_min_clipped"}},
		{"solver_p", `{"_class_name": "UniPCMultistepScheduler", "solver_p": {"_class_name": "DDIMScheduler"}}`, []string{"solver_p"}},
		{"wrong type", `{"_class_name": "DDIMScheduler", "clip_sample": "yes"}`, []string{"clip_sample"}},
		{"not json", `{"_class_name": `, []string{"JSON"}},
		{"zero snr epsilon", `{"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": true}`, []string{"rescale_betas_zero_snr", "v_prediction"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSchedulerConfig([]byte(tc.json))
			if err == nil {
				t.Fatalf("no error for %s", tc.json)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestNewSchedulerStepsErrors(t *testing.T) {
	for _, tc := range []struct {
		c     SchedulerConfig
		steps int
		want  string
	}{
		{SchedulerConfig{ClassName: ClassDDIM}, 0, "steps 0: must be in 1..1000"},
		{SchedulerConfig{ClassName: ClassEulerDiscrete}, 1001, "steps 1001: must be in 1..1000"},
		{SchedulerConfig{ClassName: ClassDPMSolverMultistep, NumTrainTimesteps: 100}, 101, "1..100"},
		{SchedulerConfig{ClassName: ClassPNDM}, 3, "Runge-Kutta"},
		{SchedulerConfig{ClassName: ClassDDIM, StepsOffset: 1}, 1000, "starts at timestep 1000, beyond num_train_timesteps-1 = 999"},
		{SchedulerConfig{ClassName: ClassUniPCMultistep, TimestepSpacing: "leading", StepsOffset: 5}, 999, "beyond num_train_timesteps-1"},
		{SchedulerConfig{ClassName: ClassDDIM, Eta: 1.5}, 10, "eta 1.5"},
		{SchedulerConfig{ClassName: "KarrasVeScheduler"}, 10, "_class_name"},
	} {
		if _, err := NewScheduler(tc.c, tc.steps); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s steps %d: error %v, want one containing %q", tc.c.ClassName, tc.steps, err, tc.want)
		}
	}
}

func TestParseSchedulerConfigValues(t *testing.T) {
	c, err := ParseSchedulerConfig([]byte(`{
		"_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.21.4",
		"lambda_min_clipped": -Infinity, "variance_type": null, "trained_betas": null,
		"algorithm_type": "deis", "solver_type": "logrho", "unknown_future_key": [1, "NaN"],
		"use_karras_sigmas": true, "beta_start": 0.00085, "beta_schedule": "scaled_linear"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.LambdaMinClipped != nil || c.VarianceType != nil || !c.UseKarrasSigmas || *c.BetaStart != 0.00085 {
		t.Errorf("parsed %+v", c)
	}
	r, err := c.resolve()
	if err != nil {
		t.Fatal(err)
	}
	// diffusers maps deis/logrho on a DPM solver to dpmsolver++/midpoint
	if r.AlgorithmType != "dpmsolver++" || r.SolverType != "midpoint" || !math.IsInf(*r.LambdaMinClipped, -1) || r.SolverOrder != 2 || *r.BetaEnd != 0.02 {
		t.Errorf("resolved %+v", r)
	}
	c, err = ParseSchedulerConfig([]byte(`{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -5.1}`))
	if err != nil || c.LambdaMinClipped == nil || *c.LambdaMinClipped != -5.1 {
		t.Errorf("lambda_min_clipped -5.1: %v %v", c.LambdaMinClipped, err)
	}
	// class defaults differ: Heun's betas, PNDM's spacing
	h, _ := SchedulerConfig{ClassName: ClassHeunDiscrete}.resolve()
	p, _ := SchedulerConfig{ClassName: ClassPNDM}.resolve()
	if *h.BetaStart != 0.00085 || *h.BetaEnd != 0.012 || h.TimestepSpacing != "linspace" || p.TimestepSpacing != "leading" || *p.SetAlphaToOne {
		t.Errorf("class defaults: heun %v %v %s, pndm %s %v", *h.BetaStart, *h.BetaEnd, h.TimestepSpacing, p.TimestepSpacing, *p.SetAlphaToOne)
	}
	// the config is JSON again
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseSchedulerConfig(data)
	if err != nil || *c2.LambdaMinClipped != -5.1 || c2.ClassName != c.ClassName {
		t.Errorf("round trip %s: %v", data, err)
	}
}

func TestSchedulerConfigFor(t *testing.T) {
	base, err := ParseSchedulerConfig([]byte(`{"_class_name": "DDPMScheduler", "num_train_timesteps": 500,
		"prediction_type": "v_prediction", "clip_sample": false, "variance_type": "learned_range", "steps_offset": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	names := SamplerNames()
	want := []string{"ddim", "ddpm", "deis", "dpm++2m", "dpm++2m-sde", "dpm++2s", "dpm++3m", "dpm2", "euler", "euler-a", "heun", "lms", "pndm", "unipc"}
	if !slices.Equal(names, want) {
		t.Errorf("SamplerNames() = %v, want %v", names, want)
	}
	for _, name := range names {
		c, err := SchedulerConfigFor(name, false, base)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r, _ := c.resolve()
		if r.NumTrainTimesteps != 500 || r.PredictionType != "v_prediction" || *r.ClipSample || *r.BetaStart != 1e-4 || *r.BetaEnd != 0.02 || *r.VarianceType != "learned_range" || r.StepsOffset != 0 {
			t.Errorf("%s: training keys not kept: %+v", name, r)
		}
		s, err := NewScheduler(c, 10)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(s.Timesteps()) == 0 {
			t.Errorf("%s: no timesteps", name)
		}
		_, kerr := SchedulerConfigFor(name, true, base)
		if karras := slices.Contains(karrasClasses, c.ClassName); karras != (kerr == nil) {
			t.Errorf("%s karras: error %v", name, kerr)
		}
	}
	c, _ := SchedulerConfigFor("dpm++2m-sde", true, base)
	if c.ClassName != ClassDPMSolverMultistep || c.AlgorithmType != "sde-dpmsolver++" || !c.UseKarrasSigmas {
		t.Errorf("dpm++2m-sde karras: %+v", c)
	}
	if _, err := SchedulerConfigFor("dpm++4m", false, base); err == nil || !strings.Contains(err.Error(), "dpm++2m, dpm++2m-sde") {
		t.Errorf("unknown sampler: %v", err)
	}
}

func TestConfigToSchedulerConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"default", DefaultConfig()},
		{"linear T=100", Config{Schedule: schedule.Linear, Timesteps: 100}},
		{"linear T=10 capped", Config{Schedule: schedule.Linear, Timesteps: 10}},
		{"cosine", Config{Schedule: schedule.Cosine, Timesteps: 1000, Prediction: PredictV}},
		{"scaled", Config{Schedule: schedule.ScaledLinear, Timesteps: 1000}},
		{"sigmoid", Config{Schedule: schedule.Sigmoid, Timesteps: 300}},
		{"custom", Config{Schedule: schedule.Custom, Timesteps: 3, Betas: []float64{0.1, 0.2, 0.3}}},
		{"explicit linear", Config{Schedule: schedule.Linear, Timesteps: 200, BetaStart: 0.001, BetaEnd: 0.05}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := tc.cfg.SchedulerConfig()
			if err != nil {
				t.Fatal(err)
			}
			r, _ := sc.resolve()
			tab := newTrainTables(&r)
			want := d.Schedule().AlphasCumprod
			if len(tab.ac) != len(want) {
				t.Fatalf("T = %d, want %d", len(tab.ac), len(want))
			}
			for i := range want {
				// diffusers' tables are float32 (sigmoid: float32 sigmoid)
				if math.Abs(tab.ac[i]-want[i]) > 1e-5*want[i]+1e-9 {
					t.Fatalf("alphabar[%d] = %.9g, want %.9g", i, tab.ac[i], want[i])
				}
			}
			if r.PredictionType != tc.cfg.Prediction.String() {
				t.Errorf("prediction %s", r.PredictionType)
			}
		})
	}
	cfg := DefaultConfig()
	cfg.Variance, cfg.Thresholding = Learned, true
	sc, _ := cfg.SchedulerConfig()
	if *sc.VarianceType != "learned" || !sc.LearnedLogVariance || !sc.Thresholding || !*sc.ClipSample {
		t.Errorf("learned/thresholding: %+v", sc)
	}
	cfg.ClipDenoised = false
	sc, _ = cfg.SchedulerConfig()
	if sc.Thresholding || *sc.ClipSample {
		t.Errorf("no clipping: thresholding %v clip %v", sc.Thresholding, *sc.ClipSample)
	}
}
