package adm

import (
	"context"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion"
)

// Classifier guidance (Dhariwal & Nichol 2021, Sec. 4): a noisy
// classifier p_phi(y | x_t, t) steers a diffusion model towards class y.
//
// Algorithm 1 (ancestral sampling, guided-diffusion's condition_mean):
//
//	mu' = mu + s * Sigma * g,    g = grad_x log p_phi(y | x_t, t)
//
// Algorithm 2 (DDIM, condition_score):
//
//	eps' = eps - sqrt(1 - alphabar_t) * s * g,
//
// then x_0 and the step are recomputed from eps'. Both need only g
// (times the scale s), which ClassifierGradient computes; the classifier
// is called at the model's training timesteps (real-valued t allowed).

// ClassifierGradient returns scale * d/dx sum_i log softmax(logits(x_i,
// t_i))[y_i] for a classifier c: for each example the gradient of the log
// probability of its label with respect to its input (N, 3, H, W), as
// guided-diffusion's cond_fn (classifier_sample.py) computes it. It runs
// the classifier forward for the logits, forms the seed onehot(y) -
// softmax(logits) (d log p_y / d logits) on the host in float64, and
// back-propagates it to x with nn.Net.VJP.
func ClassifierGradient[B any](ctx context.Context, c *Net[B], x diffusion.Batch, t []float64, y []int, scale float64) (diffusion.Batch, error) {
	g, _, err := c.LogProbGradient(ctx, x, t, y)
	if err != nil {
		return diffusion.Batch{}, err
	}
	if scale != 1 {
		for i, v := range g.Data {
			g.Data[i] = float32(float64(v) * scale)
		}
	}
	return g, nil
}

// Guide binds a classifier and a scale as the hook a sampler calls.
func Guide[B any](c *Net[B], scale float64) func(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	return func(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
		return ClassifierGradient(ctx, c, x, t, y, scale)
	}
}

// LogProbGradient returns d/dx sum_i log p(y_i | x_i, t_i) (N, 3, H, W)
// and the logits (N, NumClasses) of a classifier.
func (m *Net[B]) LogProbGradient(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, []float32, error) {
	logits, err := m.Logits(ctx, x, t)
	if err != nil {
		return diffusion.Batch{}, nil, err
	}
	k := m.a.out
	if len(y) != x.N {
		return diffusion.Batch{}, nil, fmt.Errorf("adm: %d class labels for a batch of %d", len(y), x.N)
	}
	seed := make([]float32, len(logits))
	for i, label := range y {
		if label < 0 || label >= k {
			return diffusion.Batch{}, nil, fmt.Errorf("adm: class label [%d] = %d: allowed 0..%d", i, label, k-1)
		}
		softmaxSeed(seed[i*k:(i+1)*k], logits[i*k:(i+1)*k], label)
	}
	in, err := m.inputs(x, t, nil, nil)
	if err != nil {
		return diffusion.Batch{}, nil, err
	}
	g, err := m.nn.VJP(ctx, Key(x), in, seed, []string{inputX}, false)
	if err != nil {
		return diffusion.Batch{}, nil, fmt.Errorf("adm: classifier gradient: %w", err)
	}
	return diffusion.Batch{N: x.N, C: x.C, H: x.H, W: x.W, Data: g[inputX]}, logits, nil
}

// softmaxSeed sets dst = onehot(label) - softmax(logits), the gradient of
// log softmax(logits)[label] with respect to the logits, in float64.
func softmaxSeed(dst, logits []float32, label int) {
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, float64(v))
	}
	z := 0.0
	for _, v := range logits {
		z += math.Exp(float64(v) - m)
	}
	for j, v := range logits {
		p := math.Exp(float64(v)-m) / z
		if j == label {
			p -= 1
		}
		dst[j] = float32(-p)
	}
}

// LogSoftmax returns log softmax over each row of logits (N, K), in
// float64 (the log p(y | x_t) that guidance differentiates).
func LogSoftmax(logits []float32, k int) []float64 {
	out := make([]float64, len(logits))
	for i := 0; i+k <= len(logits); i += k {
		row := logits[i : i+k]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, float64(v))
		}
		z := 0.0
		for _, v := range row {
			z += math.Exp(float64(v) - m)
		}
		lz := m + math.Log(z)
		for j, v := range row {
			out[i+j] = float64(v) - lz
		}
	}
	return out
}

// GuidedModel returns m with classifier guidance in the score form
// (Dhariwal & Nichol 2021, Algorithm 2; guided-diffusion's
// condition_score): each prediction's noise channels become
//
//	eps' = eps - sqrt(1 - alphabar_t) * g,   g = guide(x_t, t, y) = s grad_x log p(y | x_t, t),
//
// with alphabar_t from alphasCumprod (the training schedule's, indexed by
// timestep; linearly interpolated at fractional t), and the
// learned-variance channels (learn_sigma) passed through. Every sampler
// that reads eps (or the x_0 it implies) is then guided without knowing
// it; Algorithm 1's mean shift Sigma*g for ancestral sampling needs the
// sampler's own hook. m must predict epsilon with 3 or 6 output channels.
// labels, when not nil, are the classes guided towards (an unconditional
// model is called with y = nil); otherwise the y each call gets is used.
func GuidedModel(m diffusion.Model, alphasCumprod []float64, guide func(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error), labels []int) diffusion.Model {
	return guidedModel{m, alphasCumprod, guide, labels}
}

type guidedModel struct {
	m      diffusion.Model
	abar   []float64
	guide  func(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error)
	labels []int
}

func (g guidedModel) Predict(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	out, err := g.m.Predict(ctx, x, t, y)
	if err != nil {
		return out, err
	}
	labels := g.labels
	if labels == nil {
		labels = y
	}
	if len(labels) != x.N {
		return diffusion.Batch{}, fmt.Errorf("adm: classifier guidance needs %d class labels, have %d", x.N, len(labels))
	}
	if out.C != x.C && out.C != 2*x.C {
		return diffusion.Batch{}, fmt.Errorf("adm: classifier guidance: the model gives %d channels for %d input channels (want eps, or eps and v)", out.C, x.C)
	}
	grad, err := g.guide(ctx, x, t, labels)
	if err != nil {
		return diffusion.Batch{}, err
	}
	per, plane := out.C*x.H*x.W, x.C*x.H*x.W
	for i := range x.N {
		ab, err := interp(g.abar, t[i])
		if err != nil {
			return diffusion.Batch{}, err
		}
		s := math.Sqrt(1 - ab)
		eps, gi := out.Data[i*per:i*per+plane], grad.Data[i*plane:(i+1)*plane]
		for j := range eps {
			eps[j] = float32(float64(eps[j]) - s*float64(gi[j]))
		}
	}
	return out, nil
}

// interp returns table[t] for real t in [0, len-1], linear between steps.
func interp(table []float64, t float64) (float64, error) {
	if !(t >= 0 && t <= float64(len(table)-1)) {
		return 0, fmt.Errorf("adm: timestep %v outside the schedule [0, %d]", t, len(table)-1)
	}
	i := int(t)
	if i == len(table)-1 {
		return table[i], nil
	}
	f := t - float64(i)
	return (1-f)*table[i] + f*table[i+1], nil
}
