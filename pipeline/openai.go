package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/imagenet"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// OpenAI's guided-diffusion models (package adm): a released checkpoint
// (.pt, with args.json beside it or a recognised file name) or a file
// `ddpm convert` made from one. Open builds them like any model; the
// Pipeline's OpenAI field gives what only they have.

// OpenAIModel is a guided-diffusion network opened by Open, on whichever
// device it runs (*adm.Net[[]float32] or *adm.Net[cuda.Ptr]).
type OpenAIModel interface {
	// Config is the network's flags.
	Config() adm.Config
	// Kind says which network it is (adm.UNet, adm.SuperRes, adm.Classifier).
	Kind() adm.Kind
	// Logits runs a classifier: (N, adm.NumClasses).
	Logits(ctx context.Context, x diffusion.Batch, t []float64) ([]float32, error)
	// LogProbGradient runs a classifier: d/dx sum_i log p(y_i | x_i, t_i)
	// and the logits.
	LogProbGradient(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, []float32, error)
	// PredictLowRes runs a SuperRes model on x_t and its low-resolution image.
	PredictLowRes(ctx context.Context, x diffusion.Batch, t []float64, y []int, lowRes diffusion.Batch) (diffusion.Batch, error)
	// WithLowRes binds a SuperRes model to its low-resolution images.
	WithLowRes(lowRes diffusion.Batch) (diffusion.Model, error)
	// NumParams is the number of parameter values.
	NumParams() int
}

// isOpenAISource reports whether path is opened by adm.OpenSource: a
// PyTorch checkpoint (.pt, .pth).
func isOpenAISource(path string) bool { return adm.IsCheckpoint(path) }

// openOpenAISource reads a guided-diffusion checkpoint as a source (its
// config from args.json beside it or its released file name).
func openOpenAISource(path string) (*weights.Source, error) {
	src, err := adm.OpenSource(path, "")
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", path, err)
	}
	return src, nil
}

// openOpenAI builds src's guided-diffusion network on be into p. The
// unet.Config of p carries the fields samplers read (in and out
// channels, sample size, class count); a classifier's Model refuses to
// predict (it is not a diffusion model), and a SuperRes model's Model
// needs its low-resolution image (bind one with OpenAI.WithLowRes), a
// GLIDE model's its prompts (bind them with WithPrompts).
func openOpenAI(p *Pipeline, src *weights.Source, be *cuda.Backend) (*Pipeline, error) {
	var m OpenAIModel
	if be.GPU != nil {
		g, err := adm.FromSource[cuda.Ptr](src, be.GPU)
		if err != nil {
			be.GPU.Close()
			return nil, fmt.Errorf("model %s: %w", src.Path, err)
		}
		m, p.close = g, func() { g.Close(); be.GPU.Close() }
		p.Model = diffusionModel(g)
	} else {
		c, err := adm.FromSource[[]float32](src, be.CPU)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", src.Path, err)
		}
		m, p.close = c, c.Close
		p.Model = diffusionModel(c)
	}
	p.OpenAI = m
	cfg := m.Config()
	p.Config = unet.Config{InChannels: 3, OutChannels: 3, SampleSize: cfg.ImageSize}
	if cfg.LearnSigma && cfg.Kind != adm.Classifier {
		p.Config.OutChannels = 6
	}
	if cfg.ClassCond && cfg.Kind != adm.Classifier {
		k := adm.NumClasses // guided-diffusion's NUM_CLASSES, unless num_classes says otherwise
		if cfg.NumClasses > 0 {
			k = cfg.NumClasses
		}
		p.Config.NumClassEmbeds = &k
	}
	return p, nil
}

// diffusionModel is the network as a diffusion.Model: itself for a UNet,
// a model that explains what is missing otherwise.
func diffusionModel[B any](n *adm.Net[B]) diffusion.Model {
	if n.Kind() == adm.UNet {
		return n
	}
	return refusingModel{n.Kind()}
}

type refusingModel struct{ kind adm.Kind }

func (r refusingModel) Predict(context.Context, diffusion.Batch, []float64, []int) (diffusion.Batch, error) {
	if r.kind == adm.Classifier {
		return diffusion.Batch{}, fmt.Errorf("the model is a guided-diffusion classifier (EncoderUNetModel), not a diffusion model: it guides sampling, or gives logits with ddpm predict")
	}
	if r.kind.IsText() {
		return diffusion.Batch{}, fmt.Errorf("the model is GLIDE's %s: it is conditioned on text: bind prompts with Pipeline.WithPrompts (ddpm sample --prompt)", r.kind)
	}
	return diffusion.Batch{}, fmt.Errorf("the model is a guided-diffusion SuperResModel: it needs its low-resolution image (ddpm predict --low-res)")
}

// isOpenAIModel reports whether src holds a guided-diffusion network
// (its config names one of adm's classes).
func isOpenAIModel(src *weights.Source) bool { return adm.IsConfig(src.UNetConfig) }

// ClassLookup returns how a class name resolves to a label of src's k
// classes (a class-conditional model's, or a classifier's), or nil when
// the classes have no names: the source's own names (a ddpm model file's
// metadata, e.g. the digits of an MNIST model) when it has k of them,
// matched case-insensitively; else, for a guided-diffusion network over
// ImageNet's 1000 classes (class_cond, num_classes 1000, as the released
// checkpoints and their classifiers), package imagenet's WordNet lemmas
// (imagenet.Lookup: "golden retriever" is 207).
func ClassLookup(src *weights.Source, k int) func(name string) (int, error) {
	if src == nil || k <= 0 {
		return nil
	}
	if names := src.ClassNames; len(names) == k {
		return func(name string) (int, error) {
			norm := func(s string) string {
				return strings.Join(strings.Fields(strings.ToLower(strings.ReplaceAll(s, "_", " "))), " ")
			}
			for i, n := range names {
				if norm(n) == norm(name) && norm(n) != "" {
					return i, nil
				}
			}
			list := strings.Join(names[:min(len(names), 20)], ", ")
			if len(names) > 20 {
				list += ", ..."
			}
			return -1, fmt.Errorf("no class is named %q: the model's classes are %s", name, list)
		}
	}
	if isOpenAIModel(src) && k == imagenet.NumClasses {
		return imagenet.Lookup
	}
	return nil
}
