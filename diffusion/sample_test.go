package diffusion

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/npy"
)

func fixtureDir(t *testing.T) string {
	dir := filepath.Join("..", "..", "shared", "fixtures", "diffusers-scheduler")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("diffusers fixtures not found at %s (they live in the shared checkout next to main): %v", dir, err)
	}
	return dir
}

func loadF32(t *testing.T, path string) ([]int, []float32) {
	t.Helper()
	a, err := npy.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return a.Shape, a.Float32s()
}

func loadI64(t *testing.T, path string) []int64 {
	t.Helper()
	a, err := npy.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func fromDiffusersFile(t *testing.T, path string) *Diffusion {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := FromDiffusers(data)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func compare(t *testing.T, what string, got, want []float32, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst := 0.0
	for i := range got {
		e := math.Abs(float64(got[i]) - float64(want[i]))
		if e > abs+rel*math.Abs(float64(want[i])) {
			t.Fatalf("%s[%d] = %v, diffusers %v (abs %g + rel %g)", what, i, got[i], want[i], abs, rel)
		}
		worst = math.Max(worst, e)
	}
	t.Logf("%s: max abs difference %.3g", what, worst)
}

// TestDiffusersDDPMTrace replays diffusers 0.21.4's DDPMScheduler.step on
// the recorded model outputs and noise: x0 estimate and x_{t-1}.
func TestDiffusersDDPMTrace(t *testing.T) {
	dir := fixtureDir(t)
	d := fromDiffusersFile(t, filepath.Join(dir, "ddpm_config", "scheduler_config.json"))
	shape, x := loadF32(t, filepath.Join(dir, "ddpm_init_noise.npy"))
	_, eps := loadF32(t, filepath.Join(dir, "ddpm_model_output.npy"))
	_, vn := loadF32(t, filepath.Join(dir, "ddpm_variance_noise.npy"))
	_, px0 := loadF32(t, filepath.Join(dir, "ddpm_pred_original_sample.npy"))
	_, prev := loadF32(t, filepath.Join(dir, "ddpm_prev_sample.npy"))
	ts := loadI64(t, filepath.Join(dir, "ddpm_trace_t.npy"))
	n := len(x)
	xb := Batch{N: shape[0], C: shape[1], H: shape[2], W: shape[3], Data: x}
	for k, tt := range ts {
		out := xb
		out.Data = eps[k*n : (k+1)*n]
		noise := xb
		noise.Data = vn[k*n : (k+1)*n]
		p, x0, err := d.DDPMStep(out, xb, int(tt), noise)
		if err != nil {
			t.Fatal(err)
		}
		compare(t, "pred_original_sample", x0.Data, px0[k*n:(k+1)*n], 1e-5, 1e-5)
		compare(t, "prev_sample", p.Data, prev[k*n:(k+1)*n], 1e-5, 1e-5)
		xb.Data = prev[k*n : (k+1)*n] // next input is diffusers' own output
	}
}

// TestDiffusersDDIMTrace replays DDIMScheduler.step (50 leading steps,
// eta = 0, set_alpha_to_one) on the recorded model outputs.
func TestDiffusersDDIMTrace(t *testing.T) {
	dir := fixtureDir(t)
	d := fromDiffusersFile(t, filepath.Join(dir, "ddim_config", "scheduler_config.json"))
	sp, err := d.RespaceSteps(50, "leading")
	if err != nil {
		t.Fatal(err)
	}
	want := loadI64(t, filepath.Join(dir, "ddim_timesteps.npy"))
	for i, tt := range want {
		if sp.Schedule().Timesteps[49-i] != int(tt) {
			t.Fatalf("respaced timestep %d = %d, diffusers %d", i, sp.Schedule().Timesteps[49-i], tt)
		}
	}
	shape, x := loadF32(t, filepath.Join(dir, "ddim_init_noise.npy"))
	_, eps := loadF32(t, filepath.Join(dir, "ddim_model_output.npy"))
	_, px0 := loadF32(t, filepath.Join(dir, "ddim_pred_original_sample.npy"))
	_, prev := loadF32(t, filepath.Join(dir, "ddim_prev_sample.npy"))
	ts := loadI64(t, filepath.Join(dir, "ddim_trace_t.npy"))
	n := len(x)
	xb := Batch{N: shape[0], C: shape[1], H: shape[2], W: shape[3], Data: x}
	for k, tt := range ts {
		idx := slices.Index(sp.Schedule().Timesteps, int(tt))
		out := xb
		out.Data = eps[k*n : (k+1)*n]
		p, x0, err := sp.DDIMStep(out, xb, idx, 0, Batch{}, false)
		if err != nil {
			t.Fatal(err)
		}
		compare(t, "pred_original_sample", x0.Data, px0[k*n:(k+1)*n], 1e-5, 1e-5)
		compare(t, "prev_sample", p.Data, prev[k*n:(k+1)*n], 1e-5, 1e-5)
		xb.Data = prev[k*n : (k+1)*n]
	}
}

func gaussDiffusion(t *testing.T, T int, variance Variance) *Diffusion {
	cfg := DefaultConfig()
	cfg.Timesteps, cfg.Variance = T, variance
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func moments(x []float32) (mean, sd float64) {
	for _, v := range x {
		mean += float64(v)
	}
	mean /= float64(len(x))
	for _, v := range x {
		sd += (float64(v) - mean) * (float64(v) - mean)
	}
	return mean, math.Sqrt(sd / float64(len(x)))
}

// expectedMoments propagates the mean and variance of x through the
// sampler's linear steps for the Bayes-optimal Gaussian-data model (no
// clipping), from x_T ~ N(0, 1): an independent prediction of what the
// pixel-wise sampler must produce, including its discretisation bias.
func expectedMoments(base, sp *Diffusion, o Options, mu, s float64) (mean, sd float64) {
	m, v := 0.0, 1.0
	ss := sp.Schedule()
	for i := sp.T() - 1; i >= 0; i-- {
		ab, abp := ss.AlphasCumprod[i], ss.AlphasCumprodPrev[i]
		A := s * s * math.Sqrt(ab) / (ab*s*s + 1 - ab) // dE[x0|xt]/dxt
		x0m := mu + A*(m-math.Sqrt(ab)*mu)
		var k, add, mNew float64
		if o.Sampler == SamplerDDIM {
			sigma := o.Eta * math.Sqrt((1-abp)/(1-ab)*(1-ab/abp))
			dir := math.Sqrt(1 - abp - sigma*sigma)
			k = math.Sqrt(abp)*A + dir*(1-math.Sqrt(ab)*A)/math.Sqrt(1-ab)
			mNew = math.Sqrt(abp)*x0m + dir*(m-math.Sqrt(ab)*x0m)/math.Sqrt(1-ab)
			add = sigma * sigma
		} else {
			c1, c2 := ss.PosteriorMeanCoef1[i], ss.PosteriorMeanCoef2[i]
			k = c1*A + c2
			mNew = c1*x0m + c2*m
			if i > 0 {
				if sp.cfg.Variance == Learned {
					t := ss.Timesteps[i]
					b := base.Schedule()
					vx0 := s * s * (1 - ab) / (ab*s*s + 1 - ab)
					add = b.PosteriorVariance[t] + b.PosteriorMeanCoef1[t]*b.PosteriorMeanCoef1[t]*vx0
				} else {
					lv, _ := sp.logVariance(i, 0)
					add = math.Exp(lv)
				}
			}
		}
		m, v = mNew, k*k*v+add
	}
	return m, math.Sqrt(v)
}

// TestSampleGaussianData samples with the Bayes-optimal model of
// N(mu, s^2) data and checks the samples' mean and standard deviation
// against expectedMoments (which, for the exact learned variance over all
// steps, is the data's own).
func TestSampleGaussianData(t *testing.T) {
	const mu, s = 0.2, 0.3
	cases := []struct {
		name string
		v    Variance
		pred Prediction
		o    Options
	}{
		{"ddpm-full", FixedSmall, PredictEpsilon, Options{}},
		{"ddpm-large", FixedLarge, PredictEpsilon, Options{}},
		{"ddpm-learned", Learned, PredictEpsilon, Options{}},
		{"ddpm-respaced", FixedSmall, PredictEpsilon, Options{Steps: 20, Spacing: "linspace"}},
		{"ddim-eta0", FixedSmall, PredictEpsilon, Options{Sampler: SamplerDDIM, Steps: 25}},
		{"ddim-eta1", FixedSmall, PredictEpsilon, Options{Sampler: SamplerDDIM, Steps: 50, Eta: 1, Spacing: "trailing"}},
		{"ddim-sections", FixedSmall, PredictEpsilon, Options{Sampler: SamplerDDIM, Spacing: "ddim20"}},
		// Other parameterisations of the same optimal model: the x_0 and
		// epsilon they imply are the same, so are the moments.
		{"ddpm-x0", FixedSmall, PredictX0, Options{}},
		{"ddim-v", FixedSmall, PredictV, Options{Sampler: SamplerDDIM, Steps: 25}},
		{"ddim-v-model-eps", FixedSmall, PredictV, Options{Sampler: SamplerDDIM, Steps: 25, ModelEps: true}},
	}
	noClip := false
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Timesteps, cfg.Variance, cfg.Prediction = 100, c.v, c.pred
			d, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			m := newGauss(mu, s, c.pred, c.v.IsLearned(), d.Schedule())
			o := c.o
			o.N, o.C, o.H, o.W, o.Seed, o.Clip = 4, 1, 32, 32, 11, &noClip
			x, err := d.Sample(context.Background(), m, o)
			if err != nil {
				t.Fatal(err)
			}
			steps := o.Steps
			if steps == 0 {
				steps = 100
			}
			sp, _ := d.RespaceSteps(steps, o.Spacing)
			wm, ws := expectedMoments(d, sp, o, mu, s)
			// Only the last step's noise (Var(x_0 | x_1) ~ 1e-3, not added
			// at t = 0 by convention) separates it from the data's sd.
			if c.name == "ddpm-learned" && math.Abs(ws-s) > 3e-3 {
				t.Errorf("exact reverse process predicts sd %v, want the data's %v", ws, s)
			}
			gm, gs := moments(x.Data)
			// 4096 samples: standard errors about 0.005 (mean), 0.0035 (sd).
			if math.Abs(gm-wm) > 0.02 || math.Abs(gs-ws) > 0.012 {
				t.Errorf("samples mean %.4f sd %.4f, predicted %.4f %.4f", gm, gs, wm, ws)
			}
		})
	}
}

