package diffusion

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
)

// TestSchedDDPMDDIMTraces replays ../shared/fixtures/diffusers-scheduler:
// three steps of diffusers' DDPMScheduler (1000 steps, fixed_small,
// clipping, with the recorded variance noise) and DDIMScheduler (50
// leading steps, eta 0) on the small UNet's outputs.
func TestSchedDDPMDDIMTraces(t *testing.T) {
	dir := fixtures.Dir(t, "diffusers-scheduler")
	for _, tc := range []struct {
		name  string
		steps int
	}{{"ddpm", 1000}, {"ddim", 50}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loadSchedConfig(t, filepath.Join(dir, tc.name+"_config", "scheduler_config.json"))
			s, err := NewScheduler(cfg, tc.steps)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := schedNpy(t, filepath.Join(dir, tc.name+"_timesteps.npy")).Int64s()
			got := s.Timesteps()
			if len(got) != len(want) {
				t.Fatalf("%d timesteps, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != float64(want[i]) {
					t.Fatalf("timestep %d = %v, want %d", i, got[i], want[i])
				}
			}
			trace, _ := schedNpy(t, filepath.Join(dir, tc.name+"_trace_t.npy")).Int64s()
			init := schedNpy(t, filepath.Join(dir, tc.name+"_init_noise.npy"))
			outs := schedNpy(t, filepath.Join(dir, tc.name+"_model_output.npy")).Float32s()
			prevs := schedNpy(t, filepath.Join(dir, tc.name+"_prev_sample.npy")).Float32s()
			var noise []float32
			if tc.name == "ddpm" {
				noise = schedNpy(t, filepath.Join(dir, "ddpm_variance_noise.npy")).Float32s()
			}
			sh := init.Shape
			x := Batch{N: sh[0], C: sh[1], H: sh[2], W: sh[3], Data: init.Float32s()}
			D := x.Len()
			for k, tk := range trace {
				if got[k] != float64(tk) {
					t.Fatalf("call %d at %v, trace says %d", k, got[k], tk)
				}
				out := Batch{N: x.N, C: x.C, H: x.H, W: x.W, Data: outs[k*D : (k+1)*D]}
				y, err := s.Step(out, x, k, func(z Batch) {
					if noise == nil {
						t.Errorf("DDIM with eta 0 drew noise")
						return
					}
					copy(z.Data, noise[k*D:(k+1)*D])
				})
				if err != nil {
					t.Fatal(err)
				}
				ref := prevs[k*D : (k+1)*D]
				const abs, rel = 5e-7, 1e-5
				w, r := closeTo(y.Data, ref, abs, rel)
				if w > 1 {
					t.Errorf("step %d (t=%d): off by %.3g of abs %g + rel %g", k, tk, w, abs, rel)
				}
				t.Logf("%s t=%d: max rel err %.2e", tc.name, tk, r)
				if lv, ok := s.Level(k); !ok || lv != float64(tk)-float64(1000/tc.steps) {
					t.Errorf("Level(%d) = %v, %v", k, lv, ok)
				}
				x = Batch{N: x.N, C: x.C, H: x.H, W: x.W, Data: ref}
			}
		})
	}
}

// TestSchedDDPMMatchesDiffusion checks DDPMScheduler and DDIMScheduler
// against this package's own DDPMStep and DDIMStep (improved-diffusion's
// math, float64 schedule tables) on a config converted with
// Config.SchedulerConfig, for every variance type and prediction: they
// differ only by diffusers' float32 tables.
func TestSchedDDPMMatchesDiffusion(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randBatch := func(n, c int) Batch {
		b := NewBatch(n, c, 4, 4)
		for i := range b.Data {
			b.Data[i] = float32(rng.NormFloat64())
		}
		return b
	}
	for _, v := range []Variance{FixedSmall, FixedLarge, Learned, LearnedRange} {
		for _, p := range []Prediction{PredictEpsilon, PredictX0, PredictV} {
			for _, clip := range []bool{false, true} {
				cfg := DefaultConfig()
				cfg.Variance, cfg.Prediction, cfg.ClipDenoised = v, p, clip
				d, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				sc, err := cfg.SchedulerConfig()
				if err != nil {
					t.Fatal(err)
				}
				steps := 50
				sp, err := d.RespaceSteps(steps, "leading")
				if err != nil {
					t.Fatal(err)
				}
				ddpm, err := NewScheduler(sc, steps)
				if err != nil {
					t.Fatal(err)
				}
				sc.ClassName = ClassDDIM
				sc.Eta = 0.5
				ddim, err := NewScheduler(sc, steps)
				if err != nil {
					t.Fatal(err)
				}
				x := randBatch(2, 1)
				c := d.OutChannels(1)
				for k := range 5 {
					i := steps - 1 - k // respaced index of call k
					if int(ddpm.Timesteps()[k]) != sp.Schedule().Timesteps[i] {
						t.Fatalf("call %d at %v, respaced index %d is %d", k, ddpm.Timesteps()[k], i, sp.Schedule().Timesteps[i])
					}
					out := randBatch(2, c)
					if v == Learned {
						for j := 32; j < 64; j++ { // log variance, plausible range
							out.Data[j] = float32(-5 + 0.1*rng.NormFloat64())
						}
					}
					z := randBatch(2, 1)
					draw := func(b Batch) { copy(b.Data, z.Data) }
					want, _, err := sp.DDPMStep(out, x, i, z)
					if err != nil {
						t.Fatal(err)
					}
					got, err := ddpm.Step(out, x, k, draw)
					if err != nil {
						t.Fatal(err)
					}
					if w, _ := closeTo(got.Data, want.Data, 1e-4, 1e-4); w > 1 {
						t.Errorf("%v %v clip %v: DDPM call %d off by %.3g of 1e-4 + 1e-4 rel", v, p, clip, k, w)
					}
					wantI, _, err := sp.DDIMStep(out, x, i, 0.5, z, false)
					if err != nil {
						t.Fatal(err)
					}
					gotI, err := ddim.Step(out, x, k, draw)
					if err != nil {
						t.Fatal(err)
					}
					if w, _ := closeTo(gotI.Data, wantI.Data, 1e-4, 1e-4); w > 1 {
						t.Errorf("%v %v clip %v: DDIM call %d off by %.3g of 1e-4 + 1e-4 rel", v, p, clip, k, w)
					}
					x = want
				}
			}
		}
	}
}

