package diffusion

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
)

// exactMoments runs a scheduler on the analytic model of data N(mu, s^2)
// per pixel and returns the exact mean and standard deviation of the final
// sample. The model's epsilon is affine in x_t and every solver update is
// linear in the sample, the model outputs and the step noise, so the final
// sample is affine in the initial noise and the step noises, all
// independent N(0, 1): one example with every source 0 gives the mean, and
// one example per source set to 1 gives that source's coefficient; the
// variance is the sum of their squares. (Clipping or thresholding would
// break this; these runs use neither.)
func exactMoments(t *testing.T, cfg SchedulerConfig, steps int, mu, sd float64) (mean, std float64) {
	t.Helper()
	s, err := NewScheduler(cfg, steps)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := cfg.resolve()
	g := gaussEps{ac: newTrainTables(&rc).ac, mu: mu, s: sd, vPred: rc.PredictionType == "v_prediction", sample: rc.PredictionType == "sample"}
	ts := s.Timesteps()
	n := 2 + len(ts) // all zero, initial noise, one per call's step noise
	x := NewBatch(n, 1, 1, 1)
	x.Data[1] = float32(s.InitNoiseSigma())
	for k, tk := range ts {
		out := g.predict(s.ScaleModelInput(x, k), tk)
		x, err = s.Step(out, x, k, func(z Batch) {
			clear(z.Data)
			z.Data[2+k] = 1
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	mean = float64(x.Data[0])
	var v float64
	for e := 1; e < n; e++ {
		d := float64(x.Data[e]) - mean
		v += d * d
	}
	return mean, math.Sqrt(v)
}

// TestSchedulersSummary reproduces summary.json: diffusers' mean and std
// of 4,096 final samples per case. Ours are exact (exactMoments), so the
// tolerance is the sampling error of diffusers' estimate, taken as 4,096
// independent values: 4 standard errors, 4 sd/64 for the mean and
// 4 sd/sqrt(2*4096) for the std.
func TestSchedulersSummary(t *testing.T) {
	dir := fixtures.Dir(t, "diffusers-samplers")
	sum := loadSchedSummary(t, dir)
	names := make([]string, 0, len(sum.Cases))
	for k := range sum.Cases {
		names = append(names, k)
	}
	slices.Sort(names)
	var zbar, zsd []float64
	for _, name := range names {
		cs := sum.Cases[name]
		cfg := loadSchedConfig(t, filepath.Join(dir, name, "scheduler_config.json"))
		mean, std := exactMoments(t, cfg, cs.Steps, sum.DataMean, sum.DataStd)
		if cfg.AlgorithmType != "sde-dpmsolver++" && cfg.ClassName != ClassEulerAncestral {
			// deterministic: final = mean + std z per pixel, so diffusers'
			// estimates imply the sample mean and std of its 4,096 z
			zbar = append(zbar, (cs.Mean-mean)/std)
			zsd = append(zsd, cs.Std/std)
		}
		tolMean := 4 * cs.Std / math.Sqrt(4096)
		tolStd := 4 * cs.Std / math.Sqrt(2*4096)
		t.Logf("%-16s mean %.4f (diffusers %.4f)  std %.4f (diffusers %.4f)  [data 0.3, 0.5]", name, mean, cs.Mean, std, cs.Std)
		if math.Abs(mean-cs.Mean) > tolMean || math.Abs(std-cs.Std) > tolStd {
			t.Errorf("%s: mean %.4f std %.4f, diffusers' 4096 samples %.4f %.4f (tolerance %.4f, %.4f)", name, mean, std, cs.Mean, cs.Std, tolMean, tolStd)
		}
	}
	// Sharper: the deterministic runs all start from the same 4,096
	// noises, so all must imply the same sample mean and std of z (to 1e-3).
	t.Logf("diffusers' initial noise implied by the deterministic cases: mean %.4f..%.4f, std %.5f..%.5f", slices.Min(zbar), slices.Max(zbar), slices.Min(zsd), slices.Max(zsd))
	if slices.Max(zbar)-slices.Min(zbar) > 1e-3 || slices.Max(zsd)-slices.Min(zsd) > 1e-3 {
		t.Errorf("the deterministic cases disagree on diffusers' initial noise: mean %v, std %v", zbar, zsd)
	}
}

// TestSchedulersFinalStep compares v0.21.4's last step (to training
// timestep 0, second order when 15 or more steps) with the later diffusers
// options euler_at_final and final_sigmas_type zero: on the analytic model
// the second-order multistep solvers then land closer to the true std 0.5.
func TestSchedulersFinalStep(t *testing.T) {
	dir := fixtures.Dir(t, "diffusers-samplers")
	sum := loadSchedSummary(t, dir)
	for _, tc := range []struct {
		name   string
		euler  bool
		zero   bool
		better bool // must beat v0.21.4's std error
	}{
		{"dpmpp_2m", true, false, true},
		{"dpmpp_2m", false, true, true},
		// Karras timesteps end at 0: the last v0.21.4 step (0 -> 0) is
		// already a no-op, the overshoot is the second-order step before.
		{"dpmpp_2m_karras", true, false, false},
		{"dpmpp_2m_karras", false, true, false},
		{"dpmpp_2m_sde", false, true, true},
		{"dpmpp_3m", false, true, false},
		{"unipc_bh2", false, true, false},
		{"unipc_bh1_3", false, true, false},
		{"deis", true, false, false},
	} {
		cs := sum.Cases[tc.name]
		cfg := loadSchedConfig(t, filepath.Join(dir, tc.name, "scheduler_config.json"))
		_, std0 := exactMoments(t, cfg, cs.Steps, sum.DataMean, sum.DataStd)
		cfg.EulerAtFinal = tc.euler
		if tc.zero {
			cfg.FinalSigmasType = "zero"
		}
		mean1, std1 := exactMoments(t, cfg, cs.Steps, sum.DataMean, sum.DataStd)
		opt := "euler_at_final"
		if tc.zero {
			opt = "final_sigmas_type=zero"
		}
		t.Logf("%-16s %2d steps  std v0.21.4 %.4f (diffusers %.4f) -> %s %.4f (mean %.4f); true 0.5", tc.name, cs.Steps, std0, cs.Std, opt, std1, mean1)
		if tc.better && math.Abs(std1-0.5) >= math.Abs(std0-0.5) {
			t.Errorf("%s with %s: std %.4f is not closer to 0.5 than %.4f", tc.name, opt, std1, std0)
		}
	}
}
