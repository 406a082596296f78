package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
)

const sampleExamples = `  ddpm sample --out digits.png                          # 16 digits from the embedded model
  ddpm sample --class 7 --n 100 --out-dir sevens        # one PNG per image
  ddpm sample --sampler ddpm --steps 1000 --seed 3 --out a.png
  ddpm sample --class 3 --guidance 2 --out threes.png   # classifier-free guidance
  ddpm sample --init-image x.png --strength 0.5 --out edit.png   # img2img (SDEdit)
  ddpm sample --init-image x.png --mask m.png --sampler ddpm --out fill.png   # inpainting (white = keep)`

func runSample(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sample", "sample [flags]", sampleExamples, stderr)
	model := fs.String("model", "", "model: diffusers folder, ddpm model file or checkpoint (default: the embedded model)")
	n := fs.Int("n", 16, "number of images (1..1024)")
	steps := fs.Int("steps", 50, "denoising steps (1..T)")
	sampler := fs.String("sampler", "ddim", "ddpm or ddim")
	eta := fs.Float64("eta", 0, "DDIM eta in [0, 1] (0 is deterministic)")
	seed := fs.Uint64("seed", 0, "random seed")
	class := fs.String("class", "", "class label for every image, or a comma-separated list (default: cycle through the classes)")
	guidance := fs.Float64("guidance", 0, "classifier-free guidance scale (0 = none)")
	out := fs.String("out", "samples.png", "grid PNG to write")
	outDir := fs.String("out-dir", "", "write one PNG per image into this directory instead of a grid")
	initImage := fs.String("init-image", "", "start from this image (img2img with --strength, or inpainting with --mask)")
	strength := fs.Float64("strength", 0.6, "img2img noise strength in [0, 1]")
	mask := fs.String("mask", "", "inpainting mask PNG: white keeps --init-image, black is generated")
	device := fs.String("device", "auto", "auto, cpu or cuda[:N]")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 1024 {
		return usageError{fmt.Sprintf("sample: --n %d: must be in 1..1024", *n)}
	}
	m, err := loadModel(*model, *device, stderr)
	if err != nil {
		return err
	}
	defer m.release()
	cfg := m.cfg
	o := diffusion.Options{Steps: *steps, Eta: *eta, Seed: *seed, Guidance: *guidance,
		N: *n, C: cfg.InChannels, H: cfg.SampleSize, W: cfg.SampleSize}
	if err := o.Sampler.UnmarshalText([]byte(*sampler)); err != nil {
		return usageError{fmt.Sprintf("sample: --sampler %q: allowed ddpm, ddim", *sampler)}
	}
	if k := classCount(cfg); k > 0 {
		labels, err := parseLabels(*class, *n, k)
		if err != nil {
			return usageError{err.Error()}
		}
		o.Labels = labels
	} else if *class != "" {
		return usageError{"sample: --class given, but the model is unconditional"}
	}
	if *initImage != "" {
		x, err := img.ReadFile(*initImage, cfg.InChannels, cfg.SampleSize, cfg.SampleSize)
		if err != nil {
			return err
		}
		rep := diffusion.NewBatch(*n, x.C, x.H, x.W)
		for i := 0; i < *n; i++ {
			copy(rep.Data[i*len(x.Data):], x.Data)
		}
		o.Image = &rep
		if *mask != "" {
			mk, err := img.ReadMask(*mask, cfg.SampleSize, cfg.SampleSize)
			if err != nil {
				return err
			}
			rm := diffusion.NewBatch(*n, 1, mk.H, mk.W)
			for i := 0; i < *n; i++ {
				copy(rm.Data[i*len(mk.Data):], mk.Data)
			}
			o.Mask = &rm
		} else {
			o.Strength = *strength
		}
	} else if *mask != "" {
		return usageError{"sample: --mask needs --init-image"}
	}
	bar := newProgress(stderr, "sampling")
	o.Progress = func(p diffusion.Progress) { bar.update(p.Step, p.Total) }
	b, err := m.d.Sample(ctx, m.net, o)
	bar.done()
	if err != nil {
		return err
	}
	if *outDir != "" {
		files, err := img.WriteEach(*outDir, "sample", b)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %d images to %s\n", len(files), *outDir)
		return nil
	}
	if err := img.WriteGrid(*out, b, img.GridOptions{Padding: 2}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", *out)
	return nil
}

// parseLabels turns --class into n labels in 0..k-1: empty cycles through
// the classes, one value repeats, a list must have n entries.
func parseLabels(s string, n, k int) ([]int, error) {
	labels := make([]int, n)
	if s == "" {
		for i := range labels {
			labels[i] = i % k
		}
		return labels, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != 1 && len(parts) != n {
		return nil, fmt.Errorf("sample: --class has %d labels: give one, or one per image (%d)", len(parts), n)
	}
	for i := range labels {
		p := strings.TrimSpace(parts[min(i, len(parts)-1)])
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || v >= k {
			return nil, fmt.Errorf("sample: --class %q: labels must be integers in 0..%d", p, k-1)
		}
		labels[i] = v
	}
	return labels, nil
}
