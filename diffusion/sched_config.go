package diffusion

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/ddpm-go/ddpm/schedule"
)

// The diffusers scheduler classes this package ports (diffusers v0.21.4,
// src/diffusers/schedulers/scheduling_*.py), by their _class_name.
const (
	ClassDDPM                = "DDPMScheduler"
	ClassDDIM                = "DDIMScheduler"
	ClassPNDM                = "PNDMScheduler"
	ClassDPMSolverMultistep  = "DPMSolverMultistepScheduler"
	ClassDPMSolverSinglestep = "DPMSolverSinglestepScheduler"
	ClassDEISMultistep       = "DEISMultistepScheduler"
	ClassUniPCMultistep      = "UniPCMultistepScheduler"
	ClassEulerDiscrete       = "EulerDiscreteScheduler"
	ClassEulerAncestral      = "EulerAncestralDiscreteScheduler"
	ClassHeunDiscrete        = "HeunDiscreteScheduler"
	ClassKDPM2Discrete       = "KDPM2DiscreteScheduler"
	ClassLMSDiscrete         = "LMSDiscreteScheduler"
)

// schedulerClasses lists the supported _class_name values.
var schedulerClasses = []string{
	ClassDDPM, ClassDDIM, ClassPNDM, ClassDPMSolverMultistep, ClassDPMSolverSinglestep,
	ClassDEISMultistep, ClassUniPCMultistep, ClassEulerDiscrete, ClassEulerAncestral,
	ClassHeunDiscrete, ClassKDPM2Discrete, ClassLMSDiscrete,
}

// SchedulerClasses returns the supported diffusers _class_name values.
func SchedulerClasses() []string { return slices.Clone(schedulerClasses) }

