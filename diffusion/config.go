package diffusion

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/schedule"
)

// Config describes a Gaussian diffusion process and how a network is
// trained and sampled against it. It is stored as JSON next to checkpoints;
// enums marshal as their String names.
type Config struct {
	Schedule  schedule.Kind `json:"schedule"`             // beta schedule
	Timesteps int           `json:"timesteps"`            // T, the number of training steps (>= 1)
	BetaStart float64       `json:"beta_start,omitempty"` // 0 = the schedule's default
	BetaEnd   float64       `json:"beta_end,omitempty"`   // 0 = the schedule's default
	Betas     []float64     `json:"betas,omitempty"`      // explicit betas (overrides Schedule; len T)

	Prediction Prediction `json:"prediction"` // what the mean channels predict
	Variance   Variance   `json:"variance"`   // how Sigma_theta is chosen
	Loss       Loss       `json:"loss"`       // training objective

	// ClipDenoised clamps the x_0 estimate to [-ClipRange, ClipRange] while
	// sampling and evaluating the NLL (never in training losses).
	ClipDenoised bool    `json:"clip_denoised"`
	ClipRange    float64 `json:"clip_range,omitempty"` // 0 = 1

	// Thresholding enables dynamic thresholding of the x_0 estimate
	// (Saharia et al. 2022, "Imagen", Sec. 2.3): s = the ThresholdRatio
	// quantile of |xhat_0| over each example, clamped to [1, ThresholdMax];
	// xhat_0 <- clamp(xhat_0, -s, s) / s. It takes the place of the clamp
	// wherever clipping is on (ClipDenoised, or Options.Clip when set), so
	// it needs ClipDenoised true to act by default.
	Thresholding   bool    `json:"thresholding"`
	ThresholdRatio float64 `json:"threshold_ratio,omitempty"` // 0 = 0.995
	ThresholdMax   float64 `json:"threshold_max,omitempty"`   // 0 = 1

	// HybridLambda is lambda in L_hybrid = L_simple + lambda L_vlb
	// (Nichol & Dhariwal 2021, Eq. 16); 0 = 0.001.
	HybridLambda float64 `json:"hybrid_lambda,omitempty"`
}

// DefaultConfig is Ho et al. 2020's setting: linear schedule, T = 1000,
// epsilon prediction, fixed small variance, L_simple, clipping.
func DefaultConfig() Config {
	return Config{Schedule: schedule.Linear, Timesteps: 1000, Prediction: PredictEpsilon, Variance: FixedSmall, Loss: LossSimple, ClipDenoised: true}
}

// withDefaults fills zero optional fields.
func (c Config) withDefaults() Config {
	if c.ClipRange == 0 {
		c.ClipRange = 1
	}
	if c.ThresholdRatio == 0 {
		c.ThresholdRatio = 0.995
	}
	if c.ThresholdMax == 0 {
		c.ThresholdMax = 1
	}
	if c.HybridLambda == 0 {
		c.HybridLambda = 0.001
	}
	return c
}

// Validate reports the first field outside its allowed range.
func (c Config) Validate() error {
	if _, err := c.Prediction.MarshalText(); err != nil {
		return fmt.Errorf("diffusion: config prediction %d: allowed are epsilon, sample, v_prediction", int(c.Prediction))
	}
	if _, err := c.Variance.MarshalText(); err != nil {
		return fmt.Errorf("diffusion: config variance %d: allowed are fixed_small, fixed_large, learned, learned_range", int(c.Variance))
	}
	if _, err := c.Loss.MarshalText(); err != nil {
		return fmt.Errorf("diffusion: config loss %d: allowed are simple, vlb, hybrid", int(c.Loss))
	}
	bad := func(name string, v float64, allowed string) error {
		return fmt.Errorf("diffusion: config %s = %v: must be %s", name, v, allowed)
	}
	if !(c.ClipRange >= 0) || math.IsInf(c.ClipRange, 0) {
		return bad("clip_range", c.ClipRange, "> 0 (or 0 for 1)")
	}
	if !(c.ThresholdRatio >= 0 && c.ThresholdRatio <= 1) {
		return bad("threshold_ratio", c.ThresholdRatio, "in (0, 1] (or 0 for 0.995)")
	}
	if !(c.ThresholdMax >= 0) || math.IsInf(c.ThresholdMax, 0) {
		return bad("threshold_max", c.ThresholdMax, ">= 1 (or 0 for 1)")
	}
	if c.ThresholdMax != 0 && c.ThresholdMax < 1 {
		return bad("threshold_max", c.ThresholdMax, ">= 1 (or 0 for 1)")
	}
	if !(c.HybridLambda >= 0) || math.IsInf(c.HybridLambda, 0) {
		return bad("hybrid_lambda", c.HybridLambda, "finite and >= 0 (0 means 0.001)")
	}
	return nil
}

