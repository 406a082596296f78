package diffusion_test

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/ddpm-go/ddpm/diffusion"
)

// A diffusers scheduler_config.json drives a sampling loop shaped like a
// diffusers pipeline. The "model" is the ideal epsilon predictor for data
// that is always 0.5; it is called at the scheduler's training timesteps
// (0-indexed; fractional for the Euler family).
func ExampleNewScheduler() {
	cfg, err := diffusion.ParseSchedulerConfig([]byte(`{
		"_class_name": "DPMSolverMultistepScheduler",
		"num_train_timesteps": 1000, "beta_schedule": "linear",
		"algorithm_type": "dpmsolver++", "solver_order": 2,
		"lambda_min_clipped": -Infinity, "final_sigmas_type": "zero"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	s, err := diffusion.NewScheduler(cfg, 20)
	if err != nil {
		fmt.Println(err)
		return
	}
	d, _ := diffusion.New(diffusion.DefaultConfig()) // the same linear schedule, for alphabar
	ac := d.Schedule().AlphasCumprod
	model := func(x diffusion.Batch, t float64) diffusion.Batch {
		lo := int(t)
		ab := ac[lo]
		if lo+1 < len(ac) {
			ab += (t - float64(lo)) * (ac[lo+1] - ac[lo])
		}
		out := diffusion.NewBatch(x.N, x.C, x.H, x.W)
		for i, v := range x.Data {
			out.Data[i] = float32((float64(v) - math.Sqrt(ab)*0.5) / math.Sqrt(1-ab))
		}
		return out
	}

	rng := rand.New(rand.NewPCG(1, 2))
	draw := func(z diffusion.Batch) {
		for i := range z.Data {
			z.Data[i] = float32(rng.NormFloat64())
		}
	}
	x := diffusion.NewBatch(1, 1, 1, 4)
	draw(x)
	for i := range x.Data {
		x.Data[i] *= float32(s.InitNoiseSigma())
	}
	for i, t := range s.Timesteps() {
		out := model(s.ScaleModelInput(x, i), t)
		if x, err = s.Step(out, x, i, draw); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Printf("%d model calls, first at t=%v; sample %.3f\n", len(s.Timesteps()), s.Timesteps()[0], x.Data)
	// Output:
	// 20 model calls, first at t=999; sample [0.500 0.500 0.500 0.500]
}