// SchedulerConfig is a diffusers scheduler_config.json: _class_name and the
// keys of the twelve ported scheduler classes (diffusers v0.21.4), plus the
// later diffusers keys euler_at_final and final_sigmas_type, plus a few
// Go-side options that diffusers passes to step() rather than storing in
// its config (json:"-").
//
// A key that a class does not have is ignored by that class, as diffusers
// ignores it. Pointer fields are nil and strings empty when absent: then
// the class's own default applies (e.g. beta_start is 0.0001 for most
// classes but 0.00085 for Heun and KDPM2; timestep_spacing is "leading" for
// DDPM, DDIM and PNDM, "linspace" for the others). Timesteps are 0-indexed
// training timesteps throughout.
type SchedulerConfig struct {
	ClassName string `json:"_class_name"`

	// The training schedule.
	NumTrainTimesteps int       `json:"num_train_timesteps,omitempty"` // T; 0 = 1000 (or len(trained_betas))
	BetaSchedule      string    `json:"beta_schedule,omitempty"`       // linear (default), scaled_linear, squaredcos_cap_v2, sigmoid, exp
	BetaStart         *float64  `json:"beta_start,omitempty"`          // class default 0.0001 (Heun, KDPM2: 0.00085)
	BetaEnd           *float64  `json:"beta_end,omitempty"`            // class default 0.02 (Heun, KDPM2: 0.012)
	TrainedBetas      []float64 `json:"trained_betas,omitempty"`       // explicit betas (override beta_schedule)
	// RescaleBetasZeroSNR (DDIM only) rescales the betas to zero terminal
	// SNR (Lin et al. 2023); needs v_prediction to be useful.
	RescaleBetasZeroSNR bool `json:"rescale_betas_zero_snr,omitempty"`

	// What the model predicts and how its output is post-processed.
	PredictionType string `json:"prediction_type,omitempty"` // epsilon (default), sample, v_prediction
	// VarianceType: DDPM fixed_small (default), fixed_small_log,
	// fixed_large, fixed_large_log, learned, learned_range; the DPM solvers
	// read only whether it is learned / learned_range (then the model
	// outputs 2C channels and the last C are dropped).
	VarianceType *string `json:"variance_type,omitempty"`
	// LearnedLogVariance (Go-side) makes variance_type "learned" read the
	// variance channels as log Sigma, as improved-diffusion and this
	// package's Learned do; diffusers' DDPMScheduler reads them as Sigma.
	LearnedLogVariance bool `json:"-"`

	ClipSample               *bool    `json:"clip_sample,omitempty"`                // DDPM, DDIM (default true), Heun (default false)
	ClipSampleRange          *float64 `json:"clip_sample_range,omitempty"`          // default 1
	Thresholding             bool     `json:"thresholding,omitempty"`               // dynamic thresholding (Saharia et al. 2022)
	DynamicThresholdingRatio *float64 `json:"dynamic_thresholding_ratio,omitempty"` // default 0.995
	SampleMaxValue           *float64 `json:"sample_max_value,omitempty"`           // default 1

	// Timestep selection.
	TimestepSpacing string `json:"timestep_spacing,omitempty"` // leading, linspace, trailing
	StepsOffset     int    `json:"steps_offset,omitempty"`
	SetAlphaToOne   *bool  `json:"set_alpha_to_one,omitempty"` // DDIM (default true), PNDM (default false)
	UseKarrasSigmas bool   `json:"use_karras_sigmas,omitempty"`
	// LambdaMinClipped (DPM solvers) drops the timesteps whose lambda_t is
	// below it; nil is diffusers' -inf (drop none). JSON's -Infinity, as
	// Python writes it, is accepted.
	LambdaMinClipped *float64 `json:"lambda_min_clipped,omitempty"`
	// InterpolationType (Euler): linear (default) or log_linear.
	InterpolationType string `json:"interpolation_type,omitempty"`

	// Solvers.
	SkipPRKSteps     bool   `json:"skip_prk_steps,omitempty"`    // PNDM: PLMS only
	SolverOrder      int    `json:"solver_order,omitempty"`      // DPM, DEIS, UniPC: 1..3, 0 = 2
	AlgorithmType    string `json:"algorithm_type,omitempty"`    // DPM: dpmsolver++ (default), dpmsolver, sde-dpmsolver++, sde-dpmsolver; DEIS: deis
	SolverType       string `json:"solver_type,omitempty"`       // DPM: midpoint, heun; DEIS: logrho; UniPC: bh2, bh1
	LowerOrderFinal  *bool  `json:"lower_order_final,omitempty"` // default true
	PredictX0        *bool  `json:"predict_x0,omitempty"`        // UniPC, default true
	DisableCorrector []int  `json:"disable_corrector,omitempty"` // UniPC: step indices without the corrector

	// Beyond v0.21.4 (keys of later diffusers): EulerAtFinal makes the last
	// step of DPMSolverMultistep (and here also DEIS) first order;
	// FinalSigmasType "zero" makes the last step of DPMSolverMultistep,
	// DPMSolverSinglestep and UniPC land on sigma = 0 (the data, first
	// order) instead of training timestep 0 ("sigma_min", v0.21.4's
	// behaviour and the default here).
	EulerAtFinal    bool   `json:"euler_at_final,omitempty"`
	FinalSigmasType string `json:"final_sigmas_type,omitempty"`

	// Go-side step() options of diffusers' DDIM pipeline: Eta is DDIM's
	// eta in [0, 1] (Song et al. 2021, Eq. 16); ClippedModelOutput is
	// step(use_clipped_model_output=True): epsilon re-derived from the
	// clipped x_0 estimate.
	Eta                float64 `json:"-"`
	ClippedModelOutput bool    `json:"-"`
}

// ParseSchedulerConfig decodes a diffusers scheduler_config.json. Keys the
// class does not know are ignored, as diffusers ignores them; Python's
// NaN, Infinity and -Infinity literals are accepted (lambda_min_clipped is
// -Infinity by default). An unknown _class_name or a value outside a key's
// allowed set is an error naming the key and the allowed values.
func ParseSchedulerConfig(data []byte) (SchedulerConfig, error) {
	data = quotePythonLiterals(data)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusion: scheduler config JSON: %w", err)
	}
	var lmc *float64
	if v, ok := raw["lambda_min_clipped"]; ok {
		delete(raw, "lambda_min_clipped")
		switch s := strings.TrimSpace(string(v)); s {
		case "null", `"-Infinity"`:
		default:
			var f float64
			if err := json.Unmarshal(v, &f); err != nil {
				return SchedulerConfig{}, fmt.Errorf("diffusion: scheduler config lambda_min_clipped %s: must be a number or -Infinity", s)
			}
			lmc = &f
		}
	}
	for _, k := range []string{"solver_p"} {
		if v, ok := raw[k]; ok && strings.TrimSpace(string(v)) != "null" {
			return SchedulerConfig{}, fmt.Errorf("diffusion: scheduler config %s: only null is supported (a nested scheduler cannot be loaded)", k)
		}
		delete(raw, k)
	}
	clean, err := json.Marshal(raw)
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusion: scheduler config JSON: %w", err)
	}
	var c SchedulerConfig
	if err := json.Unmarshal(clean, &c); err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusion: scheduler config JSON: %w", err)
	}
	c.LambdaMinClipped = lmc
	if _, err := c.resolve(); err != nil {
		return SchedulerConfig{}, err
	}
	return c, nil
}

