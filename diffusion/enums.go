package diffusion

import (
	"fmt"
	"strings"
)

// Prediction is what the network's mean channels predict
// (improved-diffusion's ModelMeanType, diffusers' prediction_type).
type Prediction int

const (
	// PredictEpsilon: the noise eps in x_t = sqrt(alphabar_t) x_0 +
	// sqrt(1 - alphabar_t) eps (Ho et al. 2020, Eq. 11).
	PredictEpsilon Prediction = iota
	// PredictX0: x_0 itself (diffusers' "sample").
	PredictX0
	// PredictV: v = sqrt(alphabar_t) eps - sqrt(1 - alphabar_t) x_0
	// (Salimans & Ho 2022, "Progressive Distillation", Sec. 4).
	PredictV
)

// String returns "epsilon", "sample" or "v_prediction" (the diffusers names).
func (p Prediction) String() string {
	switch p {
	case PredictEpsilon:
		return "epsilon"
	case PredictX0:
		return "sample"
	case PredictV:
		return "v_prediction"
	}
	return fmt.Sprintf("Prediction(%d)", int(p))
}

// ParsePrediction accepts "epsilon"/"eps", "sample"/"x0"/"x_0" and
// "v_prediction"/"v".
func ParsePrediction(s string) (Prediction, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "epsilon", "eps":
		return PredictEpsilon, nil
	case "sample", "x0", "x_0", "start_x", "xstart":
		return PredictX0, nil
	case "v_prediction", "v":
		return PredictV, nil
	}
	return 0, fmt.Errorf("diffusion: unknown prediction %q: allowed are epsilon (eps), sample (x0), v_prediction (v)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (p Prediction) MarshalText() ([]byte, error) {
	if p < PredictEpsilon || p > PredictV {
		return nil, fmt.Errorf("diffusion: cannot marshal %v", p)
	}
	return []byte(p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; on error the value
// is left unchanged.
func (p *Prediction) UnmarshalText(b []byte) error {
	v, err := ParsePrediction(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Variance is how Sigma_theta(x_t, t) of p(x_{t-1} | x_t) is chosen
// (improved-diffusion's ModelVarType).
type Variance int

const (
	// FixedSmall: Sigma = betatilde_t, the posterior variance (Ho et al.
	// 2020, Sec. 3.2; log clipped at t = 0). diffusers' "fixed_small".
	FixedSmall Variance = iota
	// FixedLarge: Sigma = beta_t, with betatilde_1 at t = 0 so the decoder
	// has a sensible variance. diffusers' "fixed_large".
	FixedLarge
	// Learned: the network's variance channels are log Sigma directly.
	// diffusers' "learned".
	Learned
	// LearnedRange: the network outputs v in [-1, 1] and
	// log Sigma = (v+1)/2 log beta_t + (1-v)/2 log betatilde_t
	// (Nichol & Dhariwal 2021, Eq. 15). diffusers' "learned_range".
	LearnedRange
)

// String returns "fixed_small", "fixed_large", "learned" or "learned_range".
func (v Variance) String() string {
	switch v {
	case FixedSmall:
		return "fixed_small"
	case FixedLarge:
		return "fixed_large"
	case Learned:
		return "learned"
	case LearnedRange:
		return "learned_range"
	}
	return fmt.Sprintf("Variance(%d)", int(v))
}

// IsLearned reports whether the network outputs variance channels (so its
// output has 2C channels).
func (v Variance) IsLearned() bool { return v == Learned || v == LearnedRange }

// ParseVariance accepts the String names with '-' or '_'.
func ParseVariance(s string) (Variance, error) {
	switch strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", "_") {
	case "fixed_small", "fixedsmall":
		return FixedSmall, nil
	case "fixed_large", "fixedlarge":
		return FixedLarge, nil
	case "learned":
		return Learned, nil
	case "learned_range", "learnedrange":
		return LearnedRange, nil
	}
	return 0, fmt.Errorf("diffusion: unknown variance %q: allowed are fixed_small, fixed_large, learned, learned_range", s)
}

// MarshalText implements encoding.TextMarshaler.
func (v Variance) MarshalText() ([]byte, error) {
	if v < FixedSmall || v > LearnedRange {
		return nil, fmt.Errorf("diffusion: cannot marshal %v", v)
	}
	return []byte(v.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; on error the value
// is left unchanged.
func (v *Variance) UnmarshalText(b []byte) error {
	x, err := ParseVariance(string(b))
	if err != nil {
		return err
	}
	*v = x
	return nil
}

// Loss is the training objective (improved-diffusion's LossType).
type Loss int

const (
	// LossSimple: L_simple, the mean squared error between the prediction
	// and its target (Ho et al. 2020, Eq. 14, generalised to x_0 and v).
	LossSimple Loss = iota
	// LossVLB: the variational bound term L_t in bits, scaled by T so that
	// its expectation over uniform t is the whole bound L_vlb
	// (Nichol & Dhariwal 2021, Eq. 4-6).
	LossVLB
	// LossHybrid: L_simple + lambda L_vlb with the gradient of the mean
	// stopped in the L_vlb term, so L_vlb trains only the variance
	// (Nichol & Dhariwal 2021, Eq. 16). Only meaningful with a learned
	// variance; with a fixed one it equals LossSimple, as in
	// improved-diffusion.
	LossHybrid
)

// String returns "simple", "vlb" or "hybrid".
func (l Loss) String() string {
	switch l {
	case LossSimple:
		return "simple"
	case LossVLB:
		return "vlb"
	case LossHybrid:
		return "hybrid"
	}
	return fmt.Sprintf("Loss(%d)", int(l))
}

// ParseLoss accepts "simple" (or "mse"), "vlb" (or "kl") and "hybrid".
func ParseLoss(s string) (Loss, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "simple", "mse":
		return LossSimple, nil
	case "vlb", "kl":
		return LossVLB, nil
	case "hybrid":
		return LossHybrid, nil
	}
	return 0, fmt.Errorf("diffusion: unknown loss %q: allowed are simple (mse), vlb (kl), hybrid", s)
}

// MarshalText implements encoding.TextMarshaler.
func (l Loss) MarshalText() ([]byte, error) {
	if l < LossSimple || l > LossHybrid {
		return nil, fmt.Errorf("diffusion: cannot marshal %v", l)
	}
	return []byte(l.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; on error the value
// is left unchanged.
func (l *Loss) UnmarshalText(b []byte) error {
	x, err := ParseLoss(string(b))
	if err != nil {
		return err
	}
	*l = x
	return nil
}

// Sampler is a reverse-process sampler (a "solver"). ddpm and ddim are this
// package's native samplers (improved-diffusion's respacing, learned
// variances, RePaint inpainting); every other name runs the diffusers
// v0.21.4 scheduler of SchedulerConfigFor through the generic loop of
// Sample (see Options.Scheduler). The names are those of SamplerNames.
type Sampler int

const (
	// SamplerDDPM is ancestral sampling from p(x_{t-1} | x_t) (Ho et al.
	// 2020, Algorithm 2), over all T steps or a respaced subsequence.
	SamplerDDPM Sampler = iota
	// SamplerDDIM is Song et al. 2021's generalised sampler (Eq. 12) with
	// eta in [0, 1]; eta = 0 is deterministic.
	SamplerDDIM
	// SamplerPNDM is PLMS (Liu et al. 2022, Eq. 12; PNDMScheduler with
	// skip_prk_steps).
	SamplerPNDM
	// SamplerDPMPP2M is multistep DPM-Solver++ of order 2 (Lu et al.
	// 2022b; DPMSolverMultistepScheduler, dpmsolver++).
	SamplerDPMPP2M
	// SamplerDPMPP3M is multistep DPM-Solver++ of order 3.
	SamplerDPMPP3M
	// SamplerDPMPP2MSDE is the stochastic multistep DPM-Solver++ of order 2
	// (sde-dpmsolver++; fresh noise at every step).
	SamplerDPMPP2MSDE
	// SamplerDPMPP2S is singlestep DPM-Solver++ of order 2
	// (DPMSolverSinglestepScheduler).
	SamplerDPMPP2S
	// SamplerUniPC is UniPC (Zhao et al. 2023; UniPCMultistepScheduler,
	// bh2, order 2).
	SamplerUniPC
	// SamplerDEIS is DEIS (Zhang & Chen 2023; DEISMultistepScheduler,
	// log-rho, order 2).
	SamplerDEIS
	// SamplerEuler is Euler's method on the probability-flow ODE (Karras
	// et al. 2022, Algorithm 2; EulerDiscreteScheduler).
	SamplerEuler
	// SamplerEulerA is Euler ancestral (k-diffusion;
	// EulerAncestralDiscreteScheduler).
	SamplerEulerA
	// SamplerHeun is Heun's second-order method (Karras et al. 2022,
	// Algorithm 1; HeunDiscreteScheduler): two model calls per step.
	SamplerHeun
	// SamplerDPM2 is k-diffusion's DPM-2 (KDPM2DiscreteScheduler): two
	// model calls per step.
	SamplerDPM2
	// SamplerLMS is k-diffusion's linear multistep method of order 4
	// (LMSDiscreteScheduler).
	SamplerLMS
)

// samplerStrings are the short names, indexed by Sampler.
var samplerStrings = [...]string{
	SamplerDDPM: "ddpm", SamplerDDIM: "ddim", SamplerPNDM: "pndm",
	SamplerDPMPP2M: "dpm++2m", SamplerDPMPP3M: "dpm++3m", SamplerDPMPP2MSDE: "dpm++2m-sde", SamplerDPMPP2S: "dpm++2s",
	SamplerUniPC: "unipc", SamplerDEIS: "deis", SamplerEuler: "euler", SamplerEulerA: "euler-a",
	SamplerHeun: "heun", SamplerDPM2: "dpm2", SamplerLMS: "lms",
}

// Samplers returns every Sampler, in the order of their constants (ddpm,
// ddim, pndm, dpm++2m, dpm++3m, dpm++2m-sde, dpm++2s, unipc, deis, euler,
// euler-a, heun, dpm2, lms).
func Samplers() []Sampler {
	out := make([]Sampler, len(samplerStrings))
	for i := range out {
		out[i] = Sampler(i)
	}
	return out
}

// samplerList is the names of Samplers joined with ", ".
func samplerList() string { return strings.Join(samplerStrings[:], ", ") }

// valid reports whether s is one of the defined samplers.
func (s Sampler) valid() bool { return s >= 0 && int(s) < len(samplerStrings) }

// native reports whether s is one of this package's own samplers (ddpm,
// ddim), which run without a diffusers scheduler unless one is given.
func (s Sampler) native() bool { return s == SamplerDDPM || s == SamplerDDIM }

// String returns the short name: "ddpm", "ddim", "pndm", "dpm++2m",
// "dpm++3m", "dpm++2m-sde", "dpm++2s", "unipc", "deis", "euler",
// "euler-a", "heun", "dpm2" or "lms".
func (s Sampler) String() string {
	if s.valid() {
		return samplerStrings[s]
	}
	return fmt.Sprintf("Sampler(%d)", int(s))
}

// ParseSampler accepts the short names of String, case-insensitively.
func ParseSampler(s string) (Sampler, error) {
	k := strings.ToLower(strings.TrimSpace(s))
	for i, name := range samplerStrings {
		if k == name {
			return Sampler(i), nil
		}
	}
	return 0, fmt.Errorf("diffusion: unknown sampler %q: allowed are %s", s, samplerList())
}

// MarshalText implements encoding.TextMarshaler.
func (s Sampler) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, fmt.Errorf("diffusion: cannot marshal %v", s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; on error the value
// is left unchanged.
func (s *Sampler) UnmarshalText(b []byte) error {
	x, err := ParseSampler(string(b))
	if err != nil {
		return err
	}
	*s = x
	return nil
}
