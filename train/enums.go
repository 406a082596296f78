package train

import (
	"fmt"
	"strings"
)

// LRSchedule is the learning-rate decay after warmup.
type LRSchedule int

const (
	// Constant keeps the peak rate (Ho et al. 2020).
	Constant LRSchedule = iota
	// Cosine decays to 0 along half a cosine (Loshchilov & Hutter 2017).
	Cosine
	// Linear decays linearly to 0.
	Linear
)

var lrScheduleNames = [...]string{Constant: "constant", Cosine: "cosine", Linear: "linear"}

// String returns "constant", "cosine" or "linear".
func (s LRSchedule) String() string {
	if s >= 0 && int(s) < len(lrScheduleNames) {
		return lrScheduleNames[s]
	}
	return fmt.Sprintf("LRSchedule(%d)", int(s))
}

// ParseLRSchedule accepts the String names (case-insensitive).
func ParseLRSchedule(s string) (LRSchedule, error) {
	for i, n := range lrScheduleNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return LRSchedule(i), nil
		}
	}
	return 0, fmt.Errorf("train: unknown lr_schedule %q: allowed are constant, cosine, linear", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s LRSchedule) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(lrScheduleNames) {
		return nil, fmt.Errorf("train: cannot marshal %v", s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *LRSchedule) UnmarshalText(b []byte) error {
	v, err := ParseLRSchedule(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// TimestepSampling is how training draws timesteps.
type TimestepSampling int

const (
	// Uniform draws t uniformly (Ho et al. 2020).
	Uniform TimestepSampling = iota
	// LossSecondMoment draws t with probability proportional to the root
	// mean square of its recent losses, with importance weights
	// (Nichol & Dhariwal 2021, Sec. 3.3; for the VLB objective).
	LossSecondMoment
)

var samplingNames = [...]string{Uniform: "uniform", LossSecondMoment: "loss-second-moment"}

// String returns "uniform" or "loss-second-moment".
func (s TimestepSampling) String() string {
	if s >= 0 && int(s) < len(samplingNames) {
		return samplingNames[s]
	}
	return fmt.Sprintf("TimestepSampling(%d)", int(s))
}

// ParseTimestepSampling accepts the String names (case-insensitive).
func ParseTimestepSampling(s string) (TimestepSampling, error) {
	for i, n := range samplingNames {
		if strings.EqualFold(strings.TrimSpace(s), n) {
			return TimestepSampling(i), nil
		}
	}
	return 0, fmt.Errorf("train: unknown timesteps %q: allowed are uniform, loss-second-moment", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s TimestepSampling) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(samplingNames) {
		return nil, fmt.Errorf("train: cannot marshal %v", s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *TimestepSampling) UnmarshalText(b []byte) error {
	v, err := ParseTimestepSampling(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