// quotePythonLiterals turns the bare NaN, Infinity and -Infinity tokens
// that Python's json module writes into JSON strings, leaving string
// contents alone.
func quotePythonLiterals(data []byte) []byte {
	var out bytes.Buffer
	inStr, esc := false, false
	for i := 0; i < len(data); i++ {
		ch := data[i]
		if inStr {
			out.WriteByte(ch)
			switch {
			case esc:
				esc = false
			case ch == '\\':
				esc = true
			case ch == '"':
				inStr = false
			}
			continue
		}
		if ch == '"' {
			inStr = true
			out.WriteByte(ch)
			continue
		}
		matched := false
		for _, lit := range []string{"-Infinity", "Infinity", "NaN"} {
			if bytes.HasPrefix(data[i:], []byte(lit)) {
				out.WriteString(`"` + lit + `"`)
				i += len(lit) - 1
				matched = true
				break
			}
		}
		if !matched {
			out.WriteByte(ch)
		}
	}
	return out.Bytes()
}

func ptr[T any](v T) *T { return &v }

// classDefaults are the class-specific defaults of diffusers v0.21.4.
func classDefaults(class string) (betaStart, betaEnd float64, spacing string, clip, alphaToOne bool) {
	betaStart, betaEnd, spacing = 0.0001, 0.02, "linspace"
	switch class {
	case ClassDDPM, ClassDDIM:
		spacing, clip, alphaToOne = "leading", true, true
	case ClassPNDM:
		spacing = "leading"
	case ClassHeunDiscrete, ClassKDPM2Discrete:
		betaStart, betaEnd = 0.00085, 0.012
	}
	return
}

func oneOf(key, v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	return fmt.Errorf("diffusion: scheduler config %s %q: allowed are %s", key, v, strings.Join(allowed, ", "))
}

