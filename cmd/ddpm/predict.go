package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/pipeline"
)

// predictOptions are the flags of `ddpm predict`.
type predictOptions struct {
	Model     string // diffusers folder, model file or checkpoint
	Input     string // x_t as a (N, C, H, W) .npy
	Timesteps string // comma-separated, one per sample (or one for all)
	Class     string // comma-separated labels, -1 for the null class
	Output    string // .npy to write
	Grad      string // classifiers: .npy for d/dx sum_i log p(y_i | x_i)
	LowRes    string // SuperRes models: the low-resolution image .npy
	Device    string // auto or cpu
	Precision string // --precision (GPU arithmetic)

	// GLIDE models: the prompts (one per sample, or one for all) and an
	// inpainting model's known image (N, 3, H, W) and mask (N, 1, H, W)
	// .npy files.
	Prompts                   promptList
	InpaintImage, InpaintMask string
}

const predictExamples = `  ddpm predict --model google/ddpm-cifar10-32 --input x.npy --timesteps 10,500 --output out.npy
  ddpm predict --model 64x64_classifier.pt --input x.npy --timesteps 10,500 --class 2,9 --output logits.npy --grad grad.npy
  ddpm predict --model 64_256_upsampler.pt --input x.npy --low-res low.npy --timesteps 10 --class 2 --output out.npy
  ddpm predict --model mnist.safetensors --input x.npy --timesteps 999 --class 3,-1 --output eps.npy
  ddpm predict --model base.pt --input x.npy --timesteps 10,500 --prompt "a corgi in a field" --prompt "" --output out.npy
  ddpm predict --model base_inpaint.pt --input x.npy --timesteps 10 --prompt "a hat" --inpaint-image img.npy --inpaint-mask mask.npy --output out.npy`

func runPredict(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("predict", "predict --model DIR|FILE --input X.npy --timesteps T[,T...] [--class Y[,Y...]] --output OUT.npy", predictExamples, stderr)
	var o predictOptions
	fs.StringVar(&o.Model, "model", "", "diffusers UNet2DModel folder, ddpm model file or checkpoint (required)")
	fs.StringVar(&o.Input, "input", "", "x_t as a float32 or float64 .npy of shape (N, C, H, W) (required)")
	fs.StringVar(&o.Timesteps, "timesteps", "", "training timesteps (may be fractional), comma-separated: one per sample, or one for all (required)")
	fs.StringVar(&o.Class, "class", "", "class labels for a class-conditional model, comma-separated (one per sample or one for all); -1 is the null class of a guidance model")
	fs.StringVar(&o.Output, "output", "", "where to write the network output .npy, shape (N, out_channels, H, W) (required)")
	fs.StringVar(&o.Device, "device", "auto", "auto, cpu or cuda[:N]")
	fs.StringVar(&o.Grad, "grad", "", "guided-diffusion classifiers: also write d/dx sum_i log p(y_i | x_i, t_i) for the --class labels to this .npy (N, C, H, W)")
	fs.StringVar(&o.LowRes, "low-res", "", "guided-diffusion upsamplers (SuperResModel): the low-resolution image .npy (N, 3, h, w) in [-1, 1]")
	fs.StringVar(&o.Precision, "precision", "", precisionHelp)
	fs.Var(&o.Prompts, "prompt", "GLIDE models: the text prompt, repeated once per sample (or once for all); \"\" is the unconditional input")
	fs.StringVar(&o.InpaintImage, "inpaint-image", "", "GLIDE inpainting models: the known image .npy (N, 3, H, W) in [-1, 1]")
	fs.StringVar(&o.InpaintMask, "inpaint-mask", "", "GLIDE inpainting models: the mask .npy (N, 1, H, W), 1 where the image is kept")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, req := range []struct{ name, v string }{{"--model", o.Model}, {"--input", o.Input}, {"--timesteps", o.Timesteps}, {"--output", o.Output}} {
		if req.v == "" {
			return usageError{fmt.Sprintf("predict: %s is required", req.name)}
		}
	}
	if _, err := cuda.ParseDevice(o.Device); err != nil {
		return usageError{err.Error()}
	}
	return predict(ctx, o, stdout)
}

