package diffusion

import (
	"fmt"
	"math"
	"slices"
)

// schedRun is the state every Scheduler shares: the resolved config, the
// training tables, the model-call timesteps and the index of the next call.
type schedRun struct {
	cfg  *SchedulerConfig
	tab  *trainTables
	ts   []float64 // timestep of every model call
	next int       // the call index Step expects next
}

func (r *schedRun) Timesteps() []float64 { return slices.Clone(r.ts) }

func (r *schedRun) InitNoiseSigma() float64 { return 1 }

// ScaleModelInput of the variance-preserving solvers returns a copy of x.
func (r *schedRun) ScaleModelInput(x Batch, i int) Batch { return cloneBatch(x) }

// AddNoise of the variance-preserving solvers: sqrt(alphabar_t) x0 +
// sqrt(1 - alphabar_t) noise (Ho et al. 2020, Eq. 4: q(x_t | x_0)), with
// alphabar interpolated linearly at a fractional t and 1 at t < 0.
func (r *schedRun) AddNoise(x0, noise Batch, t float64) Batch {
	ab := r.tab.interpAC(math.Min(t, float64(len(r.tab.ac)-1)))
	a, s := math.Sqrt(ab), math.Sqrt(1-ab)
	out := Batch{N: x0.N, C: x0.C, H: x0.H, W: x0.W, Data: make([]float32, len(x0.Data))}
	for j, v := range x0.Data {
		var z float64
		if j < len(noise.Data) {
			z = float64(noise.Data[j])
		}
		out.Data[j] = float32(a*float64(v) + s*z)
	}
	return out
}

// begin checks the arguments of Step for call i and returns the model's
// mean channels (the first C of a 2C-channel output) and its variance
// channels (nil unless the output has 2C channels), as float64 (N*C*H*W).
func (r *schedRun) begin(out, x Batch, i int) (mean, variance []float64, err error) {
	name := r.cfg.ClassName
	if r.next >= len(r.ts) {
		return nil, nil, fmt.Errorf("diffusion: %s step %d: the run is over (%d model calls)", name, i, len(r.ts))
	}
	if i != r.next {
		return nil, nil, fmt.Errorf("diffusion: %s step %d: expected call index %d (Step runs once per call, in order)", name, i, r.next)
	}
	if err := x.Check(); err != nil {
		return nil, nil, fmt.Errorf("diffusion: %s step %d: sample: %w", name, i, err)
	}
	if err := out.Check(); err != nil {
		return nil, nil, fmt.Errorf("diffusion: %s step %d: model output: %w", name, i, err)
	}
	if out.N != x.N || out.H != x.H || out.W != x.W || (out.C != x.C && out.C != 2*x.C) {
		return nil, nil, fmt.Errorf("diffusion: %s step %d: model output shape (%d,%d,%d,%d): want (%d,%d or %d,%d,%d)", name, i, out.N, out.C, out.H, out.W, x.N, x.C, 2*x.C, x.H, x.W)
	}
	D := x.C * x.H * x.W
	mean = make([]float64, x.N*D)
	if out.C == x.C {
		for j, v := range out.Data {
			mean[j] = float64(v)
		}
		return mean, nil, nil
	}
	variance = make([]float64, x.N*D)
	for n := range x.N {
		for j := range D {
			mean[n*D+j] = float64(out.Data[n*2*D+j])
			variance[n*D+j] = float64(out.Data[n*2*D+D+j])
		}
	}
	return mean, variance, nil
}

// drawNoise calls draw for standard-normal noise shaped like x.
func drawNoise(x Batch, draw func(Batch)) ([]float64, error) {
	if draw == nil {
		return nil, fmt.Errorf("diffusion: this step is stochastic: draw must not be nil")
	}
	z := NewBatch(x.N, x.C, x.H, x.W)
	draw(z)
	if len(z.Data) != x.Len() {
		return nil, fmt.Errorf("diffusion: draw changed the noise batch to %d values, want %d", len(z.Data), x.Len())
	}
	return toF64(z.Data), nil
}

func toF64(d []float32) []float64 {
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v)
	}
	return out
}

// toBatch rounds v to a float32 batch shaped like x.
func toBatch(x Batch, v []float64) Batch {
	out := Batch{N: x.N, C: x.C, H: x.H, W: x.W, Data: make([]float32, len(v))}
	for i, f := range v {
		out.Data[i] = float32(f)
	}
	return out
}

func cloneBatch(x Batch) Batch {
	x.Data = slices.Clone(x.Data)
	return x
}

// scaleBatch returns x * k (in float64, rounded to float32).
func scaleBatch(x Batch, k float64) Batch {
	out := Batch{N: x.N, C: x.C, H: x.H, W: x.W, Data: make([]float32, len(x.Data))}
	for i, v := range x.Data {
		out.Data[i] = float32(float64(v) * k)
	}
	return out
}

// x0FromOutput is the data prediction x_0 implied by the model output at a
// point with x_t = alpha x_0 + sigma eps (Kingma et al. 2021's VP notation;
// alpha = sqrt(alphabar), sigma = sqrt(1 - alphabar)):
//
//	epsilon:      x_0 = (x_t - sigma eps) / alpha        (Ho et al. 2020, Eq. 15)
//	sample:       x_0 = out
//	v_prediction: x_0 = alpha x_t - sigma v              (Salimans & Ho 2022)
func x0FromOutput(pred string, out, x []float64, alpha, sigma float64) []float64 {
	x0 := make([]float64, len(out))
	for j, o := range out {
		switch pred {
		case "sample":
			x0[j] = o
		case "v_prediction":
			x0[j] = alpha*x[j] - sigma*o
		default:
			x0[j] = (x[j] - sigma*o) / alpha
		}
	}
	return x0
}

// epsFromOutput is the noise prediction implied by the model output:
//
//	epsilon:      eps = out
//	sample:       eps = (x_t - alpha x_0) / sigma
//	v_prediction: eps = alpha v + sigma x_t
func epsFromOutput(pred string, out, x []float64, alpha, sigma float64) []float64 {
	eps := make([]float64, len(out))
	for j, o := range out {
		switch pred {
		case "sample":
			eps[j] = (x[j] - alpha*o) / sigma
		case "v_prediction":
			eps[j] = alpha*o + sigma*x[j]
		default:
			eps[j] = o
		}
	}
	return eps
}

// threshold applies dynamic thresholding (Saharia et al. 2022, Sec. 2.3;
// diffusers' _threshold_sample) to each of the n examples of x in place.
func (c *SchedulerConfig) threshold(x []float64, n int) {
	D := len(x) / n
	for i := range n {
		dynamicThreshold(x[i*D:(i+1)*D], *c.DynamicThresholdingRatio, *c.SampleMaxValue)
	}
}

// clipOrThreshold post-processes an x_0 estimate as DDPM and DDIM do:
// thresholding when set, else clamping to clip_sample_range when
// clip_sample.
func (c *SchedulerConfig) clipOrThreshold(x0 []float64, n int) {
	switch {
	case c.Thresholding:
		c.threshold(x0, n)
	case *c.ClipSample:
		r := *c.ClipSampleRange
		for j, v := range x0 {
			x0[j] = math.Max(-r, math.Min(r, v))
		}
	}
}

// levelAt is the Level of call i whose sample lands at training timestep
// t: the data (-1) after the last call or below timestep 0.
func (r *schedRun) levelAt(i int, t float64) (float64, bool) {
	if i < 0 || i >= len(r.ts) {
		return 0, false
	}
	if i == len(r.ts)-1 || t < 0 {
		return -1, true
	}
	return t, true
}
