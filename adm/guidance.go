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
// The samplers apply it (diffusion.Options.Classifier).

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
