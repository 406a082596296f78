package diffusion

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// schedVariants are configs covering every solver, order and option,
// including those without a diffusers fixture.
func schedVariants() map[string]SchedulerConfig {
	v := map[string]SchedulerConfig{}
	add := func(name string, c SchedulerConfig) { v[name] = c }
	add("ddpm", SchedulerConfig{ClassName: ClassDDPM, ClipSample: ptr(false)})
	add("ddpm-fixed_large", SchedulerConfig{ClassName: ClassDDPM, ClipSample: ptr(false), VarianceType: ptr("fixed_large")})
	add("ddim", SchedulerConfig{ClassName: ClassDDIM, ClipSample: ptr(false)})
	add("ddim-eta1-linspace", SchedulerConfig{ClassName: ClassDDIM, ClipSample: ptr(false), Eta: 1, TimestepSpacing: "linspace"})
	add("ddim-trailing-clippedeps", SchedulerConfig{ClassName: ClassDDIM, ClipSample: ptr(false), TimestepSpacing: "trailing", ClippedModelOutput: true})
	add("pndm-prk", SchedulerConfig{ClassName: ClassPNDM})
	add("pndm-plms-v", SchedulerConfig{ClassName: ClassPNDM, SkipPRKSteps: true, PredictionType: "v_prediction"})
	add("pndm-plms-sample", SchedulerConfig{ClassName: ClassPNDM, SkipPRKSteps: true, PredictionType: "sample", SetAlphaToOne: ptr(true)})
	for _, alg := range []string{"dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"} {
		for order := 1; order <= 3; order++ {
			for _, st := range []string{"midpoint", "heun"} {
				if order == 3 && strings.HasPrefix(alg, "sde") {
					continue // diffusers has no third-order SDE update (it runs the ODE one)
				}
				add(fmt.Sprintf("dpm-%s-%d-%s", alg, order, st), SchedulerConfig{ClassName: ClassDPMSolverMultistep, AlgorithmType: alg, SolverOrder: order, SolverType: st})
			}
		}
	}
	add("dpm-sde-dpmsolver++-2-eulerfinal", SchedulerConfig{ClassName: ClassDPMSolverMultistep, AlgorithmType: "sde-dpmsolver++", EulerAtFinal: true})
	add("dpm++-karras-zero", SchedulerConfig{ClassName: ClassDPMSolverMultistep, UseKarrasSigmas: true, FinalSigmasType: "zero"})
	add("dpm++-sample-leading", SchedulerConfig{ClassName: ClassDPMSolverMultistep, PredictionType: "sample", TimestepSpacing: "leading", StepsOffset: 1, EulerAtFinal: true})
	add("dpm-v-trailing-lambdaclip", SchedulerConfig{ClassName: ClassDPMSolverMultistep, PredictionType: "v_prediction", TimestepSpacing: "trailing", LambdaMinClipped: ptr(-5.1), LowerOrderFinal: ptr(false)})
	for _, alg := range []string{"dpmsolver", "dpmsolver++"} {
		for order := 1; order <= 3; order++ {
			for _, st := range []string{"midpoint", "heun"} {
				add(fmt.Sprintf("single-%s-%d-%s", alg, order, st), SchedulerConfig{ClassName: ClassDPMSolverSinglestep, AlgorithmType: alg, SolverOrder: order, SolverType: st})
			}
		}
	}
	add("single-karras-zero", SchedulerConfig{ClassName: ClassDPMSolverSinglestep, UseKarrasSigmas: true, FinalSigmasType: "zero"})
	add("single-3-nolof", SchedulerConfig{ClassName: ClassDPMSolverSinglestep, SolverOrder: 3, LowerOrderFinal: ptr(false)})
	for order := 1; order <= 3; order++ {
		add(fmt.Sprintf("deis-%d", order), SchedulerConfig{ClassName: ClassDEISMultistep, SolverOrder: order})
		for _, st := range []string{"bh1", "bh2"} {
			add(fmt.Sprintf("unipc-%s-%d", st, order), SchedulerConfig{ClassName: ClassUniPCMultistep, SolverOrder: order, SolverType: st})
			add(fmt.Sprintf("unipc-%s-%d-eps", st, order), SchedulerConfig{ClassName: ClassUniPCMultistep, SolverOrder: order, SolverType: st, PredictX0: ptr(false)})
		}
	}
	add("deis-karras-v", SchedulerConfig{ClassName: ClassDEISMultistep, UseKarrasSigmas: true, PredictionType: "v_prediction"})
	add("unipc-karras-zero", SchedulerConfig{ClassName: ClassUniPCMultistep, UseKarrasSigmas: true, FinalSigmasType: "zero", SolverOrder: 3, LowerOrderFinal: ptr(false)})
	add("unipc-nocorrector", SchedulerConfig{ClassName: ClassUniPCMultistep, DisableCorrector: []int{0, 1, 2}})
	add("euler", SchedulerConfig{ClassName: ClassEulerDiscrete})
	add("euler-karras", SchedulerConfig{ClassName: ClassEulerDiscrete, UseKarrasSigmas: true})
	add("euler-leading-sample", SchedulerConfig{ClassName: ClassEulerDiscrete, TimestepSpacing: "leading", StepsOffset: 1, PredictionType: "sample"})
	add("euler-loglinear", SchedulerConfig{ClassName: ClassEulerDiscrete, InterpolationType: "log_linear"})
	add("euler-a", SchedulerConfig{ClassName: ClassEulerAncestral})
	add("euler-a-trailing-v", SchedulerConfig{ClassName: ClassEulerAncestral, TimestepSpacing: "trailing", PredictionType: "v_prediction"})
	add("heun", SchedulerConfig{ClassName: ClassHeunDiscrete, BetaStart: ptr(1e-4), BetaEnd: ptr(0.02)})
	add("heun-karras-v", SchedulerConfig{ClassName: ClassHeunDiscrete, BetaStart: ptr(1e-4), BetaEnd: ptr(0.02), UseKarrasSigmas: true, PredictionType: "v_prediction"})
	add("kdpm2", SchedulerConfig{ClassName: ClassKDPM2Discrete, BetaStart: ptr(1e-4), BetaEnd: ptr(0.02)})
	add("kdpm2-leading-sample", SchedulerConfig{ClassName: ClassKDPM2Discrete, BetaStart: ptr(1e-4), BetaEnd: ptr(0.02), TimestepSpacing: "leading", PredictionType: "sample"})
	add("lms", SchedulerConfig{ClassName: ClassLMSDiscrete})
	add("lms-karras", SchedulerConfig{ClassName: ClassLMSDiscrete, UseKarrasSigmas: true})
	return v
}