func TestSameSeedSameBytes(t *testing.T) {
	d := gaussDiffusion(t, 50, FixedSmall)
	m := newGauss(0, 0.5, PredictEpsilon, false, d.Schedule())
	for _, sampler := range []Sampler{SamplerDDPM, SamplerDDIM} {
		o := Options{Sampler: sampler, N: 2, C: 1, H: 8, W: 8, Seed: 42, Steps: 10}
		sample := func() []float32 {
			x, err := d.Sample(context.Background(), m, o)
			if err != nil {
				t.Fatal(err)
			}
			return x.Data
		}
		a, b := sample(), sample()
		if !slices.Equal(a, b) {
			t.Errorf("%s: same seed gave different output", sampler)
		}
		o.Seed = 43
		if slices.Equal(a, sample()) {
			t.Errorf("%s: different seeds gave the same output", sampler)
		}
	}
}

// TestDDIMEta0Deterministic runs DDIM with eta = 0 from a fixed x_T with
// no noise at all: two runs agree bit for bit, and a DDIM step accepts an
// empty noise batch.
func TestDDIMEta0Deterministic(t *testing.T) {
	d := gaussDiffusion(t, 100, FixedSmall)
	sp, _ := d.RespaceSteps(10, "trailing")
	m := newGauss(0.1, 0.4, PredictEpsilon, false, d.Schedule())
	xT := gaussData(newRNG(3), 2, 1, 8, 8, 0, 1)
	runOnce := func() []float32 {
		x := xT
		for i := sp.T() - 1; i >= 0; i-- {
			ts := []int{sp.Schedule().Timesteps[i], sp.Schedule().Timesteps[i]}
			out, _ := m.Predict(context.Background(), x, floats(ts), nil)
			var err error
			x, _, err = sp.DDIMStep(out, x, i, 0, Batch{}, false)
			if err != nil {
				t.Fatal(err)
			}
		}
		return x.Data
	}
	if !slices.Equal(runOnce(), runOnce()) {
		t.Error("DDIM eta=0 is not deterministic")
	}
	if _, _, err := sp.DDIMStep(NewBatch(2, 1, 8, 8), xT, 5, 0.5, Batch{}, false); err == nil {
		t.Error("eta > 0 without noise accepted")
	}
}

