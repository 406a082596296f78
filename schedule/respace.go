package schedule

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Spacing names how a subsequence of n timesteps is picked from 0..T-1
// (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
// Flawed", Table 2; diffusers' timestep_spacing).
type Spacing int

const (
	// Leading takes t = k * (T / n) for k = 0..n-1 (integer division), as
	// DDIM and diffusers' default: it starts at 0 and may never reach T-1.
	Leading Spacing = iota
	// Linspace takes round(k * ((T-1) / (n-1))) for k = 0..n-1, from 0 to
	// T-1 inclusive, in float64 arithmetic as numpy.linspace(0, T-1,
	// n).round() does it (rounding half to even), so the timesteps are
	// diffusers' bit for bit.
	Linspace
	// Trailing takes round(T - k * T/n) - 1 for k = 0..n-1: it always
	// includes T-1. The values T - k*T/n are computed as numpy.arange(T, 0,
	// -T/n) computes them (from its first step T + (-T/n) - T), so the
	// timesteps are diffusers' bit for bit.
	Trailing
)

// String returns "leading", "linspace" or "trailing".
func (s Spacing) String() string {
	switch s {
	case Leading:
		return "leading"
	case Linspace:
		return "linspace"
	case Trailing:
		return "trailing"
	}
	return fmt.Sprintf("Spacing(%d)", int(s))
}

// ParseSpacing parses "leading", "linspace" or "trailing".
func ParseSpacing(s string) (Spacing, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "leading":
		return Leading, nil
	case "linspace":
		return Linspace, nil
	case "trailing":
		return Trailing, nil
	}
	return 0, fmt.Errorf("schedule: unknown timestep spacing %q: allowed are leading, linspace, trailing", s)
}

// SpacedTimesteps returns n distinct 0-indexed timesteps of 0..T-1 in
// increasing order, picked with the given spacing (see Spacing for the
// formulas). offset is added to each and must keep them below T; diffusers
// adds its steps_offset with Leading spacing only, so pass 0 with the others
// to match it.
func SpacedTimesteps(T, n int, sp Spacing, offset int) ([]int, error) {
	if T < 1 || T > MaxT {
		return nil, fmt.Errorf("schedule: timesteps %d: must be in 1..%d", T, MaxT)
	}
	if n < 1 || n > T {
		return nil, fmt.Errorf("schedule: %d sampling steps: must be in 1..%d (the training timesteps)", n, T)
	}
	ts := make([]int, n)
	switch sp {
	case Leading:
		r := T / n
		for k := range ts {
			ts[k] = k*r + offset
		}
	case Linspace:
		// numpy.linspace: k * step with step = (T-1)/(n-1), the last
		// value set to T-1 exactly. k*(T-1)/(n-1) computed exactly would
		// round differently for some (T, n), e.g. T = 30, n = 15.
		step := 0.0
		if n > 1 {
			step = float64(T-1) / float64(n-1)
		}
		for k := range ts {
			ts[k] = int(math.RoundToEven(float64(k)*step)) + offset
		}
		if n > 1 {
			ts[n-1] = T - 1 + offset
		}
	case Trailing:
		// numpy.arange(T, 0, -r) stores T and T - r, then fills entry k
		// as T + k*delta with delta = (T - r) - T recomputed from those
		// two; that delta differs from -r in its last bits, which moves
		// some halves, e.g. T = 7, n = 6.
		r := float64(T) / float64(n)
		delta := (float64(T) - r) - float64(T)
		for k := range ts {
			ts[n-1-k] = int(math.RoundToEven(float64(T)+float64(k)*delta)) - 1 + offset
		}
	default:
		return nil, fmt.Errorf("schedule: unknown spacing %v: allowed are leading, linspace, trailing", sp)
	}
	for k, t := range ts {
		if t < 0 || t >= T || (k > 0 && t <= ts[k-1]) {
			return nil, fmt.Errorf("schedule: %s spacing of %d steps over %d timesteps with offset %d gives timestep %d: not a strictly increasing sequence in 0..%d", sp, n, T, offset, t, T-1)
		}
	}
	return ts, nil
}

