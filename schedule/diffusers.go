package schedule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// DiffusersConfig is the subset of a diffusers scheduler_config.json
// (DDPMScheduler, DDIMScheduler and friends, diffusers v0.21) that
// describes a schedule and its use. Pointer fields are nil when absent.
// Prediction and variance fields are kept as strings here; package
// diffusion turns them into its own types.
type DiffusersConfig struct {
	ClassName             string    `json:"_class_name"`
	NumTrainTimesteps     int       `json:"num_train_timesteps"`
	BetaSchedule          string    `json:"beta_schedule"`
	BetaStart             *float64  `json:"beta_start"`
	BetaEnd               *float64  `json:"beta_end"`
	TrainedBetas          []float64 `json:"trained_betas"`
	PredictionType        string    `json:"prediction_type"`
	VarianceType          string    `json:"variance_type"`
	ClipSample            *bool     `json:"clip_sample"`
	ClipSampleRange       *float64  `json:"clip_sample_range"`
	Thresholding          bool      `json:"thresholding"`
	DynamicThresholdRatio *float64  `json:"dynamic_thresholding_ratio"`
	SampleMaxValue        *float64  `json:"sample_max_value"`
	SetAlphaToOne         *bool     `json:"set_alpha_to_one"`
	StepsOffset           int       `json:"steps_offset"`
	TimestepSpacing       string    `json:"timestep_spacing"`
	RescaleBetasZeroSNR   bool      `json:"rescale_betas_zero_snr"`
}

// ParseDiffusersConfig decodes a scheduler_config.json. Unknown keys are
// ignored (diffusers adds keys over versions); values that cannot be
// honoured (rescale_betas_zero_snr, unknown schedules) are errors.
func ParseDiffusersConfig(data []byte) (*DiffusersConfig, error) {
	var c DiffusersConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("schedule: scheduler_config.json: %w", err)
	}
	if c.NumTrainTimesteps == 0 {
		c.NumTrainTimesteps = 1000 // diffusers' default
	}
	if c.NumTrainTimesteps < 1 || c.NumTrainTimesteps > MaxT {
		return nil, fmt.Errorf("schedule: scheduler_config.json: num_train_timesteps %d: must be in 1..%d", c.NumTrainTimesteps, MaxT)
	}
	if c.RescaleBetasZeroSNR {
		return nil, fmt.Errorf("schedule: scheduler_config.json: rescale_betas_zero_snr true is not supported (a zero terminal SNR makes beta_{T-1} = 1): allowed is false")
	}
	for name, p := range map[string]*float64{"beta_start": c.BetaStart, "beta_end": c.BetaEnd, "clip_sample_range": c.ClipSampleRange, "dynamic_thresholding_ratio": c.DynamicThresholdRatio, "sample_max_value": c.SampleMaxValue} {
		if p != nil && (math.IsNaN(*p) || math.IsInf(*p, 0)) {
			return nil, fmt.Errorf("schedule: scheduler_config.json: %s is %v: must be finite", name, *p)
		}
	}
	if c.TimestepSpacing != "" {
		if _, err := ParseSpacing(c.TimestepSpacing); err != nil {
			return nil, fmt.Errorf("schedule: scheduler_config.json: timestep_spacing: %w", err)
		}
	}
	if c.StepsOffset < 0 || c.StepsOffset >= c.NumTrainTimesteps {
		return nil, fmt.Errorf("schedule: scheduler_config.json: steps_offset %d: must be in 0..%d", c.StepsOffset, c.NumTrainTimesteps-1)
	}
	if _, err := c.Spec(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Spec returns the beta schedule of the config. diffusers does not rescale
// linear betas with T, so beta_start and beta_end are taken as given
// (diffusers' defaults 1e-4 and 0.02 when absent).
func (c *DiffusersConfig) Spec() (Spec, error) {
	T := c.NumTrainTimesteps
	if len(c.TrainedBetas) > 0 {
		if len(c.TrainedBetas) != T {
			return Spec{}, fmt.Errorf("schedule: scheduler_config.json: trained_betas has %d entries, num_train_timesteps is %d: must agree", len(c.TrainedBetas), T)
		}
		return Spec{Kind: Custom, T: T, Betas: append([]float64(nil), c.TrainedBetas...)}, nil
	}
	name := c.BetaSchedule
	if name == "" {
		name = "linear"
	}
	k, err := ParseKind(name)
	if err != nil {
		return Spec{}, fmt.Errorf("scheduler_config.json: beta_schedule: %w", err)
	}
	if k == Custom {
		return Spec{}, fmt.Errorf("schedule: scheduler_config.json: beta_schedule %q needs trained_betas", name)
	}
	start, end := 1e-4, 0.02
	if c.BetaStart != nil {
		start = *c.BetaStart
	}
	if c.BetaEnd != nil {
		end = *c.BetaEnd
	}
	if !(start > 0 && start < 1 && end > 0 && end < 1) {
		return Spec{}, fmt.Errorf("schedule: scheduler_config.json: beta_start %v, beta_end %v: each must be in (0, 1)", start, end)
	}
	s := Spec{Kind: k, T: T}
	if k != Cosine {
		s.BetaStart, s.BetaEnd = start, end
	}
	if _, err := ComputeBetas(s); err != nil {
		return Spec{}, fmt.Errorf("scheduler_config.json: %w", err)
	}
	return s, nil
}

// Spacing returns the config's timestep_spacing, Leading when absent
// (diffusers' default for DDPM and DDIM).
func (c *DiffusersConfig) Spacing() Spacing {
	sp, err := ParseSpacing(c.TimestepSpacing)
	if err != nil {
		return Leading
	}
	return sp
}