// Every solver and option converges on the analytic model: with 50 steps
// the exact final mean is within 0.01 of 0.3 and the std within 0.06 of
// 0.5 (the first-order ancestral samplers are the least accurate, 0.444),
// except where v0.21.4 itself does not converge (tolerances below). With
// 10 steps it is a sanity check (finite, mean within 0.05, std in
// 0.25..2): the second-order singlestep and noise-prediction SDE solvers
// overshoot badly there, as diffusers' do.
func TestSchedulersConverge(t *testing.T) {
	vs := schedVariants()
	names := make([]string, 0, len(vs))
	for k := range vs {
		names = append(names, k)
	}
	slices.Sort(names)
	tolStd := map[string]float64{
		// v0.21.4's second-order last step from t = 20 to t = 0 (>= 15
		// steps: no lower_order_final); see TestSchedulersFinalStep
		"dpm-sde-dpmsolver++-2-heun":     0.2,
		"dpm-sde-dpmsolver++-2-midpoint": 0.1,
		// v0.21.4's log_linear sigmas (n+1 log-spaced, for sigma-conditioned
		// models such as the SD latent upscaler) do not match the
		// timesteps the model is called with: no convergence on a
		// timestep-conditioned model
		"euler-loglinear": -1,
	}
	var log strings.Builder
	for _, name := range names {
		c := vs[name]
		m50, s50 := exactMoments(t, c, 50, 0.3, 0.5)
		m10, s10 := exactMoments(t, c, 10, 0.3, 0.5)
		fmt.Fprintf(&log, "\n%-30s 50 steps: mean %.4f std %.4f   10 steps: mean %.4f std %.4f", name, m50, s50, m10, s10)
		tol, ok := tolStd[name]
		if !ok {
			tol = 0.06
		}
		if tol > 0 && !(math.Abs(m50-0.3) < 0.01 && math.Abs(s50-0.5) < tol) {
			t.Errorf("%s, 50 steps: mean %.4f std %.4f, want 0.3 +- 0.01, 0.5 +- %g", name, m50, s50, tol)
		}
		if tol > 0 && !(math.Abs(m10-0.3) < 0.05 && s10 > 0.25 && s10 < 2) {
			t.Errorf("%s, 10 steps: mean %.4f std %.4f, want 0.3 +- 0.05, std in 0.25..2", name, m10, s10)
		}
	}
	t.Log(log.String())
}