// resolve validates the config and returns a copy with every default of
// its class filled in (all pointers set, aliases mapped as diffusers maps
// them: algorithm_type "deis" on a DPM solver is dpmsolver++, and so on).
func (c SchedulerConfig) resolve() (SchedulerConfig, error) {
	if c.ClassName == "" {
		return c, fmt.Errorf("diffusion: scheduler config _class_name missing: allowed are %s", strings.Join(schedulerClasses, ", "))
	}
	if !slices.Contains(schedulerClasses, c.ClassName) {
		return c, fmt.Errorf("diffusion: scheduler config _class_name %q: allowed are %s", c.ClassName, strings.Join(schedulerClasses, ", "))
	}
	bs, be, sp, clip, a1 := classDefaults(c.ClassName)
	c.TrainedBetas = slices.Clone(c.TrainedBetas)
	c.DisableCorrector = slices.Clone(c.DisableCorrector)
	if c.BetaStart == nil {
		c.BetaStart = ptr(bs)
	} else {
		c.BetaStart = ptr(*c.BetaStart)
	}
	if c.BetaEnd == nil {
		c.BetaEnd = ptr(be)
	} else {
		c.BetaEnd = ptr(*c.BetaEnd)
	}
	if c.TimestepSpacing == "" {
		c.TimestepSpacing = sp
	}
	if c.ClipSample == nil {
		c.ClipSample = ptr(clip)
	} else {
		c.ClipSample = ptr(*c.ClipSample)
	}
	if c.SetAlphaToOne == nil {
		c.SetAlphaToOne = ptr(a1)
	} else {
		c.SetAlphaToOne = ptr(*c.SetAlphaToOne)
	}
	def := func(p **float64, v float64) {
		if *p == nil {
			*p = ptr(v)
		} else {
			*p = ptr(**p)
		}
	}
	def(&c.ClipSampleRange, 1)
	def(&c.DynamicThresholdingRatio, 0.995)
	def(&c.SampleMaxValue, 1)
	def(&c.LambdaMinClipped, math.Inf(-1))
	if c.LowerOrderFinal == nil {
		c.LowerOrderFinal = ptr(true)
	} else {
		c.LowerOrderFinal = ptr(*c.LowerOrderFinal)
	}
	if c.PredictX0 == nil {
		c.PredictX0 = ptr(true)
	} else {
		c.PredictX0 = ptr(*c.PredictX0)
	}
	if c.VarianceType != nil {
		c.VarianceType = ptr(*c.VarianceType)
	} else if c.ClassName == ClassDDPM {
		c.VarianceType = ptr("fixed_small")
	} else {
		c.VarianceType = ptr("")
	}
	if c.BetaSchedule == "" {
		c.BetaSchedule = "linear"
	}
	if c.PredictionType == "" {
		c.PredictionType = "epsilon"
	}
	if c.InterpolationType == "" {
		c.InterpolationType = "linear"
	}
	if c.FinalSigmasType == "" {
		c.FinalSigmasType = "sigma_min"
	}

	// The training schedule.
	if len(c.TrainedBetas) > 0 {
		if c.NumTrainTimesteps == 0 {
			c.NumTrainTimesteps = len(c.TrainedBetas)
		}
		if c.NumTrainTimesteps != len(c.TrainedBetas) {
			return c, fmt.Errorf("diffusion: scheduler config trained_betas has %d entries, num_train_timesteps is %d: they must agree", len(c.TrainedBetas), c.NumTrainTimesteps)
		}
		for i, b := range c.TrainedBetas {
			if !(b > 0 && b < 1) {
				return c, fmt.Errorf("diffusion: scheduler config trained_betas[%d] = %v: every beta must be in (0, 1)", i, b)
			}
		}
	} else if err := oneOf("beta_schedule", c.BetaSchedule, "linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "exp"); err != nil {
		return c, err
	}
	if c.NumTrainTimesteps == 0 {
		c.NumTrainTimesteps = 1000
	}
	if c.NumTrainTimesteps < 2 || c.NumTrainTimesteps > schedule.MaxT {
		return c, fmt.Errorf("diffusion: scheduler config num_train_timesteps %d: must be in 2..%d", c.NumTrainTimesteps, schedule.MaxT)
	}
	for _, kv := range []struct {
		k string
		v float64
	}{{"beta_start", *c.BetaStart}, {"beta_end", *c.BetaEnd}} {
		if !(kv.v > 0 && kv.v < 1) {
			return c, fmt.Errorf("diffusion: scheduler config %s %v: must be in (0, 1)", kv.k, kv.v)
		}
	}
	if c.RescaleBetasZeroSNR && c.ClassName == ClassDDIM && c.PredictionType == "epsilon" {
		return c, fmt.Errorf("diffusion: scheduler config rescale_betas_zero_snr true with prediction_type epsilon: the last timestep has alphabar 0 and x_0 cannot be recovered from epsilon; allowed are v_prediction or sample")
	}
	if err := oneOf("prediction_type", c.PredictionType, "epsilon", "sample", "v_prediction"); err != nil {
		return c, err
	}
	if err := oneOf("variance_type", *c.VarianceType, "", "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"); err != nil {
		return c, err
	}
	if *c.ClipSampleRange <= 0 || math.IsNaN(*c.ClipSampleRange) || math.IsInf(*c.ClipSampleRange, 0) {
		return c, fmt.Errorf("diffusion: scheduler config clip_sample_range %v: must be finite and > 0", *c.ClipSampleRange)
	}
	if r := *c.DynamicThresholdingRatio; !(r > 0 && r <= 1) {
		return c, fmt.Errorf("diffusion: scheduler config dynamic_thresholding_ratio %v: must be in (0, 1]", r)
	}
	if m := *c.SampleMaxValue; !(m > 0) || math.IsInf(m, 0) {
		return c, fmt.Errorf("diffusion: scheduler config sample_max_value %v: must be finite and > 0", m)
	}
	if math.IsNaN(*c.LambdaMinClipped) {
		return c, fmt.Errorf("diffusion: scheduler config lambda_min_clipped NaN: must be a number or -Infinity")
	}

	// Timesteps.
	if err := oneOf("timestep_spacing", c.TimestepSpacing, "leading", "linspace", "trailing"); err != nil {
		return c, err
	}
	if c.StepsOffset < 0 || c.StepsOffset >= c.NumTrainTimesteps {
		return c, fmt.Errorf("diffusion: scheduler config steps_offset %d: must be in 0..%d", c.StepsOffset, c.NumTrainTimesteps-1)
	}
	if err := oneOf("interpolation_type", c.InterpolationType, "linear", "log_linear"); err != nil {
		return c, err
	}
	if err := oneOf("final_sigmas_type", c.FinalSigmasType, "sigma_min", "zero"); err != nil {
		return c, err
	}
	if !(c.Eta >= 0 && c.Eta <= 1) {
		return c, fmt.Errorf("diffusion: scheduler config eta %v: must be in [0, 1]", c.Eta)
	}

	// Solvers.
	switch c.ClassName {
	case ClassDPMSolverMultistep, ClassDPMSolverSinglestep, ClassDEISMultistep, ClassUniPCMultistep:
		if c.SolverOrder == 0 {
			c.SolverOrder = 2
		}
		if c.SolverOrder < 1 || c.SolverOrder > 3 {
			return c, fmt.Errorf("diffusion: scheduler config solver_order %d: allowed are 1, 2, 3", c.SolverOrder)
		}
	}
	switch c.ClassName {
	case ClassDPMSolverMultistep, ClassDPMSolverSinglestep:
		algs := []string{"dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"}
		if c.ClassName == ClassDPMSolverSinglestep {
			algs = algs[:2]
		}
		switch c.AlgorithmType {
		case "", "deis":
			c.AlgorithmType = "dpmsolver++"
		}
		if err := oneOf("algorithm_type", c.AlgorithmType, algs...); err != nil {
			return c, err
		}
		switch c.SolverType {
		case "", "logrho", "bh1", "bh2":
			c.SolverType = "midpoint"
		}
		if err := oneOf("solver_type", c.SolverType, "midpoint", "heun"); err != nil {
			return c, err
		}
		if c.FinalSigmasType == "zero" && !strings.HasSuffix(c.AlgorithmType, "++") {
			return c, fmt.Errorf("diffusion: scheduler config final_sigmas_type zero with algorithm_type %s: allowed only with dpmsolver++ or sde-dpmsolver++ (use sigma_min)", c.AlgorithmType)
		}
	case ClassDEISMultistep:
		switch c.AlgorithmType {
		case "", "dpmsolver", "dpmsolver++":
			c.AlgorithmType = "deis"
		}
		if err := oneOf("algorithm_type", c.AlgorithmType, "deis"); err != nil {
			return c, err
		}
		switch c.SolverType {
		case "", "midpoint", "heun", "bh1", "bh2":
			c.SolverType = "logrho"
		}
		if err := oneOf("solver_type", c.SolverType, "logrho"); err != nil {
			return c, err
		}
	case ClassUniPCMultistep:
		switch c.SolverType {
		case "", "midpoint", "heun", "logrho":
			c.SolverType = "bh2"
		}
		if err := oneOf("solver_type", c.SolverType, "bh1", "bh2"); err != nil {
			return c, err
		}
		for _, k := range c.DisableCorrector {
			if k < 0 {
				return c, fmt.Errorf("diffusion: scheduler config disable_corrector %v: step indices must be >= 0", c.DisableCorrector)
			}
		}
		if c.FinalSigmasType == "zero" && !*c.PredictX0 {
			return c, fmt.Errorf("diffusion: scheduler config final_sigmas_type zero with predict_x0 false: allowed only with predict_x0 true (use sigma_min)")
		}
	}
	return c, nil
}

