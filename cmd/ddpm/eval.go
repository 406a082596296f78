package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"github.com/ddpm-go/ddpm/data"
)

const evalExamples = `  ddpm eval --dataset mnist --limit 256                  # the embedded model on MNIST's test set
  ddpm eval --model runs/mnist/checkpoint.safetensors --dataset mnist --limit 1000 --json`

// runEval reports the model's negative log-likelihood bound in bits/dim on
// a dataset's test split (improved-diffusion's calc_bpd_loop: all T terms
// plus the prior), with a standard error over the images.
func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	dopts := data.Options{Size: 32, Resize: data.ResizePad, Split: data.Test}
	fs := newFlagSet("eval", "eval [flags]", evalExamples, stderr)
	model := fs.String("model", "", "model: diffusers folder, ddpm model file or checkpoint (default: the embedded model)")
	dataset := fs.String("dataset", "mnist", "mnist, fashion-mnist, idx:DIR or folder:DIR")
	limit := fs.Int("limit", 256, "evaluate the first N images (0 = all)")
	batch := fs.Int("batch", 32, "images per model call")
	seed := fs.Uint64("seed", 0, "random seed of the noise draws")
	asJSON := fs.Bool("json", false, "print one JSON object")
	device := fs.String("device", "auto", "auto, cpu or cuda[:N]")
	precision := precisionFlag(fs)
	dopts.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *limit < 0 || *batch < 1 {
		return usageError{"eval: --limit must be >= 0 and --batch >= 1"}
	}
	m, err := openPipelineGPU(ctx, *model, *device, *precision, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	ds, err := data.Open(ctx, *dataset, dopts)
	if err != nil {
		return err
	}
	cfg := m.Config
	if c, h, w := ds.Shape(); c != cfg.InChannels || h != cfg.SampleSize || w != cfg.SampleSize {
		return usageError{fmt.Sprintf("eval: the dataset gives %dx%dx%d images, the model takes %dx%dx%d", c, h, w, cfg.InChannels, cfg.SampleSize, cfg.SampleSize)}
	}
	n := ds.Len()
	if *limit > 0 {
		n = min(n, *limit)
	}
	rng := rand.New(rand.NewPCG(*seed, 0x6576616c))
	var bpds []float64
	bar := newProgress(stderr, "eval")
	T := m.Diffusion.T()
	calls := T * ((n + *batch - 1) / *batch)
	for start := 0; start < n; start += *batch {
		x, y, err := data.Read(ds, start, min(*batch, n-start))
		if err != nil {
			return err
		}
		if m.Classes() == 0 {
			y = nil
		}
		done0 := start / *batch * T
		r, err := m.Diffusion.NLL(ctx, m.Model, x, y, rng, func(done, _ int) { bar.update(done0+done, calls) })
		if err != nil {
			bar.done()
			return err
		}
		bpds = append(bpds, r.BPD...)
	}
	bar.done()
	mean, se := meanSE(bpds)
	if *asJSON {
		b, _ := json.Marshal(map[string]any{"dataset": *dataset, "split": string(dopts.Split), "images": len(bpds), "bits_per_dim": mean, "stderr": se, "device": m.Device})
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	fmt.Fprintf(stdout, "NLL on %s (%s, %d images): %.4f ± %.4f bits/dim\n", *dataset, dopts.Split.String(), len(bpds), mean, se)
	return nil
}

// meanSE is the mean and its standard error.
func meanSE(v []float64) (float64, float64) {
	var s, ss float64
	for _, x := range v {
		s += x
	}
	mean := s / float64(len(v))
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	if len(v) < 2 {
		return mean, 0
	}
	return mean, math.Sqrt(ss / float64(len(v)-1) / float64(len(v)))
}
