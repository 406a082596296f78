package train

import (
	"context"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/nn"
)

// Training a noisy classifier (Dhariwal & Nichol 2021, Sec. 4;
// guided-diffusion's classifier_train.py) for classifier guidance: the
// same loop, data, optimiser, EMA and checkpoints as the denoiser, with
// another objective. Each example is noised to x_t = q_sample(x_0, t, eps)
// at a uniformly drawn t of the diffusion's schedule, and the network's
// logits p(y | x_t, t) are trained with the cross-entropy
//
//	L = -1/N sum_i log softmax(logits_i)[y_i],
//
// whose gradient with respect to the logits, (softmax - onehot(y)) / N, is
// computed on the host in float64 and back-propagated through the network
// (nn.Net.VJP into the gradient buffer). The loss and the batch accuracy
// are logged.

// classifyInit checks a classifier run's setup.
func (tr *Trainer[B]) classifyInit() error {
	info := tr.Net.Info()
	o := tr.Options
	switch k := tr.Data.NumClasses(); {
	case k == 0:
		return fmt.Errorf("train: a classifier needs a labelled dataset")
	case k > info.OutChannels:
		return fmt.Errorf("train: the dataset has %d classes, the classifier %d logits", k, info.OutChannels)
	case o.LabelDropout != 0:
		return fmt.Errorf("train: option label_dropout = %v: a classifier trains on every label (use 0)", o.LabelDropout)
	case o.Timesteps != Uniform:
		return fmt.Errorf("train: option timesteps = %v: a classifier draws t uniformly", o.Timesteps)
	case o.LossScale.Enabled:
		return fmt.Errorf("train: option loss_scale: a classifier trains in float32 (no loss scaling)")
	}
	return nil
}

// classifyStep computes the cross-entropy of the classifier on x_t and
// leaves its gradient in the engine's gradient buffer.
func (tr *Trainer[B]) classifyStep(ctx context.Context, xt diffusion.Batch, t []float64, y []int) error {
	in, err := tr.Net.Inputs(xt, t, nil)
	if err != nil {
		return err
	}
	key := nn.Key{N: xt.N, H: xt.H, W: xt.W}
	k := tr.Net.Info().OutChannels
	logits := make([]float32, xt.N*k)
	if err := tr.eng.Forward(ctx, key, in, logits); err != nil {
		return err
	}
	seed := make([]float32, len(logits))
	loss, correct := 0.0, 0
	for i, label := range y {
		row, g := logits[i*k:(i+1)*k], seed[i*k:(i+1)*k]
		m, best := math.Inf(-1), 0
		for j, v := range row {
			if float64(v) > m {
				m, best = float64(v), j
			}
		}
		z := 0.0
		for _, v := range row {
			z += math.Exp(float64(v) - m)
		}
		loss -= float64(row[label]) - m - math.Log(z)
		for j, v := range row {
			p := math.Exp(float64(v)-m) / z
			if j == label {
				p--
			}
			g[j] = float32(p / float64(xt.N))
		}
		if best == label {
			correct++
		}
	}
	if _, err := tr.eng.VJP(ctx, key, in, seed, nil, true); err != nil {
		return fmt.Errorf("train: classifier gradient: %w", err)
	}
	tr.hostLoss = [2]float32{float32(loss / float64(xt.N)), float32(correct) / float32(xt.N)}
	return nil
}