// checkSteps reports a number of inference steps the resolved config
// cannot run.
func (c *SchedulerConfig) checkSteps(steps int) error {
	T := c.NumTrainTimesteps
	if steps < 1 || steps > T {
		return fmt.Errorf("diffusion: %s: steps %d: must be in 1..%d (num_train_timesteps)", c.ClassName, steps, T)
	}
	if c.TimestepSpacing == "leading" && c.StepsOffset > 0 && c.ClassName != ClassDPMSolverSinglestep && !(c.UseKarrasSigmas && slices.Contains(karrasClasses, c.ClassName)) {
		// diffusers indexes its tables past the end (an IndexError) here
		first := (steps-1)*(T/steps) + c.StepsOffset
		switch c.ClassName {
		case ClassDPMSolverMultistep, ClassDEISMultistep, ClassUniPCMultistep:
			first = steps*(T/(steps+1)) + c.StepsOffset
		}
		if first > T-1 {
			return fmt.Errorf("diffusion: %s: steps %d with leading spacing and steps_offset %d starts at timestep %d, beyond num_train_timesteps-1 = %d: use fewer steps, a smaller steps_offset or another timestep_spacing", c.ClassName, steps, c.StepsOffset, first, T-1)
		}
	}
	if c.ClassName == ClassPNDM && !c.SkipPRKSteps && steps < 4 {
		return fmt.Errorf("diffusion: %s: steps %d: the Runge-Kutta warm-up (skip_prk_steps false) needs steps in 4..%d", c.ClassName, steps, T)
	}
	return nil
}