// Spec returns the schedule spec of the config.
func (c Config) Spec() schedule.Spec {
	if len(c.Betas) > 0 {
		return schedule.Spec{Kind: schedule.Custom, T: c.Timesteps, Betas: c.Betas}
	}
	return schedule.Spec{Kind: c.Schedule, T: c.Timesteps, BetaStart: c.BetaStart, BetaEnd: c.BetaEnd}
}

// Diffusion is a Gaussian diffusion process with its parameterisation: the
// Go counterpart of improved-diffusion's GaussianDiffusion. It is immutable
// and safe for concurrent use.
type Diffusion struct {
	cfg Config
	s   *schedule.Schedule
	// Sigma for FixedLarge: beta_t with betatilde_1 at t = 0
	// (improved-diffusion), and its log.
	largeVar, largeLogVar []float64
}

// New builds a Diffusion from a config.
func New(cfg Config) (*Diffusion, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := schedule.New(cfg.Spec())
	if err != nil {
		return nil, fmt.Errorf("diffusion: %w", err)
	}
	cfg = cfg.withDefaults()
	cfg.Timesteps = s.T()
	return fromSchedule(cfg, s), nil
}

func fromSchedule(cfg Config, s *schedule.Schedule) *Diffusion {
	d := &Diffusion{cfg: cfg, s: s}
	T := s.T()
	d.largeVar = make([]float64, T)
	d.largeLogVar = make([]float64, T)
	for t := range T {
		v := s.Betas[t]
		if t == 0 && T > 1 {
			v = s.PosteriorVariance[1]
		}
		d.largeVar[t] = v
		d.largeLogVar[t] = math.Log(v)
	}
	return d
}

// Config returns the config with defaults filled in.
func (d *Diffusion) Config() Config { return d.cfg }

// Schedule returns the schedule tables (read-only).
func (d *Diffusion) Schedule() *schedule.Schedule { return d.s }

// T is the number of steps of this (possibly respaced) process; its
// 0-indexed timesteps are 0..T()-1.
func (d *Diffusion) T() int { return d.s.T() }

// DefaultSampling is the sampler and step count for a caller that names
// neither (ddpm sample and ddpm serve): for a model that learned its
// variance, ancestral sampling (the only sampler that uses the variance)
// at 100 respaced steps, where Nichol & Dhariwal (2021, section 4) find the
// learned sigmas close to full-length quality and glide-text2im samples its
// base model; otherwise DDIM at 50 steps, diffusers' pipeline default.
// The count is at most T.
func (d *Diffusion) DefaultSampling() (Sampler, int) {
	if d.cfg.Variance.IsLearned() {
		return SamplerDDPM, min(100, d.T())
	}
	return SamplerDDIM, min(50, d.T())
}

// OutChannels is the number of channels the network must output for
// images with c channels: c, or 2c when the variance is learned.
func (d *Diffusion) OutChannels(c int) int {
	if d.cfg.Variance.IsLearned() {
		return 2 * c
	}
	return c
}

// Respace returns the process restricted to the given increasing indices
// of this one (see schedule.Schedule.Respace), as improved-diffusion's
// SpacedDiffusion. The network is still called with the original
// timesteps (Schedule().Timesteps).
func (d *Diffusion) Respace(use []int) (*Diffusion, error) {
	s, err := d.s.Respace(use)
	if err != nil {
		return nil, fmt.Errorf("diffusion: %w", err)
	}
	return fromSchedule(d.cfg, s), nil
}

