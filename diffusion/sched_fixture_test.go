package diffusion

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
	"github.com/ddpm-go/ddpm/npy"
)

// The fixtures in ../shared/fixtures/diffusers-samplers are fourteen runs
// of diffusers v0.21.4 schedulers (PyTorch 1.13, CPU, float32) driven by
// the exact noise predictor of data x_0 ~ N(0.3, 0.5^2) per pixel (see
// ../shared/fixtures/README.md). Every model input, output and step result
// is recorded, and the step noise of the stochastic ones.

func schedNpy(t *testing.T, path string) *npy.Array {
	t.Helper()
	a, err := npy.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// schedSummary is summary.json.
type schedSummary struct {
	DataMean float64 `json:"data_mean"`
	DataStd  float64 `json:"data_std"`
	Cases    map[string]struct {
		Scheduler  string  `json:"scheduler"`
		Steps      int     `json:"steps"`
		ModelCalls int     `json:"model_calls"`
		Mean       float64 `json:"final_mean_4096"`
		Std        float64 `json:"final_std_4096"`
	} `json:"cases"`
}

func loadSchedSummary(t *testing.T, dir string) schedSummary {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s schedSummary
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Cases) != 14 {
		t.Fatalf("summary.json has %d cases, want 14", len(s.Cases))
	}
	return s
}

