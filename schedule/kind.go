package schedule

import (
	"fmt"
	"strings"
)

// Kind names a beta schedule.
type Kind int

const (
	// Linear is Ho et al. 2020's schedule: beta_t evenly spaced from
	// beta_start (t = 0) to beta_end (t = T-1). When both are left 0 the
	// defaults 1e-4 and 0.02, meant for T = 1000, are both multiplied by
	// 1000/T, as improved-diffusion's get_named_beta_schedule does, so that
	// the total noise stays similar (and capped at 0.999 for T < 20). When
	// either is given, nothing is rescaled: the given value is used as is
	// and the other takes its plain default, as in diffusers.
	Linear Kind = iota
	// Cosine is Nichol & Dhariwal 2021's schedule (Eq. 17):
	// alphabar(t) = f(t)/f(0), f(t) = cos(((t/T + s)/(1 + s)) * pi/2)^2,
	// s = 0.008, beta_t = min(1 - alphabar(t+1)/alphabar(t), 0.999).
	// diffusers calls it "squaredcos_cap_v2".
	Cosine
	// ScaledLinear spaces sqrt(beta) evenly from sqrt(beta_start) to
	// sqrt(beta_end) and squares (Stable Diffusion's schedule; defaults
	// 0.00085 and 0.012, not rescaled with T).
	ScaledLinear
	// Sigmoid is beta_start + (beta_end - beta_start) * sigmoid(z) with z
	// evenly spaced over [-6, 6] (diffusers' "sigmoid"; defaults 1e-4 and
	// 0.02, not rescaled with T).
	Sigmoid
	// Custom uses betas supplied by the caller.
	Custom
)

var kindNames = [...]string{
	Linear:       "linear",
	Cosine:       "cosine",
	ScaledLinear: "scaled-linear",
	Sigmoid:      "sigmoid",
	Custom:       "custom",
}

// String returns the canonical name: "linear", "cosine", "scaled-linear",
// "sigmoid" or "custom".
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKind parses a schedule name. Besides the canonical names it accepts
// the diffusers spellings "scaled_linear" and "squaredcos_cap_v2" and is
// case-insensitive.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "linear":
		return Linear, nil
	case "cosine", "squaredcos_cap_v2", "cos":
		return Cosine, nil
	case "scaled-linear", "scaled_linear", "scaledlinear":
		return ScaledLinear, nil
	case "sigmoid":
		return Sigmoid, nil
	case "custom", "trained_betas":
		return Custom, nil
	}
	return 0, fmt.Errorf("schedule: unknown schedule %q: allowed are linear, cosine (squaredcos_cap_v2), scaled-linear (scaled_linear), sigmoid, custom", s)
}

// MarshalText implements encoding.TextMarshaler with String.
func (k Kind) MarshalText() ([]byte, error) {
	if k < 0 || int(k) >= len(kindNames) {
		return nil, fmt.Errorf("schedule: cannot marshal invalid Kind(%d)", int(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseKind.
func (k *Kind) UnmarshalText(b []byte) error {
	v, err := ParseKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}