// RespaceSteps respaces to steps timesteps. spacing is "leading",
// "linspace" or "trailing" (diffusers' timestep_spacing; "" means
// leading), or an improved-diffusion section string such as "ddim50" or
// "10,15,20", in which case steps is ignored (pass 0). steps == T with a
// spacing returns d itself.
func (d *Diffusion) RespaceSteps(steps int, spacing string) (*Diffusion, error) {
	var use []int
	var err error
	sp, perr := schedule.ParseSpacing(spacing)
	switch {
	case spacing == "":
		sp, perr = schedule.Leading, nil
		fallthrough
	case perr == nil:
		if steps == d.T() {
			return d, nil
		}
		use, err = schedule.SpacedTimesteps(d.T(), steps, sp, 0)
	default:
		use, err = schedule.SectionTimesteps(d.T(), spacing)
		if err != nil {
			err = fmt.Errorf("%w (or use leading, linspace, trailing)", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("diffusion: respace: %w", err)
	}
	return d.Respace(use)
}

// FromDiffusers builds a Config from a diffusers scheduler_config.json:
// num_train_timesteps, beta_schedule (linear, scaled_linear,
// squaredcos_cap_v2, sigmoid), beta_start, beta_end, trained_betas,
// prediction_type, variance_type (fixed_small, fixed_small_log,
// fixed_large, fixed_large_log, learned, learned_range), clip_sample,
// clip_sample_range, thresholding, dynamic_thresholding_ratio,
// sample_max_value. diffusers thresholds whether or not clip_sample is set,
// so thresholding true also sets ClipDenoised (see Config.Thresholding). It
// also returns the parsed file for the sampling keys (timestep_spacing,
// steps_offset, set_alpha_to_one), which Config does not hold.
func FromDiffusers(data []byte) (Config, *schedule.DiffusersConfig, error) {
	dc, err := schedule.ParseDiffusersConfig(data)
	if err != nil {
		return Config{}, nil, fmt.Errorf("diffusion: %w", err)
	}
	spec, err := dc.Spec()
	if err != nil {
		return Config{}, nil, fmt.Errorf("diffusion: %w", err)
	}
	cfg := Config{Schedule: spec.Kind, Timesteps: spec.T, BetaStart: spec.BetaStart, BetaEnd: spec.BetaEnd, Betas: spec.Betas, ClipDenoised: true}
	if dc.PredictionType != "" {
		if cfg.Prediction, err = ParsePrediction(dc.PredictionType); err != nil {
			return Config{}, nil, fmt.Errorf("diffusion: scheduler_config.json: prediction_type: %w", err)
		}
	}
	switch dc.VarianceType {
	case "", "fixed_small", "fixed_small_log":
		cfg.Variance = FixedSmall
	case "fixed_large", "fixed_large_log":
		cfg.Variance = FixedLarge
	case "learned":
		cfg.Variance = Learned
	case "learned_range":
		cfg.Variance = LearnedRange
	default:
		return Config{}, nil, fmt.Errorf("diffusion: scheduler_config.json: variance_type %q: allowed are fixed_small, fixed_small_log, fixed_large, fixed_large_log, learned, learned_range", dc.VarianceType)
	}
	if dc.ClipSample != nil {
		cfg.ClipDenoised = *dc.ClipSample
	}
	if dc.ClipSampleRange != nil {
		cfg.ClipRange = *dc.ClipSampleRange
	}
	cfg.Thresholding = dc.Thresholding
	if dc.Thresholding {
		cfg.ClipDenoised = true
	}
	if dc.DynamicThresholdRatio != nil {
		cfg.ThresholdRatio = *dc.DynamicThresholdRatio
	}
	if dc.SampleMaxValue != nil {
		cfg.ThresholdMax = *dc.SampleMaxValue
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, nil, fmt.Errorf("diffusion: scheduler_config.json: %w", err)
	}
	return cfg, dc, nil
}

// ParseConfig decodes a Config from JSON (as stored with checkpoints),
// rejecting unknown keys and any value New would reject.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("diffusion: config JSON: %w", err)
	}
	if dec.More() {
		return Config{}, fmt.Errorf("diffusion: config JSON: trailing data after the object")
	}
	if _, err := New(c); err != nil {
		return Config{}, err
	}
	return c, nil
}

// DiffusersScheduler returns the diffusers DDPMScheduler config
// (scheduler_config.json, with _class_name) that describes this process,
// so an exported pipeline samples as ddpm does: the same betas
// (num_train_timesteps, beta_schedule and its range, or trained_betas),
// prediction_type, variance_type, clipping and thresholding, leading
// timestep spacing. A linear schedule is written with its effective
// beta_start and beta_end (ddpm rescales the defaults for T != 1000;
// diffusers never rescales).
func (c Config) DiffusersScheduler() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	spec := c.Spec()
	betas, err := schedule.ComputeBetas(spec)
	if err != nil {
		return nil, fmt.Errorf("diffusion: diffusers scheduler: %w", err)
	}
	out := map[string]any{
		"_class_name":                "DDPMScheduler",
		"num_train_timesteps":        len(betas),
		"prediction_type":            c.Prediction.String(),
		"variance_type":              c.Variance.String(),
		"clip_sample":                c.ClipDenoised && !c.Thresholding,
		"clip_sample_range":          c.ClipRange,
		"thresholding":               c.Thresholding,
		"dynamic_thresholding_ratio": c.ThresholdRatio,
		"sample_max_value":           c.ThresholdMax,
		"timestep_spacing":           "leading",
		"steps_offset":               0,
	}
	switch spec.Kind {
	case schedule.Linear:
		out["beta_schedule"], out["beta_start"], out["beta_end"] = "linear", betas[0], betas[len(betas)-1]
	case schedule.Cosine:
		out["beta_schedule"] = "squaredcos_cap_v2"
	case schedule.ScaledLinear:
		out["beta_schedule"], out["beta_start"], out["beta_end"] = "scaled_linear", betas[0], betas[len(betas)-1]
	default: // sigmoid and custom betas: exactly as computed
		out["beta_schedule"], out["trained_betas"] = "linear", betas
	}
	return json.MarshalIndent(out, "", "  ")
}
