package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/unet"
)

// benchOptions are the flags of `ddpm bench`.
type benchOptions struct {
	Model  string // diffusers folder, model file or checkpoint
	Preset string // unet.Preset name (random weights)
	Batch  int
	Iters  int
	Warmup int
	Train  bool
	JSON   bool
	Device string
}

// benchResult is the one JSON line `ddpm bench --json` prints.
type benchResult struct {
	Device            string  `json:"device"`
	Model             string  `json:"model"`
	Batch             int     `json:"batch"`
	Params            int     `json:"params"`
	ForwardMSMedian   float64 `json:"forward_ms_median"`
	ImagesPerSec      float64 `json:"images_per_sec"`
	TrainStepMSMedian float64 `json:"train_step_ms_median,omitempty"`
	TrainImagesPerSec float64 `json:"train_images_per_sec,omitempty"`
	Iters             int     `json:"iters"`
	Warmup            int     `json:"warmup"`
	TrainStepIncludes string  `json:"train_step_includes,omitempty"`
	ConstWeights      bool    `json:"const_weights"` // forward timed with kernels.CPUOptions.ConstWeights
}

const benchExamples = `  ddpm bench --model google/ddpm-cifar10-32 --batch 16 --iters 10 --train --json
  ddpm bench --preset ddpm-cifar10 --batch 4 --iters 5 --json`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "bench --model DIR|FILE | --preset NAME [--batch N] [--iters K] [--warmup W] [--train] [--json]", benchExamples, stderr)
	var o benchOptions
	fs.StringVar(&o.Model, "model", "", "diffusers UNet2DModel folder, ddpm model file or checkpoint")
	fs.StringVar(&o.Preset, "preset", "", "a unet preset with random weights instead of --model: ddpm-cifar10 or mnist")
	fs.IntVar(&o.Batch, "batch", 16, "batch size (>= 1)")
	fs.IntVar(&o.Iters, "iters", 10, "timed iterations (>= 1); the median is reported")
	fs.IntVar(&o.Warmup, "warmup", 2, "untimed iterations first (>= 0); they also build the graphs")
	fs.BoolVar(&o.Train, "train", false, "also time a training step: forward, MSE loss, backward, AdamW")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON line")
	fs.StringVar(&o.Device, "device", "auto", "auto or cpu (the UNet runs on the CPU backend for now)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case (o.Model == "") == (o.Preset == ""):
		return usageError{"bench: give exactly one of --model and --preset"}
	case o.Batch < 1:
		return usageError{fmt.Sprintf("bench: --batch %d: must be >= 1", o.Batch)}
	case o.Iters < 1:
		return usageError{fmt.Sprintf("bench: --iters %d: must be >= 1", o.Iters)}
	case o.Warmup < 0:
		return usageError{fmt.Sprintf("bench: --warmup %d: must be >= 0", o.Warmup)}
	}
	return bench(ctx, o, stdout)
}

// medianMS is the median of d in milliseconds.
func medianMS(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	n := len(s)
	m := s[n/2]
	if n%2 == 0 {
		m = (s[n/2-1] + s[n/2]) / 2
	}
	return float64(m) / float64(time.Millisecond)
}

