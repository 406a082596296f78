package diffusion

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
)

// FuzzParseSchedulerConfig: no scheduler_config.json, however odd, makes
// ParseSchedulerConfig, NewScheduler or a run of Step panic.
func FuzzParseSchedulerConfig(f *testing.F) {
	if root, ok := fixtures.Root(); ok {
		matches, _ := filepath.Glob(filepath.Join(root, "diffusers-samplers", "*", "scheduler_config.json"))
		for _, m := range matches {
			if data, err := os.ReadFile(m); err == nil {
				f.Add(data, uint8(7))
			}
		}
	}
	for _, s := range []string{
		`{"_class_name": "PNDMScheduler", "num_train_timesteps": 10}`,
		`{"_class_name": "DDIMScheduler", "timestep_spacing": "trailing", "steps_offset": 9, "num_train_timesteps": 10}`,
		`{"_class_name": "DPMSolverSinglestepScheduler", "solver_order": 3, "lower_order_final": false, "use_karras_sigmas": true}`,
		`{"_class_name": "UniPCMultistepScheduler", "solver_order": 3, "final_sigmas_type": "zero", "disable_corrector": [0, 5]}`,
		`{"_class_name": "KDPM2DiscreteScheduler", "trained_betas": [0.5, 0.5, 0.9]}`,
		`{"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": true, "prediction_type": "v_prediction", "thresholding": true}`,
		`{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": 100}`,
		`{"_class_name": "LMSDiscreteScheduler", "timestep_spacing": "leading", "steps_offset": 999}`,
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, steps uint8) {
		c, err := ParseSchedulerConfig(data)
		if err != nil {
			return
		}
		if c.NumTrainTimesteps > 5000 || len(c.TrainedBetas) > 5000 {
			return // valid, but slow to fuzz
		}
		s, err := NewScheduler(c, int(steps))
		if err != nil {
			return
		}
		x := NewBatch(2, 1, 2, 2)
		for i := range x.Data {
			x.Data[i] = float32(i) - 3
		}
		draw := func(z Batch) {
			for i := range z.Data {
				z.Data[i] = 0.5
			}
		}
		ts := s.Timesteps()
		for k := range ts {
			out := scaleBatch(s.ScaleModelInput(x, k), 0.1)
			out2 := NewBatch(2, 2, 2, 2)
			copy(out2.Data, out.Data)
			if k%2 == 1 {
				out = out2
			}
			y, err := s.Step(out, x, k, draw)
			if err != nil {
				if *mustResolve(t, c).VarianceType == "learned" || *mustResolve(t, c).VarianceType == "learned_range" {
					if y, err = s.Step(out2, x, k, draw); err == nil {
						x = y
						continue
					}
				}
				t.Fatalf("call %d: %v", k, err)
			}
			x = y
			s.Level(k)
		}
		s.AddNoise(x, x, ts[0])
	})
}

func mustResolve(t *testing.T, c SchedulerConfig) SchedulerConfig {
	r, err := c.resolve()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSchedulersEdgeSteps runs every class and spacing at the edges of the
// step range (1, 2, 3, T-1, T) and small T: no panic, no error, finite
// samples, Level -1 at the end.
func TestSchedulersEdgeSteps(t *testing.T) {
	for _, class := range schedulerClasses {
		for _, sp := range []string{"leading", "linspace", "trailing"} {
			for _, karras := range []bool{false, true} {
				for _, T := range []int{2, 3, 10, 100} {
					for _, steps := range []int{1, 2, 3, 4, T - 1, T} {
						if steps < 1 || steps > T {
							continue
						}
						c := SchedulerConfig{ClassName: class, NumTrainTimesteps: T, TimestepSpacing: sp, UseKarrasSigmas: karras, StepsOffset: T / 10, ClipSample: ptr(false)}
						if class == ClassPNDM && steps < 4 {
							c.SkipPRKSteps = true
						}
						name := fmt.Sprintf("%s/%s/karras=%v/T=%d/steps=%d", class, sp, karras, T, steps)
						s, err := NewScheduler(c, steps)
						if err != nil && sp == "leading" && strings.Contains(err.Error(), "beyond num_train_timesteps-1") {
							continue
						}
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						x := NewBatch(1, 1, 1, 2)
						x.Data[0], x.Data[1] = 1, -1
						x = scaleBatch(x, s.InitNoiseSigma())
						ts := s.Timesteps()
						if len(ts) == 0 {
							t.Fatalf("%s: no timesteps", name)
						}
						for k, tk := range ts {
							if !(tk >= 0 && tk <= float64(T-1)) {
								t.Errorf("%s: timestep %v outside 0..%d", name, tk, T-1)
							}
							out := scaleBatch(s.ScaleModelInput(x, k), 0.5)
							if x, err = s.Step(out, x, k, func(z Batch) { clear(z.Data) }); err != nil {
								t.Fatalf("%s call %d: %v", name, k, err)
							}
							for _, v := range x.Data {
								if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
									t.Fatalf("%s call %d (t=%v): non-finite sample %v", name, k, tk, x.Data)
								}
							}
						}
						if lv, ok := s.Level(len(ts) - 1); !ok || lv != -1 {
							t.Errorf("%s: final Level %v %v", name, lv, ok)
						}
					}
				}
			}
		}
	}
}
