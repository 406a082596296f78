package diffusion_test

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion"
)

// Sampling with a diffusers solver by its short name: the process's own
// schedule and prediction carry over (Config.SchedulerConfig), Karras
// switches Karras sigmas on, and Progress counts model calls (Heun calls
// the model twice per step but once on the last). The data is the
// constant 0.5; the multistep solvers of v0.21.4 end at training timestep
// 0 (sigma 0.01), not on the data, so a little noise remains.
func ExampleDiffusion_Sample_solvers() {
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, o := range []diffusion.Options{
		{Sampler: diffusion.SamplerDPMPP2M, Karras: true},
		{Sampler: diffusion.SamplerHeun},
	} {
		calls := 0
		o.Steps, o.Seed, o.N, o.C, o.H, o.W = 10, 1, 1, 1, 1, 2
		o.Progress = func(p diffusion.Progress) { calls = p.Step }
		x, err := d.Sample(context.Background(), meanModel{c: 0.5, d: d}, o)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s: %d model calls, %.3f\n", o.Sampler, calls, x.Data)
	}
	// An explicit diffusers config (e.g. a pipeline's
	// scheduler_config.json) wins over Sampler.
	sc, err := diffusion.ParseSchedulerConfig([]byte(`{"_class_name": "UniPCMultistepScheduler", "solver_order": 3}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	x, err := d.Sample(context.Background(), meanModel{c: 0.5, d: d}, diffusion.Options{Scheduler: &sc, Steps: 10, N: 1, C: 1, H: 1, W: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %.3f\n", sc.ClassName, x.Data)
	// Output:
	// dpm++2m: 10 model calls, [0.477 0.491]
	// heun: 19 model calls, [0.500 0.500]
	// UniPCMultistepScheduler: [0.483 0.495]
}
