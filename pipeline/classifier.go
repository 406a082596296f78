package pipeline

import (
	"context"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/nn"
	"github.com/ddpm-go/ddpm/weights"
)

// Classifier is a noisy classifier p(y | x_t, t) opened for classifier
// guidance (Dhariwal & Nichol 2021): guided-diffusion's EncoderUNetModel,
// a released .pt or one `ddpm train-classifier` trained.
type Classifier struct {
	// Source is where the weights came from.
	Source *weights.Source
	// Config is the classifier's flags.
	Config adm.Config
	// Diffusion is the noising process the classifier was trained under:
	// it must be the guided model's.
	Diffusion *diffusion.Diffusion
	// Device names the backend running it.
	Device string

	net   OpenAIModel
	info  nn.Info // the built network's resolved channels, classes and size
	close func()
}

// OpenClassifier opens the classifier at path (a source as for Open) on
// the device o names.
func OpenClassifier(ctx context.Context, path string, o Options) (*Classifier, error) {
	if _, err := cuda.ParseDevice(deviceOr(o.Device)); err != nil {
		return nil, err
	}
	src, err := OpenSource(ctx, path, o.Logf)
	if err != nil {
		return nil, fmt.Errorf("classifier %s: %w", path, err)
	}
	if !isOpenAIModel(src) {
		return nil, fmt.Errorf("classifier %s: not a noisy classifier (guided-diffusion's EncoderUNetModel; train one with ddpm train-classifier)", path)
	}
	cfg, err := adm.ParseArgs(src.UNetConfig)
	if err != nil {
		return nil, fmt.Errorf("classifier %s: %w", path, err)
	}
	if cfg.Kind != adm.Classifier {
		return nil, fmt.Errorf("classifier %s: a %s, not a classifier (EncoderUNetModel)", path, cfg.Kind)
	}
	d, err := DiffusionFor(src)
	if err != nil {
		return nil, fmt.Errorf("classifier %s: %w", path, err)
	}
	be, err := cuda.Select(deviceOr(o.Device), cuda.SelectOptions{CPU: o.CPU, GPU: o.GPU, Logf: o.Logf})
	if err != nil {
		return nil, err
	}
	c := &Classifier{Source: src, Config: cfg, Diffusion: d, Device: be.Name()}
	if be.GPU != nil {
		n, err := adm.FromSource[cuda.Ptr](src, be.GPU)
		if err != nil {
			be.GPU.Close()
			return nil, fmt.Errorf("classifier %s: %w", path, err)
		}
		c.net, c.info, c.close = n, n.Info(), func() { n.Close(); be.GPU.Close() }
	} else {
		n, err := adm.FromSource[[]float32](src, be.CPU)
		if err != nil {
			return nil, fmt.Errorf("classifier %s: %w", path, err)
		}
		c.net, c.info, c.close = n, n.Info(), n.Close
	}
	return c, nil
}

// Classes is the number of classes the classifier tells apart.
func (c *Classifier) Classes() int { return c.info.OutChannels }

// Logits runs the classifier on x_t at timesteps t: (N, Classes()).
func (c *Classifier) Logits(ctx context.Context, x diffusion.Batch, t []float64) ([]float32, error) {
	return c.net.Logits(ctx, x, t)
}

// Guidance returns the sampler option that guides towards labels (one
// per image; nil: the labels the sampler is given) with weight scale.
func (c *Classifier) Guidance(scale float64, labels []int) *diffusion.ClassifierGuidance {
	grad := func(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
		g, _, err := c.net.LogProbGradient(ctx, x, t, y)
		return g, err
	}
	return &diffusion.ClassifierGuidance{Grad: grad, Scale: scale, Labels: labels}
}

// Check reports whether the classifier can guide p's model: the same
// image shape, and for a checkpoint of ddpm train-classifier the same
// noising process (the classifier reads x_t as the model's schedule makes
// it). Released guided-diffusion classifiers record no schedule of their
// own (their flags are the diffusion model's), so theirs is not checked.
func (c *Classifier) Check(p *Pipeline) error {
	in, size := c.info.InChannels, c.info.Size
	if in != p.Config.InChannels || size != p.Config.SampleSize {
		return fmt.Errorf("classifier %s takes %dx%dx%d images, the model makes %dx%dx%d",
			c.Source.Path, in, size, size, p.Config.InChannels, p.Config.SampleSize, p.Config.SampleSize)
	}
	if c.Source.Format != weights.FormatCheckpoint {
		return nil
	}
	a, b := c.Diffusion.Schedule().AlphasCumprod, p.Diffusion.Schedule().AlphasCumprod
	if len(a) != len(b) {
		return fmt.Errorf("classifier %s was trained with %d diffusion steps, the model has %d", c.Source.Path, len(a), len(b))
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-6 {
			return fmt.Errorf("classifier %s was trained under another noise schedule than the model's (%s vs %s; alphas_cumprod[%d] %.6g vs %.6g): train it with --model",
				c.Source.Path, c.Diffusion.Config().Schedule, p.Diffusion.Config().Schedule, i, a[i], b[i])
		}
	}
	return nil
}

// Close releases the classifier.
func (c *Classifier) Close() {
	if c.close != nil {
		c.close()
		c.close = nil
	}
}
