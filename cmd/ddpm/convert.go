package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/weights"
)

// convertOptions are the flags of `ddpm convert`.
type convertOptions struct {
	In, Out string // the checkpoint and the model file to write
	Config  string // flags or a JSON file; empty: args.json beside In, or a released file name
}

const convertExamples = `  ddpm convert 64x64_diffusion.pt 64x64_diffusion.safetensors
  ddpm convert --config args.json model.pt model.safetensors
  ddpm convert --config "--image_size 64 --num_channels 192 ..." model.pt model.safetensors`

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("convert", "convert [--config FLAGS|FILE.json] IN.pt OUT.safetensors", convertExamples, stderr)
	var o convertOptions
	fs.StringVar(&o.Config, "config", "", "the model's guided-diffusion flags: a JSON file (args.json) or a flag string (\"--image_size 64 --class_cond True ...\"); default: args.json beside IN.pt, else the flags of a released checkpoint recognised by its file name ("+adm.Presets()[0]+", ...)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{fmt.Sprintf("convert: want IN.pt and OUT.safetensors, got %d arguments", len(pos))}
	}
	o.In, o.Out = pos[0], pos[1]
	if !adm.IsCheckpoint(o.In) {
		return usageError{fmt.Sprintf("convert: %s: want an OpenAI PyTorch checkpoint (.pt)", o.In)}
	}
	return convert(ctx, o, stdout)
}

// convert reads an OpenAI guided-diffusion checkpoint, checks every tensor
// against the network its flags build, and writes a ddpm model file: the
// weights as float32 safetensors under the state-dict keys, the flags
// (with _class_name) as the model config and, for diffusion models, the
// diffusion process of the flags, so pipeline.Open and every command read
// it back without the flags.
func convert(ctx context.Context, o convertOptions, stdout io.Writer) error {
	src, err := adm.OpenSource(o.In, o.Config)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{})
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	m, err := adm.FromSource[[]float32](src, cpu)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	cfg := m.Config()
	n := m.NumParams()
	m.Close()
	wm := &weights.Model{UNetConfig: src.UNetConfig, DiffusionConfig: src.DiffusionConfig, Tensors: src.Tensors}
	if err := weights.WriteModel(o.Out, wm); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: %s %dx%d, %d tensors, %d parameters\n", o.Out, cfg.Kind, cfg.ImageSize, cfg.ImageSize, len(src.Tensors), n)
	return nil
}