func loadSchedConfig(t *testing.T, path string) SchedulerConfig {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseSchedulerConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// gaussEps is the fixtures' analytic model: the Bayes-optimal epsilon (or
// v) for data N(mu, s^2) per pixel at a possibly fractional training
// timestep, with alphabar interpolated linearly in t, computed in float64
// and returned as float32.
type gaussEps struct {
	ac     []float64
	mu, s  float64
	vPred  bool
	sample bool // predict x_0
}

func (g gaussEps) predict(x Batch, t float64) Batch {
	ab := npInterp(t, g.ac)
	out := Batch{N: x.N, C: x.C, H: x.H, W: x.W, Data: make([]float32, len(x.Data))}
	for j, v := range x.Data {
		xt := float64(v)
		eps := math.Sqrt(1-ab) * (xt - math.Sqrt(ab)*g.mu) / (ab*g.s*g.s + 1 - ab)
		x0 := (xt - math.Sqrt(1-ab)*eps) / math.Sqrt(ab)
		o := eps
		switch {
		case g.vPred:
			o = math.Sqrt(ab)*eps - math.Sqrt(1-ab)*x0
		case g.sample:
			o = x0
		}
		out.Data[j] = float32(o)
	}
	return out
}

// closeTo reports the largest |got - ref| / (abs + rel |ref|) (<= 1 passes)
// and the largest relative error |got - ref| / |ref| over |ref| >= 1e-3.
func closeTo(got, ref []float32, abs, rel float64) (worst, maxRel float64) {
	for j := range ref {
		d := math.Abs(float64(got[j]) - float64(ref[j]))
		r := math.Abs(float64(ref[j]))
		if q := d / (abs + rel*r); q > worst || math.IsNaN(d) {
			worst = q
			if math.IsNaN(d) {
				worst = math.Inf(1)
			}
		}
		if r >= 1e-3 && d/r > maxRel {
			maxRel = d / r
		}
	}
	return
}

// normRel is max |got - ref| / max |ref|.
func normRel(got, ref []float32) float64 {
	var d, r float64
	for j := range ref {
		d = max(d, math.Abs(float64(got[j])-float64(ref[j])))
		r = max(r, math.Abs(float64(ref[j])))
	}
	return d / r
}

func TestSchedulersReplayDiffusers(t *testing.T) {
	dir := fixtures.Dir(t, "diffusers-samplers")
	sum := loadSchedSummary(t, dir)
	names := make([]string, 0, len(sum.Cases))
	for k := range sum.Cases {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, name := range names {
		cs := sum.Cases[name]
		t.Run(name, func(t *testing.T) {
			d := filepath.Join(dir, name)
			cfg := loadSchedConfig(t, filepath.Join(d, "scheduler_config.json"))
			if cfg.ClassName != cs.Scheduler {
				t.Fatalf("class %s, summary says %s", cfg.ClassName, cs.Scheduler)
			}
			s, err := NewScheduler(cfg, cs.Steps)
			if err != nil {
				t.Fatal(err)
			}
			wantTs := schedNpy(t, filepath.Join(d, "timesteps.npy")).Float64s()
			gotTs := s.Timesteps()
			if len(gotTs) != len(wantTs) || len(gotTs) != cs.ModelCalls {
				t.Fatalf("timesteps: %d calls, want %d (%d in summary)\ngot  %v\nwant %v", len(gotTs), len(wantTs), cs.ModelCalls, gotTs, wantTs)
			}
			for k := range wantTs {
				// Exact, except the fractional Karras timesteps
				// (_sigma_to_t), which interpolate numpy's float32 log of
				// the training sigmas: numpy's SIMD log is not correctly
				// rounded, so they agree to 1e-4 (measured: 1.5e-5).
				tol := 0.0
				if cfg.UseKarrasSigmas && cfg.ClassName == ClassEulerDiscrete {
					tol = 1e-4
				}
				if d := math.Abs(gotTs[k] - wantTs[k]); d > tol {
					t.Errorf("timestep %d: got %.17g, want %.17g", k, gotTs[k], wantTs[k])
				}
			}
			init := schedNpy(t, filepath.Join(d, "init_noise.npy"))
			inp := schedNpy(t, filepath.Join(d, "model_input.npy")).Float32s()
			outs := schedNpy(t, filepath.Join(d, "model_output.npy")).Float32s()
			prevs := schedNpy(t, filepath.Join(d, "prev_sample.npy")).Float32s()
			var noise []float32
			var used []float64
			if _, err := os.Stat(filepath.Join(d, "step_noise.npy")); err == nil {
				noise = schedNpy(t, filepath.Join(d, "step_noise.npy")).Float32s()
				used = schedNpy(t, filepath.Join(d, "step_noise_used.npy")).Float64s()
			}
			sh := init.Shape
			x := Batch{N: sh[0], C: sh[1], H: sh[2], W: sh[3], Data: init.Float32s()}
			x = scaleBatch(x, s.InitNoiseSigma())
			D := x.Len()

			// Teacher-forced replay: each call sees diffusers' sample and
			// model output; every scaled input and step result must match
			// to abs 5e-7 + rel 1e-5 elementwise (samples reach |x| ~ 5,
			// where float32 resolution is 5e-7).
			const abs, rel = 5e-7, 1e-5
			var worstIn, worstOut, relIn, relOut, normOut float64
			cur := x
			for k := range wantTs {
				mi := s.ScaleModelInput(cur, k)
				w, r := closeTo(mi.Data, inp[k*D:(k+1)*D], abs, rel)
				worstIn, relIn = max(worstIn, w), max(relIn, r)
				if w > 1 {
					t.Errorf("call %d: model input off by %.3g of abs %g + rel %g", k, w, abs, rel)
				}
				mo := Batch{N: x.N, C: x.C, H: x.H, W: x.W, Data: outs[k*D : (k+1)*D]}
				drew := false
				draw := func(z Batch) {
					drew = true
					if noise == nil {
						t.Errorf("call %d: a deterministic scheduler drew noise", k)
						return
					}
					copy(z.Data, noise[k*D:(k+1)*D])
				}
				got, err := s.Step(mo, cur, k, draw)
				if err != nil {
					t.Fatalf("call %d: %v", k, err)
				}
				if drew && used[k] == 0 {
					t.Errorf("call %d: drew noise where diffusers drew none", k)
				}
				ref := prevs[k*D : (k+1)*D]
				w, r = closeTo(got.Data, ref, abs, rel)
				worstOut, relOut = max(worstOut, w), max(relOut, r)
				normOut = max(normOut, normRel(got.Data, ref))
				if w > 1 {
					t.Errorf("call %d (t=%v): prev_sample off by %.3g of abs %g + rel %g", k, wantTs[k], w, abs, rel)
				}
				cur = Batch{N: x.N, C: x.C, H: x.H, W: x.W, Data: ref}
			}

			// Free run: our own chain with the Go analytic model and the
			// recorded noise, against final.npy.
			fr, _ := NewScheduler(cfg, cs.Steps)
			rc, _ := cfg.resolve()
			g := gaussEps{ac: newTrainTables(&rc).ac, mu: 0.3, s: 0.5, vPred: cfg.PredictionType == "v_prediction"}
			cur = x
			for k, tk := range fr.Timesteps() {
				mo := g.predict(fr.ScaleModelInput(cur, k), tk)
				cur, err = fr.Step(mo, cur, k, func(z Batch) { copy(z.Data, noise[k*D:(k+1)*D]) })
				if err != nil {
					t.Fatal(err)
				}
			}
			final := schedNpy(t, filepath.Join(d, "final.npy")).Float32s()
			wf, rf := closeTo(cur.Data, final, 1e-5, 1e-4)
			if wf > 1 {
				t.Errorf("free run: final off by %.3g of abs 1e-5 + rel 1e-4", wf)
			}
			t.Logf("%-16s %-32s calls %2d  elementwise max rel err (|ref| >= 1e-3): model_input %.1e, prev_sample %.1e; max|d|/max|ref| %.1e; free-run final %.1e", name, cfg.ClassName, len(wantTs), relIn, relOut, normOut, rf)
		})
	}
}