func TestImg2Img(t *testing.T) {
	d := gaussDiffusion(t, 50, FixedSmall)
	m := newGauss(0, 0.5, PredictEpsilon, false, d.Schedule())
	img := gaussData(newRNG(1), 2, 3, 4, 4, 0, 0.3)
	out, err := d.Sample(context.Background(), m, Options{Image: &img, Strength: 0, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Data, img.Data) {
		t.Error("strength 0 changed the image")
	}
	calls := 0
	o := Options{Image: &img, Strength: 0.4, Seed: 1, Progress: func(p Progress) { calls = p.Total }}
	out, err = d.Sample(context.Background(), m, o)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 20 || slices.Equal(out.Data, img.Data) {
		t.Errorf("strength 0.4 of 50 steps: %d model calls (want 20)", calls)
	}
}

func TestInpaintingKeepsKnownPixels(t *testing.T) {
	d := gaussDiffusion(t, 40, FixedLarge)
	m := newGauss(0, 0.5, PredictEpsilon, false, d.Schedule())
	img := gaussData(newRNG(2), 2, 3, 6, 6, 0, 0.4)
	for _, mc := range []int{1, 3} {
		mask := NewBatch(2, mc, 6, 6)
		for i := range mask.Data {
			if i%3 != 0 {
				mask.Data[i] = 1
			}
		}
		steps := 0
		o := Options{Image: &img, Mask: &mask, Seed: 5, JumpLength: 5, JumpNSample: 3, Progress: func(p Progress) { steps = p.Step }}
		out, err := d.Sample(context.Background(), m, o)
		if err != nil {
			t.Fatal(err)
		}
		D, HW := 3*36, 36
		changed := 0
		for i := range 2 {
			for j := range D {
				k := i*D + j
				var mv float32
				if mc == 1 {
					mv = mask.Data[i*HW+j%HW]
				} else {
					mv = mask.Data[k]
				}
				if mv == 1 && out.Data[k] != img.Data[k] {
					t.Fatalf("mask C=%d: known pixel %d changed: %v -> %v", mc, k, img.Data[k], out.Data[k])
				}
				if mv == 0 && out.Data[k] != img.Data[k] {
					changed++
				}
			}
		}
		if changed == 0 {
			t.Error("no unknown pixel was generated")
		}
		// 40 steps, jumps of 5 at levels 0..30 (7 of them), 2 extra
		// passes of 5 steps each: 40 + 7*2*5 = 110 model calls.
		if steps != 110 {
			t.Errorf("mask C=%d: %d model calls, want 110", mc, steps)
		}
	}
}

func TestRepaintLevels(t *testing.T) {
	got := repaintLevels(6, 2, 2)
	want := []int{6, 5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0}
	if !slices.Equal(got, want) {
		t.Errorf("levels %v, want %v", got, want)
	}
	if got := repaintLevels(3, 1, 1); !slices.Equal(got, []int{3, 2, 1, 0}) {
		t.Errorf("no jumps: %v", got)
	}
}

func TestSampleCancel(t *testing.T) {
	d := gaussDiffusion(t, 100, FixedSmall)
	m := newGauss(0, 0.5, PredictEpsilon, false, d.Schedule())
	ctx, cancel := context.WithCancel(context.Background())
	o := Options{N: 1, C: 1, H: 4, W: 4, Progress: func(p Progress) {
		if p.Step == 3 {
			cancel()
		}
	}}
	_, err := d.Sample(ctx, m, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if m.calls != 3 {
		t.Errorf("%d model calls after cancelling at 3", m.calls)
	}
}

// labelModel outputs its label as epsilon (the null class -1 gives -1) and
// records the labels of every call.
type labelModel struct {
	batches [][]int
}

// floats converts integer timesteps for Model.Predict.
func floats(t []int) []float64 {
	out := make([]float64, len(t))
	for i, v := range t {
		out[i] = float64(v)
	}
	return out
}

func (l *labelModel) Predict(ctx context.Context, x Batch, t []float64, y []int) (Batch, error) {
	l.batches = append(l.batches, slices.Clone(y))
	out := NewBatch(x.N, x.C, x.H, x.W)
	D := x.C * x.H * x.W
	for i := range x.N {
		for j := range D {
			out.Data[i*D+j] = float32(y[i])
		}
	}
	return out, nil
}

func TestGuidance(t *testing.T) {
	out := Batch{N: 4, C: 2, H: 1, W: 1, Data: []float32{1, 10, 2, 20, 0, 30, 1, 40}}
	g := guideOutput(out, 2, 1, true, 3)
	// mean: u + 3 (c - u); variance channel from the conditional pass.
	want := []float32{3, 10, 4, 20}
	if !slices.Equal(g.Data, want) {
		t.Errorf("guided %v, want %v", g.Data, want)
	}
	d := gaussDiffusion(t, 10, FixedSmall)
	m := &labelModel{}
	if _, err := d.Sample(context.Background(), m, Options{N: 2, C: 1, H: 2, W: 2, Labels: []int{3, 7}, Guidance: 2}); err != nil {
		t.Fatal(err)
	}
	if len(m.batches) != 10 || !slices.Equal(m.batches[0], []int{3, 7, -1, -1}) {
		t.Errorf("model calls %d, first labels %v: want 10 calls of [3 7 -1 -1]", len(m.batches), m.batches[0])
	}
	m = &labelModel{}
	if _, err := d.Sample(context.Background(), m, Options{N: 2, C: 1, H: 2, W: 2, Labels: []int{3, 7}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.batches[0], []int{3, 7}) {
		t.Errorf("no guidance: labels %v", m.batches[0])
	}
}

func TestOptionsValidate(t *testing.T) {
	img := NewBatch(1, 1, 4, 4)
	mask := NewBatch(1, 1, 4, 4)
	badMask := NewBatch(1, 2, 4, 4)
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"shape", Options{N: 0, C: 1, H: 1, W: 1}, "shape"},
		{"steps", Options{N: 1, C: 1, H: 1, W: 1, Steps: -1}, "steps"},
		{"eta range", Options{Sampler: SamplerDDIM, N: 1, C: 1, H: 1, W: 1, Eta: 2}, "eta"},
		{"eta ddpm", Options{N: 1, C: 1, H: 1, W: 1, Eta: 0.5}, "eta"},
		{"sampler", Options{Sampler: 99, N: 1, C: 1, H: 1, W: 1}, "sampler"},
		{"labels len", Options{N: 2, C: 1, H: 1, W: 1, Labels: []int{1}}, "labels"},
		{"label value", Options{N: 1, C: 1, H: 1, W: 1, Labels: []int{-2}}, "labels[0]"},
		{"guidance no labels", Options{N: 1, C: 1, H: 1, W: 1, Guidance: 3}, "guidance"},
		{"guidance nan", Options{N: 1, C: 1, H: 1, W: 1, Labels: []int{1}, Guidance: math.NaN()}, "guidance"},
		{"strength", Options{Image: &img, Strength: 1.5}, "strength"},
		{"strength no image", Options{N: 1, C: 1, H: 1, W: 1, Strength: 0.5}, "strength"},
		{"mask no image", Options{N: 1, C: 1, H: 4, W: 4, Mask: &mask}, "mask"},
		{"jump ddim", Options{Sampler: SamplerDDIM, Image: &img, Mask: &mask, JumpLength: 2}, "ddpm"},
		{"jump euler", Options{Sampler: SamplerEuler, Image: &img, Mask: &mask, JumpNSample: 2}, "ddpm"},
		{"eta euler", Options{Sampler: SamplerEuler, N: 1, C: 1, H: 1, W: 1, Eta: 0.5}, "eta"},
		{"eta scheduler", Options{Scheduler: &SchedulerConfig{ClassName: ClassEulerDiscrete}, Sampler: SamplerDDIM, N: 1, C: 1, H: 1, W: 1, Eta: 0.5}, "eta"},
		{"noise shape", Options{N: 1, C: 1, H: 4, W: 4, Noise: &badMask}, "noise shape"},
		{"noise nan", Options{N: 1, C: 1, H: 1, W: 1, Noise: &Batch{N: 1, C: 1, H: 1, W: 1, Data: []float32{float32(math.NaN())}}}, "noise value"},
		{"mask shape", Options{Image: &img, Mask: &badMask}, "mask shape"},
		{"jump no mask", Options{N: 1, C: 1, H: 1, W: 1, JumpLength: 3}, "mask"},
		{"too big", Options{N: 1 << 20, C: 1 << 20, H: 1, W: 1}, "at most"},
		{"shape vs image", Options{Image: &img, N: 3}, "image"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.o.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
		})
	}
	d := gaussDiffusion(t, 10, FixedSmall)
	if _, err := d.Sample(context.Background(), &labelModel{}, Options{N: 1, C: 1, H: 1, W: 1, Steps: 11}); err == nil || !strings.Contains(err.Error(), "steps") {
		t.Errorf("steps > T: %v", err)
	}
}

// TestSeedsPerImage: with Options.Seeds image i does not depend on the
// batch: it equals a run of that image alone with Seed = Seeds[i], for the
// native samplers and a diffusers solver, stochastic ones included.
func TestSeedsPerImage(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Timesteps = 50
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := newGauss(0.1, 0.4, PredictEpsilon, false, d.Schedule())
	eulerA, err := ParseSampler("euler-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Sampler{SamplerDDPM, SamplerDDIM, eulerA} {
		base := Options{Sampler: s, Steps: 10, C: 1, H: 4, W: 4}
		batch := base
		batch.N, batch.Seeds = 3, []uint64{5, 6, 7}
		all, err := d.Sample(context.Background(), m, batch)
		if err != nil {
			t.Fatalf("%v: %v", s, err)
		}
		one := base
		one.N, one.Seed = 1, 6
		alone, err := d.Sample(context.Background(), m, one)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(all.Data[16:32], alone.Data) {
			t.Errorf("%v: image 1 of a batch with Seeds differs from the image alone with its seed", s)
		}
		batch.Seeds = []uint64{1}
		if _, err := d.Sample(context.Background(), m, batch); err == nil {
			t.Errorf("%v: one seed for three images: no error", s)
		}
	}
}