// NewScheduler returns a fresh run of the scheduler the config describes,
// set to steps inference steps (diffusers' set_timesteps). steps must be
// in 1..num_train_timesteps (4.. for PNDM's Runge-Kutta warm-up, and the
// first leading timestep plus steps_offset must stay below T).
//
// Each class is a port of the diffusers v0.21.4 class of that name:
//
//	DDPMScheduler                    Ho et al. 2020, Algorithm 2; learned variances Nichol & Dhariwal 2021
//	DDIMScheduler                    Song et al. 2021, Eqs. 12 and 16 (Eta, ClippedModelOutput)
//	PNDMScheduler                    Liu et al. 2022, PRK warm-up + PLMS (or PLMS only)
//	DPMSolverMultistepScheduler      Lu et al. 2022a/b: DPM-Solver, DPM-Solver++, their SDE variants, orders 1-3
//	DPMSolverSinglestepScheduler     Lu et al. 2022a/b, singlestep, orders 1-3
//	DEISMultistepScheduler           Zhang & Chen 2023, log-rho AB, orders 1-3
//	UniPCMultistepScheduler          Zhao et al. 2023, UniP + UniC with B(h) bh1/bh2, orders 1-3
//	EulerDiscreteScheduler           Karras et al. 2022, Algorithm 2 (S_churn = 0)
//	EulerAncestralDiscreteScheduler  k-diffusion's Euler ancestral
//	HeunDiscreteScheduler            Karras et al. 2022, Algorithm 1 (S_churn = 0)
//	KDPM2DiscreteScheduler           k-diffusion's DPM-2
//	LMSDiscreteScheduler             k-diffusion's linear multistep, order 4
//
// The model is called at Timesteps(): 0-indexed training timesteps,
// fractional for the Euler family. The schedule tables are diffusers'
// float32 tables, bit for bit; the solver arithmetic is float64.
func NewScheduler(c SchedulerConfig, steps int) (Scheduler, error) {
	r, err := c.resolve()
	if err != nil {
		return nil, err
	}
	if err := r.checkSteps(steps); err != nil {
		return nil, err
	}
	tab := newTrainTables(&r)
	switch r.ClassName {
	case ClassDDPM:
		return newDDPM(&r, tab, steps), nil
	case ClassDDIM:
		return newDDIM(&r, tab, steps), nil
	case ClassPNDM:
		return newPNDM(&r, tab, steps), nil
	case ClassDPMSolverMultistep:
		return newDPMMultistep(&r, tab, steps), nil
	case ClassDPMSolverSinglestep:
		return newDPMSinglestep(&r, tab, steps), nil
	case ClassDEISMultistep:
		return newDEIS(&r, tab, steps), nil
	case ClassUniPCMultistep:
		return newUniPC(&r, tab, steps), nil
	case ClassEulerDiscrete:
		return newEuler(&r, tab, steps), nil
	case ClassEulerAncestral:
		return newEulerAncestral(&r, tab, steps), nil
	case ClassHeunDiscrete:
		return newHeun(&r, tab, steps), nil
	case ClassKDPM2Discrete:
		return newKDPM2(&r, tab, steps), nil
	case ClassLMSDiscrete:
		return newLMS(&r, tab, steps), nil
	}
	return nil, fmt.Errorf("diffusion: scheduler class %q not implemented", r.ClassName)
}

