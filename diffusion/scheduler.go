package diffusion

// Scheduler is one sampling run of a diffusers-style scheduler (a
// "solver"): the sequence of model calls and the update after each. It is
// the contract between the sampling loop (Sample) and the solvers, which
// port diffusers v0.21.4's schedulers of the same names, and is shaped
// like a diffusers pipeline's loop:
//
//	x = noise * InitNoiseSigma()
//	for i, t := range Timesteps() {
//		out = model(ScaleModelInput(x, i), t)
//		x = Step(out, x, i, noise)
//	}
//
// Call indices i are 0-based positions in Timesteps(); a solver that
// calls the model more than once per step (Heun, KDPM2, PNDM's Runge-Kutta
// warm-up) lists every call. Timesteps are those of the training
// schedule, 0-indexed, and may be fractional (the Euler family).
//
// A Scheduler holds the state of one run (multistep history, the step
// counter) and is not safe for concurrent use; make one per run with
// NewScheduler. Step must be called once per call index, in order.
// Inputs are never modified.
type Scheduler interface {
	// Timesteps returns the training-schedule timestep of every model
	// call of the run, in order (diffusers' scheduler.timesteps).
	Timesteps() []float64
	// InitNoiseSigma is the factor on standard-normal starting noise
	// (1 for the variance-preserving solvers, sqrt(sigma_max^2 + 1) or
	// sigma_max for the Euler family, as diffusers defines it).
	InitNoiseSigma() float64
	// ScaleModelInput returns the model input of call i for the sample x
	// (x itself when the solver does not scale; x / sqrt(sigma^2 + 1) for
	// the Euler family).
	ScaleModelInput(x Batch, i int) Batch
	// Step returns the sample after call i from the model output out of
	// that call (N, C or 2C, H, W: learned-variance channels are used or
	// dropped as diffusers does) and the sample x that call saw.
	// Stochastic solvers fill noise (shaped like x) with standard-normal
	// values through draw, only when the step needs it.
	Step(out, x Batch, i int, draw func(noise Batch)) (Batch, error)
	// AddNoise is diffusers' add_noise: x0 noised to training timestep t
	// in the solver's own sample space (sqrt(ab) x0 + sqrt(1-ab) noise for
	// the variance-preserving solvers, x0 + sigma(t) noise for the Euler
	// family). Used for img2img and inpainting.
	AddNoise(x0, noise Batch, t float64) Batch
	// Level reports the timestep the sample sits at after call i and true,
	// or false when call i ends inside a multi-call step (a Heun
	// predictor). After the last call the level is -1 (the data).
	Level(i int) (t float64, ok bool)
}
