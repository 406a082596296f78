package diffusion

import (
	"context"
	"fmt"
	"math"
)

// Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat
// GANs on Image Synthesis", Sec. 4): a classifier p_phi(y | x_t, t)
// trained on noisy images steers sampling towards class y with the
// gradient g = grad_x log p_phi(y | x_t, t).
//
// Ancestral sampling (their Algorithm 1; guided-diffusion's
// condition_mean) shifts the mean of p(x_{t-1} | x_t) by the scaled
// gradient times the step's variance:
//
//	mu' = mu_theta(x_t, t) + s Sigma_theta(x_t, t) g
//
// DDIM and every other solver (their Algorithm 2, condition_score) read a
// score instead: the noise prediction becomes
//
//	eps' = eps_theta(x_t, t) - sqrt(1 - alphabar_t) s g,
//
// which for models predicting x_0 or v is the same shift written in their
// terms (x_0' = x_0 + (1 - alphabar_t) / sqrt(alphabar_t) s g,
// v' = v - sqrt((1 - alphabar_t) / alphabar_t) s g). The solver then steps
// with the shifted prediction as if the model had made it (x_0 estimates
// are clipped after the shift, as the sampler's clipping says).

// ClassifierGuidance is classifier guidance for Options.Classifier.
type ClassifierGuidance struct {
	// Grad returns, for each image i, d/dx log p(y_i | x_i, t_i), shaped
	// like x. x is the model's input x_t (for the Euler-family solvers the
	// scaled input, which is x_t on the variance-preserving scale) and t
	// the training timesteps the model is called at (fractional for the
	// Euler family). The sampler may modify the returned batch.
	Grad func(ctx context.Context, x Batch, t []float64, y []int) (Batch, error)
	// Scale is s, the gradient's weight (Dhariwal & Nichol use 1 to 10);
	// 0 turns guidance off.
	Scale float64
	// Labels are the classes guided towards, one per image; nil takes
	// Options.Labels. An unconditional model is guided by setting these
	// and leaving Options.Labels nil.
	Labels []int
}

// validate checks the guidance for a batch of n images with the options'
// labels.
func (c *ClassifierGuidance) validate(n int, labels []int) error {
	if c.Grad == nil {
		return fmt.Errorf("diffusion: classifier guidance: Grad is nil")
	}
	if math.IsNaN(c.Scale) || math.IsInf(c.Scale, 0) || c.Scale < 0 {
		return fmt.Errorf("diffusion: classifier scale %v: must be finite and >= 0 (0 = off)", c.Scale)
	}
	y := c.classes(labels)
	if len(y) != n {
		return fmt.Errorf("diffusion: classifier guidance needs a class per image: have %d labels for %d images", len(y), n)
	}
	for i, v := range y {
		if v < 0 {
			return fmt.Errorf("diffusion: classifier guidance labels[%d] = %d: must be a class >= 0", i, v)
		}
	}
	return nil
}

// classes are the labels guided towards.
func (c *ClassifierGuidance) classes(labels []int) []int {
	if c.Labels != nil {
		return c.Labels
	}
	return labels
}

// classifierGrad returns s g for the model input x at training timestep
// t, or an empty batch when classifier guidance is off.
func (r *run) classifierGrad(ctx context.Context, x Batch, t float64) (Batch, error) {
	c := r.o.Classifier
	if c == nil || c.Scale == 0 {
		return Batch{}, nil
	}
	if err := ctx.Err(); err != nil {
		return Batch{}, fmt.Errorf("diffusion: sampling cancelled at step %d of %d: %w", r.done, r.total, err)
	}
	ts := make([]float64, x.N)
	for i := range ts {
		ts[i] = t
	}
	g, err := c.Grad(ctx, x, ts, c.classes(r.o.Labels))
	if err != nil {
		return Batch{}, fmt.Errorf("diffusion: classifier gradient at timestep %v: %w", t, err)
	}
	if err := g.Check(); err != nil || !sameShape(g, x) {
		return Batch{}, fmt.Errorf("diffusion: classifier gradient shape (%d,%d,%d,%d) at timestep %v: must be the input's (%d,%d,%d,%d)", g.N, g.C, g.H, g.W, t, x.N, x.C, x.H, x.W)
	}
	if i, v, bad := firstNonFinite(g.Data); bad {
		return Batch{}, fmt.Errorf("diffusion: classifier gradient value %d is %v at timestep %v", i, v, t)
	}
	for i, v := range g.Data {
		g.Data[i] = float32(c.Scale * float64(v))
	}
	return g, nil
}

// shiftScore applies the score form of classifier guidance to a model
// output in place: the mean channels (the first x.C of out.C) move by
// coef * sg, with coef the derivative of the prediction with respect to
// epsilon times -sqrt(1 - alphabar). sg empty leaves out as it is.
func shiftScore(out, sg Batch, ab float64, p Prediction) {
	if len(sg.Data) == 0 {
		return
	}
	var coef float64
	switch p {
	case PredictX0:
		coef = (1 - ab) / math.Sqrt(ab)
	case PredictV:
		coef = -math.Sqrt((1 - ab) / ab)
	default:
		coef = -math.Sqrt(1 - ab)
	}
	D := sg.C * sg.H * sg.W
	per := len(out.Data) / out.N
	for i := range sg.N {
		o, g := out.Data[i*per:i*per+D], sg.Data[i*D:(i+1)*D]
		for j := range o {
			o[j] = float32(float64(o[j]) + coef*float64(g[j]))
		}
	}
}

// AlphaBarAt is alphabar at a real training timestep t in [0, T-1] of the
// table alphas_cumprod (t is clamped to that range). The
// Euler family's noise level sigma = sqrt((1 - alphabar) / alphabar) is
// linear in t between training timesteps (diffusers interpolates the
// training sigmas), so alphabar = 1 / (1 + sigma(t)^2).
func AlphaBarAt(table []float64, t float64) float64 {
	t = min(max(t, 0), float64(len(table)-1))
	i := int(t)
	if float64(i) == t {
		return table[i]
	}
	sig := func(ab float64) float64 { return math.Sqrt((1 - ab) / ab) }
	f := t - float64(i)
	s := (1-f)*sig(table[i]) + f*sig(table[i+1])
	return 1 / (1 + s*s)
}