// samplerNames maps the short sampler names onto a class and its keys.
var samplerNames = map[string]SchedulerConfig{
	"ddpm":        {ClassName: ClassDDPM},
	"ddim":        {ClassName: ClassDDIM},
	"pndm":        {ClassName: ClassPNDM, SkipPRKSteps: true},
	"dpm++2m":     {ClassName: ClassDPMSolverMultistep, AlgorithmType: "dpmsolver++", SolverOrder: 2},
	"dpm++3m":     {ClassName: ClassDPMSolverMultistep, AlgorithmType: "dpmsolver++", SolverOrder: 3},
	"dpm++2m-sde": {ClassName: ClassDPMSolverMultistep, AlgorithmType: "sde-dpmsolver++", SolverOrder: 2},
	"dpm++2s":     {ClassName: ClassDPMSolverSinglestep, AlgorithmType: "dpmsolver++", SolverOrder: 2},
	"unipc":       {ClassName: ClassUniPCMultistep},
	"deis":        {ClassName: ClassDEISMultistep},
	"euler":       {ClassName: ClassEulerDiscrete},
	"euler-a":     {ClassName: ClassEulerAncestral},
	"heun":        {ClassName: ClassHeunDiscrete},
	"dpm2":        {ClassName: ClassKDPM2Discrete},
	"lms":         {ClassName: ClassLMSDiscrete},
}