// parseFloats parses a comma-separated list of numbers for flag name and
// expands a single value to n entries.
func parseFloats(name, s string, n int) ([]float64, error) {
	var out []float64
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return nil, usageError{fmt.Sprintf("%s: %q is not a number", name, p)}
		}
		out = append(out, v)
	}
	for len(out) == 1 && n > 1 {
		out = append(out, out[0])
		if len(out) == n {
			break
		}
	}
	if len(out) != n {
		return nil, usageError{fmt.Sprintf("%s: %d values for a batch of %d: give one per sample or one for all", name, len(out), n)}
	}
	return out, nil
}

// parseInts parses a comma-separated list of integers for flag name and
// expands a single value to n entries.
func parseInts(name, s string, n int) ([]int, error) {
	parts := strings.Split(s, ",")
	out := make([]int, 0, n)
	for _, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, usageError{fmt.Sprintf("%s: %q is not an integer", name, p)}
		}
		out = append(out, v)
	}
	if len(out) == 1 && n > 1 {
		for len(out) < n {
			out = append(out, out[0])
		}
	}
	if len(out) != n {
		return nil, usageError{fmt.Sprintf("%s: %d values for a batch of %d: give one per sample or one for all", name, len(out), n)}
	}
	return out, nil
}

func predict(ctx context.Context, o predictOptions, stdout io.Writer) error {
	a, err := npy.ReadFile(o.Input)
	if err != nil {
		return fmt.Errorf("predict: --input: %w", err)
	}
	if len(a.Shape) != 4 {
		return fmt.Errorf("predict: --input %s has shape %v, want 4 dimensions (N, C, H, W)", o.Input, a.Shape)
	}
	x := diffusion.Batch{N: a.Shape[0], C: a.Shape[1], H: a.Shape[2], W: a.Shape[3], Data: a.Float32s()}
	ts, err := parseFloats("--timesteps", o.Timesteps, x.N)
	if err != nil {
		return err
	}
	var ys []int
	if o.Class != "" {
		if ys, err = parseInts("--class", o.Class, x.N); err != nil {
			return err
		}
	}
	if err := checkPrecision(o.Precision); err != nil {
		return err
	}
	p, err := pipeline.Open(ctx, o.Model, pipeline.Options{Device: o.Device, GPU: cuda.Options{Precision: o.Precision}})
	if err != nil {
		return fmt.Errorf("predict: --model: %w", err)
	}
	defer p.Close()
	if p.OpenAI != nil || o.Grad != "" || o.LowRes != "" || o.Prompts != nil || o.InpaintImage != "" || o.InpaintMask != "" {
		return predictOpenAI(ctx, p, o, x, ts, ys, stdout)
	}
	out, err := p.Model.Predict(ctx, x, ts, ys)
	if err != nil {
		return fmt.Errorf("predict: %w", err)
	}
	f, err := os.Create(o.Output)
	if err != nil {
		return fmt.Errorf("predict: --output: %w", err)
	}
	if err := npy.WriteFloat32(f, []int{out.N, out.C, out.H, out.W}, out.Data); err != nil {
		f.Close()
		return fmt.Errorf("predict: --output %s: %w", o.Output, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("predict: --output %s: %w", o.Output, err)
	}
	fmt.Fprintf(stdout, "wrote %s: (%d, %d, %d, %d)\n", o.Output, out.N, out.C, out.H, out.W)
	return nil
}

// predictOpenAI runs a guided-diffusion model (pipeline.Pipeline.OpenAI):
// a classifier writes its logits (N, 1000) to --output and, with --class
// and --grad, the gradient of sum_i log p(y_i | x_i, t_i) with respect to
// x (the classifier-guidance gradient); a SuperRes model takes its
// low-resolution image from --low-res; a UNet predicts as any model.
func predictOpenAI(ctx context.Context, p *pipeline.Pipeline, o predictOptions, x diffusion.Batch, ts []float64, ys []int, stdout io.Writer) error {
	m := p.OpenAI
	kind := adm.Kind("")
	if m != nil {
		kind = m.Kind()
	}
	if o.Grad != "" && kind != adm.Classifier {
		return usageError{"predict: --grad is for guided-diffusion classifiers (EncoderUNetModel); --model is not one"}
	}
	if o.LowRes != "" && kind != adm.SuperRes && kind != adm.SuperResText2Im && kind != adm.SuperResInpaintText2Im {
		return usageError{"predict: --low-res is for guided-diffusion and GLIDE upsamplers (SuperResModel, SuperResText2ImUNet); --model is not one"}
	}
	if kind.IsText() {
		return predictText(ctx, m, o, x, ts, ys, stdout)
	}
	if o.Prompts != nil || o.InpaintImage != "" || o.InpaintMask != "" {
		return usageError{"predict: --prompt, --inpaint-image and --inpaint-mask are for GLIDE models (Text2ImUNet and its variants); --model is not one"}
	}
	var out diffusion.Batch
	switch kind {
	case adm.Classifier:
		if o.Grad != "" && ys == nil {
			return usageError{"predict: --grad needs --class (the labels y of log p(y | x))"}
		}
		var logits []float32
		var err error
		if o.Grad != "" {
			var g diffusion.Batch
			if g, logits, err = m.LogProbGradient(ctx, x, ts, ys); err != nil {
				return fmt.Errorf("predict: %w", err)
			}
			if err := writeNPY(o.Grad, "--grad", []int{g.N, g.C, g.H, g.W}, g.Data); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s: (%d, %d, %d, %d) d/dx sum log p(y|x)\n", o.Grad, g.N, g.C, g.H, g.W)
		} else if logits, err = m.Logits(ctx, x, ts); err != nil {
			return fmt.Errorf("predict: %w", err)
		}
		k := len(logits) / x.N
		if err := writeNPY(o.Output, "--output", []int{x.N, k}, logits); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: (%d, %d) logits\n", o.Output, x.N, k)
		return nil
	case adm.SuperRes:
		if o.LowRes == "" {
			return usageError{"predict: the model is a guided-diffusion upsampler (SuperResModel): give its low-resolution image with --low-res"}
		}
		a, err := npy.ReadFile(o.LowRes)
		if err != nil {
			return fmt.Errorf("predict: --low-res: %w", err)
		}
		if len(a.Shape) != 4 {
			return fmt.Errorf("predict: --low-res %s has shape %v, want (N, 3, h, w)", o.LowRes, a.Shape)
		}
		low := diffusion.Batch{N: a.Shape[0], C: a.Shape[1], H: a.Shape[2], W: a.Shape[3], Data: a.Float32s()}
		if out, err = m.PredictLowRes(ctx, x, ts, ys, low); err != nil {
			return fmt.Errorf("predict: %w", err)
		}
	default:
		var err error
		if out, err = p.Model.Predict(ctx, x, ts, ys); err != nil {
			return fmt.Errorf("predict: %w", err)
		}
	}
	if err := writeNPY(o.Output, "--output", []int{out.N, out.C, out.H, out.W}, out.Data); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: (%d, %d, %d, %d)\n", o.Output, out.N, out.C, out.H, out.W)
	return nil
}

// writeNPY writes a float32 .npy for flag.
func writeNPY(path, flag string, shape []int, data []float32) error {
	a, err := npy.NewFloat32(shape, data)
	if err == nil {
		err = npy.WriteFile(path, a)
	}
	if err != nil {
		return fmt.Errorf("predict: %s %s: %w", flag, path, err)
	}
	return nil
}