// SectionTimesteps implements improved-diffusion's space_timesteps: the
// string is either "ddimN" (the stride i for which range(0, T, i) has N
// entries, as in the DDIM paper) or comma-separated counts "10,15,20" that
// split 0..T-1 into that many equal sections and take that many evenly
// strided timesteps (rounded half to even) from each. A single count "50"
// takes 50 evenly spaced timesteps from 0 to T-1. GLIDE's "fast27"
// (glide-text2im's space_timesteps) is the section string "10,10,3,2,2"
// with timestep T-1 removed and T-3 added, to reduce DDIM's artifacts from
// the noisiest timesteps: 27 timesteps for T = 1000 (T >= 50 needed). All
// timesteps are 0-indexed training timesteps in 0..T-1 (t = 0 is the
// least noisy). The result is increasing.
func SectionTimesteps(T int, sections string) ([]int, error) {
	if T < 1 || T > MaxT {
		return nil, fmt.Errorf("schedule: timesteps %d: must be in 1..%d", T, MaxT)
	}
	s := strings.TrimSpace(sections)
	if s == "fast27" {
		ts, err := SectionTimesteps(T, "10,10,3,2,2")
		if err != nil {
			return nil, fmt.Errorf("schedule: section string fast27 over %d timesteps: %w", T, err)
		}
		// The last section's 2 timesteps end at T-1, so ts ends with T-1;
		// with T >= 50 every section holds at least 10, so T-3 is not
		// in ts (the last section's other timestep is its start).
		if T < 50 || ts[len(ts)-1] != T-1 || slices.Contains(ts, T-3) {
			return nil, fmt.Errorf("schedule: section string fast27 over %d timesteps: needs at least 50", T)
		}
		ts[len(ts)-1] = T - 3
		return ts, nil
	}
	if rest, ok := strings.CutPrefix(s, "ddim"); ok {
		n, err := strconv.Atoi(rest)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("schedule: section string %q: want ddimN with N >= 1", sections)
		}
		for i := 1; i < T; i++ {
			if (T+i-1)/i == n {
				ts := make([]int, 0, n)
				for t := 0; t < T; t += i {
					ts = append(ts, t)
				}
				return ts, nil
			}
		}
		if n == T {
			return SpacedTimesteps(T, T, Leading, 0)
		}
		return nil, fmt.Errorf("schedule: section string %q: no integer stride gives exactly %d of %d timesteps", sections, n, T)
	}
	parts := strings.Split(s, ",")
	counts := make([]int, len(parts))
	for i, p := range parts {
		c, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || c < 0 {
			return nil, fmt.Errorf("schedule: section string %q: part %d (%q) must be a count >= 0, or the whole string ddimN or fast27", sections, i, p)
		}
		counts[i] = c
	}
	if len(counts) > T {
		return nil, fmt.Errorf("schedule: section string %q: %d sections for %d timesteps", sections, len(counts), T)
	}
	size, extra := T/len(counts), T%len(counts)
	start := 0
	var ts []int
	for i, c := range counts {
		sz := size
		if i < extra {
			sz++
		}
		if sz < c {
			return nil, fmt.Errorf("schedule: section string %q: section %d has %d timesteps, cannot take %d", sections, i, sz, c)
		}
		stride := 1.0
		if c > 1 {
			stride = float64(sz-1) / float64(c-1)
		}
		cur := 0.0
		for k := 0; k < c; k++ {
			ts = append(ts, start+int(math.RoundToEven(cur)))
			cur += stride
		}
		start += sz
	}
	sort.Ints(ts)
	out := ts[:0]
	for i, t := range ts {
		if i == 0 || t != ts[i-1] {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("schedule: section string %q selects no timesteps", sections)
	}
	return out, nil
}

// Respace returns the schedule restricted to the given timesteps of s
// (indices into s, strictly increasing), as improved-diffusion's
// SpacedDiffusion: with S the kept set, the new betas are
// beta'_k = 1 - alphabar_{t_k} / alphabar_{t_{k-1}} (alphabar_{t_{-1}} = 1),
// so the new alphabar'_k equals the old alphabar_{t_k} and q(x_t | x_0) is
// unchanged on the kept steps. Timesteps of the result map each new index
// to the original training timestep (composed with s.Timesteps).
func (s *Schedule) Respace(use []int) (*Schedule, error) {
	if len(use) == 0 {
		return nil, fmt.Errorf("schedule: respace: no timesteps given, need 1..%d", s.T())
	}
	b := make([]float64, len(use))
	ts := make([]int, len(use))
	last := 1.0
	for k, t := range use {
		if t < 0 || t >= s.T() || (k > 0 && t <= use[k-1]) {
			return nil, fmt.Errorf("schedule: respace: timesteps[%d] = %d: must be strictly increasing in 0..%d", k, t, s.T()-1)
		}
		ac := s.AlphasCumprod[t]
		b[k] = 1 - ac/last
		last = ac
		ts[k] = s.Timesteps[t]
	}
	if err := checkBetas(b); err != nil {
		return nil, fmt.Errorf("schedule: respace: %w", err)
	}
	return fromBetas(b, ts), nil
}