// SamplerNames returns the short sampler names SchedulerConfigFor accepts,
// sorted.
func SamplerNames() []string {
	out := make([]string, 0, len(samplerNames))
	for k := range samplerNames {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// karrasClasses are the classes with use_karras_sigmas in v0.21.4.
var karrasClasses = []string{ClassDPMSolverMultistep, ClassDPMSolverSinglestep, ClassDEISMultistep, ClassUniPCMultistep, ClassEulerDiscrete, ClassHeunDiscrete, ClassLMSDiscrete}

// SchedulerConfigFor returns the config of a short sampler name (ddpm,
// ddim, pndm (PLMS: skip_prk_steps), dpm++2m, dpm++3m, dpm++2m-sde,
// dpm++2s, unipc, deis, euler, euler-a, heun, dpm2, lms), with karras
// setting use_karras_sigmas (an error for the classes without it), that
// keeps base's training-schedule keys: num_train_timesteps, beta_schedule,
// beta_start and beta_end (resolved with base's class defaults, so a Heun
// config keeps a DDPM model's 0.0001..0.02), trained_betas,
// rescale_betas_zero_snr, prediction_type, variance_type and the clip and
// threshold keys. Every other key takes the new class's default.
func SchedulerConfigFor(name string, karras bool, base SchedulerConfig) (SchedulerConfig, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	sc, ok := samplerNames[key]
	if !ok {
		return SchedulerConfig{}, fmt.Errorf("diffusion: unknown sampler %q: allowed are %s", name, strings.Join(SamplerNames(), ", "))
	}
	if karras {
		if !slices.Contains(karrasClasses, sc.ClassName) {
			return SchedulerConfig{}, fmt.Errorf("diffusion: sampler %s (%s) has no Karras sigmas: karras is allowed with dpm++2m, dpm++3m, dpm++2m-sde, dpm++2s, unipc, deis, euler, heun, lms", key, sc.ClassName)
		}
		sc.UseKarrasSigmas = true
	}
	if base.ClassName == "" {
		base.ClassName = ClassDDPM
	}
	rb, err := base.resolve()
	if err != nil {
		return SchedulerConfig{}, fmt.Errorf("diffusion: base scheduler config: %w", err)
	}
	sc.NumTrainTimesteps = rb.NumTrainTimesteps
	sc.BetaSchedule = rb.BetaSchedule
	sc.BetaStart, sc.BetaEnd = ptr(*rb.BetaStart), ptr(*rb.BetaEnd)
	sc.TrainedBetas = slices.Clone(base.TrainedBetas)
	sc.RescaleBetasZeroSNR = base.RescaleBetasZeroSNR
	sc.PredictionType = base.PredictionType
	if base.VarianceType != nil {
		sc.VarianceType = ptr(*base.VarianceType)
	}
	sc.LearnedLogVariance = base.LearnedLogVariance
	cp := func(p *float64) *float64 {
		if p == nil {
			return nil
		}
		return ptr(*p)
	}
	if base.ClipSample != nil {
		sc.ClipSample = ptr(*base.ClipSample)
	}
	sc.ClipSampleRange = cp(base.ClipSampleRange)
	sc.Thresholding = base.Thresholding
	sc.DynamicThresholdingRatio = cp(base.DynamicThresholdingRatio)
	sc.SampleMaxValue = cp(base.SampleMaxValue)
	if _, err := sc.resolve(); err != nil {
		return SchedulerConfig{}, err
	}
	return sc, nil
}

// SchedulerConfig returns the diffusers scheduler config (class
// DDPMScheduler) of this package's Config, so that a model trained here
// can be sampled with every ported solver (through SchedulerConfigFor):
// the schedule (linear with improved-diffusion's rescaled defaults when T
// != 1000, cosine = squaredcos_cap_v2, scaled-linear, sigmoid, explicit
// betas = trained_betas), the prediction, the variance (Learned sets
// LearnedLogVariance, since diffusers' "learned" reads the channels as
// Sigma), clipping (clip_sample, clip_sample_range) and thresholding
// (which, as in Config, acts only when ClipDenoised is set).
func (c Config) SchedulerConfig() (SchedulerConfig, error) {
	if err := c.Validate(); err != nil {
		return SchedulerConfig{}, err
	}
	spec := c.Spec()
	sc := SchedulerConfig{ClassName: ClassDDPM, NumTrainTimesteps: c.Timesteps, PredictionType: c.Prediction.String()}
	switch {
	case spec.Kind == schedule.Custom:
		sc.TrainedBetas = slices.Clone(spec.Betas)
		sc.NumTrainTimesteps = len(spec.Betas)
	case spec.Kind == schedule.Linear && spec.BetaStart == 0 && spec.BetaEnd == 0:
		// improved-diffusion rescales the defaults by 1000/T (capped at
		// 0.999 for T < 20, which linear keys cannot say).
		b, err := schedule.ComputeBetas(spec)
		if err != nil {
			return SchedulerConfig{}, fmt.Errorf("diffusion: %w", err)
		}
		scale := 1000 / float64(spec.T)
		if scale*0.02 < schedule.CosineMaxBeta {
			sc.BetaSchedule = "linear"
			sc.BetaStart, sc.BetaEnd = ptr(scale*1e-4), ptr(scale*0.02)
		} else {
			sc.TrainedBetas = b
		}
	case spec.Kind == schedule.Linear:
		sc.BetaSchedule = "linear"
		sc.BetaStart, sc.BetaEnd = ptr(orDefault(spec.BetaStart, 1e-4)), ptr(orDefault(spec.BetaEnd, 0.02))
	case spec.Kind == schedule.ScaledLinear:
		sc.BetaSchedule = "scaled_linear"
		sc.BetaStart, sc.BetaEnd = ptr(orDefault(spec.BetaStart, 0.00085)), ptr(orDefault(spec.BetaEnd, 0.012))
	case spec.Kind == schedule.Sigmoid:
		sc.BetaSchedule = "sigmoid"
		sc.BetaStart, sc.BetaEnd = ptr(orDefault(spec.BetaStart, 1e-4)), ptr(orDefault(spec.BetaEnd, 0.02))
	case spec.Kind == schedule.Cosine:
		sc.BetaSchedule = "squaredcos_cap_v2"
	default:
		return SchedulerConfig{}, fmt.Errorf("diffusion: schedule %v has no diffusers beta_schedule", spec.Kind)
	}
	switch c.Variance {
	case FixedSmall:
		sc.VarianceType = ptr("fixed_small")
	case FixedLarge:
		sc.VarianceType = ptr("fixed_large")
	case Learned:
		sc.VarianceType, sc.LearnedLogVariance = ptr("learned"), true
	case LearnedRange:
		sc.VarianceType = ptr("learned_range")
	}
	sc.ClipSample = ptr(c.ClipDenoised)
	if c.ClipRange != 0 {
		sc.ClipSampleRange = ptr(c.ClipRange)
	}
	sc.Thresholding = c.Thresholding && c.ClipDenoised
	if c.ThresholdRatio != 0 {
		sc.DynamicThresholdingRatio = ptr(c.ThresholdRatio)
	}
	if c.ThresholdMax != 0 {
		sc.SampleMaxValue = ptr(c.ThresholdMax)
	}
	if _, err := sc.resolve(); err != nil {
		return SchedulerConfig{}, err
	}
	return sc, nil
}

func orDefault(v, d float64) float64 {
	if v == 0 {
		return d
	}
	return v
}