// TestSchedDDIMClippedModelOutput: with ClippedModelOutput the DDIM step
// equals this package's DDIMStep(clippedEps = true).
func TestSchedDDIMClippedModelOutput(t *testing.T) {
	cfg := DefaultConfig()
	d, _ := New(cfg)
	sp, _ := d.RespaceSteps(10, "leading")
	sc, _ := cfg.SchedulerConfig()
	sc.ClassName, sc.ClippedModelOutput = ClassDDIM, true
	s, err := NewScheduler(sc, 10)
	if err != nil {
		t.Fatal(err)
	}
	x := NewBatch(1, 1, 2, 2)
	out := NewBatch(1, 1, 2, 2)
	for i := range x.Data {
		x.Data[i] = float32(i) - 1.5
		out.Data[i] = 3 - 2*float32(i) // x0 estimate far outside [-1, 1]
	}
	want, _, _ := sp.DDIMStep(out, x, 9, 0, Batch{}, true)
	got, err := s.Step(out, x, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, _, _ := sp.DDIMStep(out, x, 9, 0, Batch{}, false)
	if w, _ := closeTo(got.Data, want.Data, 1e-5, 1e-5); w > 1 {
		t.Errorf("clipped model output: got %v, want %v", got.Data, want.Data)
	}
	if math.Abs(float64(plain.Data[0]-want.Data[0])) < 1e-3 {
		t.Errorf("test is vacuous: clipping did not change epsilon")
	}
}

// diffusers' DDPMScheduler reads "learned" variance channels as the
// variance itself (std = sqrt(v)); LearnedLogVariance reads them as log
// Sigma, as improved-diffusion does.
func TestSchedDDPMLearnedVariance(t *testing.T) {
	for _, logv := range []bool{false, true} {
		c := SchedulerConfig{ClassName: ClassDDPM, VarianceType: ptr("learned"), ClipSample: ptr(false), LearnedLogVariance: logv}
		s, err := NewScheduler(c, 10)
		if err != nil {
			t.Fatal(err)
		}
		fixed, _ := NewScheduler(SchedulerConfig{ClassName: ClassDDPM, ClipSample: ptr(false)}, 10)
		x := NewBatch(1, 1, 1, 1)
		x.Data[0] = 0.7
		out := NewBatch(1, 2, 1, 1)
		out.Data[0], out.Data[1] = 0.1, 0.04
		one := func(z Batch) { z.Data[0] = 1 }
		zero := func(z Batch) { z.Data[0] = 0 }
		got, err := s.Step(out, x, 0, one)
		if err != nil {
			t.Fatal(err)
		}
		mean, _ := fixed.Step(Batch{N: 1, C: 1, H: 1, W: 1, Data: out.Data[:1]}, x, 0, zero)
		want := 0.2 // sqrt(0.04)
		if logv {
			want = math.Exp(0.5 * 0.04)
		}
		if d := float64(got.Data[0]-mean.Data[0]) - want; math.Abs(d) > 1e-6 {
			t.Errorf("LearnedLogVariance %v: noise std %v, want %v", logv, float64(got.Data[0]-mean.Data[0]), want)
		}
	}
}

// Thresholding of the DPM-Solver++ data prediction: a one-step run with
// final_sigmas_type zero returns the thresholded x_0 prediction itself.
func TestSchedDPMThresholding(t *testing.T) {
	c := SchedulerConfig{ClassName: ClassDPMSolverMultistep, SolverOrder: 1, FinalSigmasType: "zero", Thresholding: true, PredictionType: "sample", SampleMaxValue: ptr(2.0)}
	s, err := NewScheduler(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	x := NewBatch(2, 1, 4, 4)
	out := NewBatch(2, 1, 4, 4)
	for i := range out.Data {
		out.Data[i] = float32(i%16)/4 - 1.5 // up to 2.25 in |.|
	}
	got, err := s.Step(out, x, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range 2 {
		want := toF64(out.Data[n*16 : (n+1)*16])
		dynamicThreshold(want, 0.995, 2)
		for j := range want {
			if math.Abs(float64(got.Data[n*16+j])-want[j]) > 1e-6 {
				t.Fatalf("example %d: got %v, want %v", n, got.Data[n*16:(n+1)*16], want)
			}
		}
	}
	if m := got.Data[15]; !(m > 0.99 && m <= 1.0000001) {
		t.Errorf("largest value %v: thresholding should scale it to 1", m)
	}
}
