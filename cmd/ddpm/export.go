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
      (python: diffusers.DDPMPipeline.from_pretrained("./mnist-pipeline"))
  ddpm export --average v3.safetensors runs/ft/checkpoint.safetensors soup.safetensors
      # the mean of two fine-tunes' weights (a model soup)`

// runExport writes any model source (a checkpoint's EMA weights, a
// diffusers folder, the embedded model) as a single ddpm model file, or
// with --diffusers as a diffusers pipeline folder; with --average, the
// mean of several sources' weights (weights.Average).
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("export", "export [--diffusers] [--average] SOURCE [SOURCE...] OUT", exportExamples, stderr)
	asDiffusers := fs.Bool("diffusers", false, "write a diffusers pipeline folder (model_index.json, unet/, scheduler/) instead of one file")
	average := fs.Bool("average", false, "write the element-wise mean of the weights of two or more SOURCEs of one architecture\n(a uniform model soup, e.g. of fine-tunes of one model)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *average && len(pos) < 3:
		fs.Usage()
		return usageError{fmt.Sprintf("export --average: need two or more SOURCEs and OUT, got %d argument(s)", len(pos))}
	case !*average && len(pos) != 2:
		fs.Usage()
		return usageError{fmt.Sprintf("export: need SOURCE and OUT, got %d argument(s) (--average takes several SOURCEs)", len(pos))}
	}
	srcPath, out := pos[0], pos[len(pos)-1]
	src, err := pipeline.OpenSource(ctx, srcPath, nil)
	if err != nil {
		return err
	}
	if *average {
		models := []*weights.Model{&src.Model}
		for _, p := range pos[1 : len(pos)-1] {
			s, err := pipeline.OpenSource(ctx, p, nil)
			if err != nil {
				return err
			}
			models = append(models, &s.Model)
		}
		m, err := weights.Average(models...)
		if err != nil {
			return usageError{fmt.Sprintf("export --average %s: %v", strings.Join(pos[:len(pos)-1], " "), err)}
		}
		src.Model = *m
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
