package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/weights"
)

const exportExamples = `  ddpm export runs/mnist/checkpoint.safetensors mnist.safetensors
  ddpm export ./google-ddpm-cifar10-32 cifar10.safetensors   # a diffusers folder as one file`

// runExport writes any model source (a checkpoint's EMA weights, a
// diffusers folder) as a single ddpm model file.
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("export", "export SOURCE OUT.safetensors", exportExamples, stderr)
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return usageError{"export: need SOURCE and OUT.safetensors"}
	}
	src, err := weights.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	if err := weights.WriteModel(fs.Arg(1), &src.Model); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%d tensors, %d parameters)\n", fs.Arg(1), len(src.Tensors), src.NumParams())
	return nil
}
