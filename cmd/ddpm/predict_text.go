package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/pipeline"
)

// promptList is the repeatable --prompt flag; nil until one is given.
type promptList []string

func (p *promptList) String() string { return strings.Join(*p, " | ") }

// Set appends one prompt (the empty prompt too).
func (p *promptList) Set(v string) error {
	*p = append(*p, v)
	return nil
}

// textModel is what predict needs of a GLIDE network (*adm.Net on any
// device).
type textModel interface {
	PredictText(ctx context.Context, x diffusion.Batch, t []float64, in adm.TextInputs) (diffusion.Batch, error)
	Tokenize(prompts []string) ([]int, []bool, error)
}

// readBatch reads a 4-dimensional .npy for flag.
func readBatch(path, flag string) (*diffusion.Batch, error) {
	a, err := npy.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("predict: %s: %w", flag, err)
	}
	if len(a.Shape) != 4 {
		return nil, fmt.Errorf("predict: %s %s has shape %v, want 4 dimensions (N, C, H, W)", flag, path, a.Shape)
	}
	return &diffusion.Batch{N: a.Shape[0], C: a.Shape[1], H: a.Shape[2], W: a.Shape[3], Data: a.Float32s()}, nil
}

// predictText runs a GLIDE model (adm.Text2Im and its variants) on x_t
// conditioned on the --prompt texts (one per sample, or one for all),
// with --inpaint-image and --inpaint-mask for an inpainting model and
// --low-res for an upsampler, and writes its output (N, 6, H, W).
func predictText(ctx context.Context, om pipeline.OpenAIModel, o predictOptions, x diffusion.Batch, ts []float64, ys []int, stdout io.Writer) error {
	kind := om.Kind()
	m, ok := om.(textModel)
	if !ok {
		return fmt.Errorf("predict: the %s on this device cannot take a prompt", kind)
	}
	if ys != nil {
		return usageError{"predict: --class: GLIDE models are conditioned on text: give --prompt instead"}
	}
	if o.Prompts == nil {
		return usageError{fmt.Sprintf("predict: the model is a GLIDE %s: give its text with --prompt (once per sample, or once for all; --prompt \"\" is unconditional)", kind)}
	}
	prompts := []string(o.Prompts)
	if len(prompts) == 1 {
		for len(prompts) < x.N {
			prompts = append(prompts, prompts[0])
		}
	}
	if len(prompts) != x.N {
		return usageError{fmt.Sprintf("predict: --prompt: %d prompts for a batch of %d: give one per sample or one for all", len(prompts), x.N)}
	}
	toks, mask, err := m.Tokenize(prompts)
	if err != nil {
		return fmt.Errorf("predict: --prompt: %w", err)
	}
	in := adm.TextInputs{Tokens: toks, Mask: mask}
	inpaint := kind == adm.InpaintText2Im || kind == adm.SuperResInpaintText2Im
	if !inpaint && (o.InpaintImage != "" || o.InpaintMask != "") {
		return usageError{fmt.Sprintf("predict: --inpaint-image and --inpaint-mask are for GLIDE inpainting models; the %s is not one", kind)}
	}
	if inpaint {
		if o.InpaintImage == "" || o.InpaintMask == "" {
			return usageError{fmt.Sprintf("predict: the model is a GLIDE %s: give --inpaint-image and --inpaint-mask", kind)}
		}
		if in.InpaintImage, err = readBatch(o.InpaintImage, "--inpaint-image"); err != nil {
			return err
		}
		if in.InpaintMask, err = readBatch(o.InpaintMask, "--inpaint-mask"); err != nil {
			return err
		}
	}
	if kind == adm.SuperResText2Im || kind == adm.SuperResInpaintText2Im {
		if o.LowRes == "" {
			return usageError{fmt.Sprintf("predict: the model is a GLIDE upsampler (%s): give its low-resolution image with --low-res", kind)}
		}
		if in.LowRes, err = readBatch(o.LowRes, "--low-res"); err != nil {
			return err
		}
	}
	out, err := m.PredictText(ctx, x, ts, in)
	if err != nil {
		return fmt.Errorf("predict: %w", err)
	}
	if err := writeNPY(o.Output, "--output", []int{out.N, out.C, out.H, out.W}, out.Data); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: (%d, %d, %d, %d)\n", o.Output, out.N, out.C, out.H, out.W)
	return nil
}