func bench(ctx context.Context, o benchOptions, stdout io.Writer) error {
	// Without --train the weights never change: let oneDNN cache its
	// reordered convolution weights, as sampling and serving do.
	cpu, err := newCPUFor(o.Device, !o.Train)
	if err != nil {
		return err
	}
	var m *unet.Model
	name := o.Model
	if o.Preset != "" {
		cfg, err := unet.Preset(o.Preset)
		if err != nil {
			return usageError{fmt.Sprintf("bench: --preset: %v", err)}
		}
		if m, err = unet.New(cfg, cpu, 1); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		name = "preset:" + o.Preset
	} else if m, _, err = unet.Load(o.Model, cpu); err != nil {
		return fmt.Errorf("bench: --model: %w", err)
	}
	cfg := m.Config()
	r := rand.New(rand.NewPCG(1, 2))
	x := diffusion.NewBatch(o.Batch, cfg.InChannels, cfg.SampleSize, cfg.SampleSize)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts := make([]int, o.Batch)
	var ys []int
	if cfg.NumClassEmbeds != nil {
		ys = make([]int, o.Batch)
	}
	for i := range ts {
		ts[i] = r.IntN(1000)
		if ys != nil {
			ys[i] = r.IntN(*cfg.NumClassEmbeds)
			if cfg.NullClass != nil && ys[i] == *cfg.NullClass {
				ys[i] = -1
			}
		}
	}
	res := benchResult{Device: cpu.Name(), Model: name, Batch: o.Batch, Params: m.NumParams(), Iters: o.Iters, Warmup: o.Warmup, ConstWeights: !o.Train}
	times := make([]time.Duration, 0, o.Iters)
	for i := 0; i < o.Warmup+o.Iters; i++ {
		start := time.Now()
		if _, err := m.Predict(ctx, x, ts, ys); err != nil {
			return fmt.Errorf("bench: forward: %w", err)
		}
		if i >= o.Warmup {
			times = append(times, time.Since(start))
		}
	}
	res.ForwardMSMedian = medianMS(times)
	res.ImagesPerSec = float64(o.Batch) / (res.ForwardMSMedian / 1000)
	if o.Train {
		if err := benchTrain(ctx, cpu, m, x, ts, ys, o, &res); err != nil {
			return err
		}
	}
	if o.JSON {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	fmt.Fprintf(stdout, "%s on %s, batch %d: forward %.1f ms (%.1f images/s)", name, res.Device, o.Batch, res.ForwardMSMedian, res.ImagesPerSec)
	if o.Train {
		fmt.Fprintf(stdout, ", train step %.1f ms (%.1f images/s)", res.TrainStepMSMedian, res.TrainImagesPerSec)
	}
	fmt.Fprintln(stdout)
	return nil
}

// benchTrain times training steps: forward, MSE against a fixed target,
// backward (unet.Model.Step) and one AdamW update of every parameter.
func benchTrain(ctx context.Context, cpu *kernels.CPU, m *unet.Model, x diffusion.Batch, ts, ys []int, o benchOptions, res *benchResult) error {
	target := make([]float32, x.N*m.Config().OutChannels*x.H*x.W)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range target {
		target[i] = float32(r.NormFloat64())
	}
	mse := func(out diffusion.Batch, dout []float32) (float64, error) {
		var s float64
		k := 2 / float32(len(target))
		for i, v := range out.Data {
			d := v - target[i]
			s += float64(d) * float64(d)
			dout[i] = k * d
		}
		return s / float64(len(target)), nil
	}
	params := m.Params()
	mom := make([][]float32, len(params))
	vel := make([][]float32, len(params))
	for i, p := range params {
		mom[i] = make([]float32, len(p.Value))
		vel[i] = make([]float32, len(p.Value))
	}
	h := kernels.AdamWParams{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0}
	times := make([]time.Duration, 0, o.Iters)
	for i := 0; i < o.Warmup+o.Iters; i++ {
		start := time.Now()
		if _, err := m.Step(ctx, x, ts, ys, uint64(i), mse); err != nil {
			return fmt.Errorf("bench: train step: %w", err)
		}
		for j, p := range params {
			cpu.AdamW(p.Value, mom[j], vel[j], p.Grad, h, i+1, len(p.Value))
		}
		if i >= o.Warmup {
			times = append(times, time.Since(start))
		}
	}
	res.TrainStepMSMedian = medianMS(times)
	res.TrainImagesPerSec = float64(x.N) / (res.TrainStepMSMedian / 1000)
	res.TrainStepIncludes = "forward+mse+backward+adamw"
	return nil
}
