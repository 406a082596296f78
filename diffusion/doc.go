// Package diffusion implements Gaussian diffusion models (Ho et al. 2020,
// "Denoising Diffusion Probabilistic Models"; Nichol & Dhariwal 2021,
// "Improved Denoising Diffusion Probabilistic Models"; Song et al. 2021,
// "Denoising Diffusion Implicit Models") against a small Model interface: the
// network's parameterisations, the reverse process p(x_{t-1} | x_t), the
// training losses with their gradients, the NLL in bits per dimension and
// the samplers: DDPM ancestral, respaced DDPM and DDIM natively, and ports
// of every diffusers v0.21.4 scheduler (PNDM, DPM-Solver and DPM-Solver++
// multistep, singlestep and SDE, UniPC, DEIS, Euler, Euler ancestral,
// Heun, DPM-2, LMS; see NewScheduler), each with classifier-free
// guidance, SDEdit img2img and inpainting (RePaint for DDPM).
//
// Conventions: tensors are float32 in (N, C, H, W) order with images in
// [-1, 1]; schedule tables are float64 (package schedule); timesteps are
// 0-indexed, t = 0..T-1, so index t is the paper's step t+1 and "x_{t-1}"
// at t = 0 is the data x_0. A Model is always called with timesteps of its
// training schedule, also when sampling over a respaced one.
//
// The math follows improved-diffusion's gaussian_diffusion.py: the network
// predicts epsilon, x_0 or v (Salimans & Ho 2022) and optionally the
// variance; p(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) with
// mu_theta = coef1_t xhat_0 + coef2_t x_t (Ho Eq. 7 with x_0 replaced by its
// estimate). Losses are per example, averaged over all C*H*W dimensions
// ("mean_flat"), and the VLB terms are in bits.
//
// Training, one step (the trainer owns the network; LossFunc's closure has
// train.LossFunc's signature):
//
//	tb, _ := d.NewTrainingBatch(x0, sampler, rng)     // t, weights, eps, x_t
//	var terms diffusion.LossTerms
//	loss, _ := net.Step(ctx, tb.Xt, tb.T, y, seed, tb.LossFunc(d, &terms))
//	_ = sampler.Update(tb.T, terms.Loss)                // importance sampling of t
//
// Sampling: d.Sample(ctx, model, diffusion.Options{...}). Options.Sampler
// names the solver (ddpm, ddim, pndm, dpm++2m, dpm++3m, dpm++2m-sde,
// dpm++2s, unipc, deis, euler, euler-a, heun, dpm2, lms), Options.Karras
// switches Karras sigmas on, and Options.Scheduler, a diffusers
// scheduler_config.json (ParseSchedulerConfig), overrides both with every
// key honoured. ddpm and ddim without a scheduler config run natively
// (improved-diffusion's respacing); every other solver runs the loop of a
// diffusers pipeline, the model called at real-valued timesteps:
//
//	x = noise * s.InitNoiseSigma()              // Options.Noise, or drawn from Seed
//	for i, t := range s.Timesteps() {
//		out := model(s.ScaleModelInput(x, i), t, y) // guided: u + w (c - u)
//		x = s.Step(out, x, i, draw)
//	}
//
// so Options.Noise and the returned batch (the final sample, never
// clamped) reproduce a diffusers run. Likelihood:
// d.NLL(ctx, model, x0, y, rng, progress).
//
// Inputs are never modified; results are new batches. A Diffusion is
// immutable and safe for concurrent use.
//
// Nothing here uses global random state: every function that draws noise
// takes an explicit *rand.Rand (math/rand/v2) or a seed.
package diffusion
