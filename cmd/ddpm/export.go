package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/weights"
)

const exportExamples = `  ddpm export runs/mnist/checkpoint.safetensors mnist.safetensors
  ddpm export runs/mnist/checkpoint.safetensors models/     # writes models/model.safetensors
  ddpm export ./google-ddpm-cifar10-32 cifar10.safetensors   # a diffusers folder as one file
  ddpm export --diffusers embedded:default ./mnist-pipeline  # a diffusers pipeline folder
      (python: diffusers.DDPMPipeline.from_pretrained("./mnist-pipeline"))`

// runExport writes any model source (a checkpoint's EMA weights, a
// diffusers folder, the embedded model) as a single ddpm model file, or
// with --diffusers as a diffusers pipeline folder.
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("export", "export [--diffusers] SOURCE OUT", exportExamples, stderr)
	asDiffusers := fs.Bool("diffusers", false, "write a diffusers pipeline folder (model_index.json, unet/, scheduler/) instead of one file")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		fs.Usage()
		return usageError{fmt.Sprintf("export: need SOURCE and OUT, got %d argument(s)", len(pos))}
	}
	srcPath, out := pos[0], pos[1]
	src, err := pipeline.OpenSource(ctx, srcPath, nil)
	if err != nil {
		return err
	}
	if *asDiffusers {
		sched := src.SchedulerConfig
		if len(sched) == 0 {
			d, err := pipeline.DiffusionFor(src)
			if err != nil {
				return err
			}
			if sched, err = d.Config().DiffusersScheduler(); err != nil {
				return fmt.Errorf("export %s: %w", srcPath, err)
			}
		}
		if err := weights.WriteDiffusersPipeline(out, &src.Model, sched); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote diffusers pipeline %s (%d tensors, %d parameters)\n", out, len(src.Tensors), src.NumParams())
		return nil
	}
	if st, err := os.Stat(out); (err == nil && st.IsDir()) || strings.HasSuffix(out, string(os.PathSeparator)) {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		out = filepath.Join(out, "model.safetensors")
	}
	if err := weights.WriteModel(out, &src.Model); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%d tensors, %d parameters)\n", out, len(src.Tensors), src.NumParams())
	return nil
}
