package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/train"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

const trainExamples = `  ddpm train --dataset mnist --preset mnist --steps 20000 --batch 32 --out runs/mnist
  ddpm train --dataset mnist --preset mnist --out runs/mnist --resume      # continue after a stop
  ddpm train --dataset folder:./faces --size 32 --config unet.json --out runs/faces`

func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := train.DefaultOptions()
	dopts := data.Options{Size: 32, Resize: data.ResizePad}
	fs := newFlagSet("train", "train [flags]", trainExamples, stderr)
	dataset := fs.String("dataset", "mnist", "mnist, fashion-mnist, idx:DIR or folder:DIR")
	preset := fs.String("preset", "mnist", "model preset: mnist or ddpm-cifar10 (ignored with --config)")
	config := fs.String("config", "", "diffusers UNet2DModel config.json to train instead of a preset")
	out := fs.String("out", "runs/ddpm", "directory for checkpoint.safetensors, log.jsonl and sample grids")
	resume := fs.Bool("resume", false, "continue from --out's checkpoint")
	loss := fs.String("loss", "simple", "loss: simple, vlb or hybrid")
	variance := fs.String("variance", "", "reverse-process variance: fixed_small, fixed_large, learned or learned_range\n(default: fixed_small for --loss simple, learned_range for vlb and hybrid)")
	sched := fs.String("schedule", "linear", "beta schedule: linear, cosine, scaled_linear or sigmoid")
	threads := fs.Int("threads", 0, "CPU threads for the model (0: all cores)")
	pred := fs.String("prediction", "epsilon", "model output: epsilon, sample or v_prediction")
	T := fs.Int("timesteps", 1000, "diffusion steps T")
	fs.IntVar(&o.Steps, "steps", o.Steps, "optimiser steps")
	fs.IntVar(&o.Batch, "batch", o.Batch, "images per step")
	fs.Float64Var(&o.LR, "lr", o.LR, "peak learning rate")
	fs.IntVar(&o.WarmupSteps, "warmup", o.WarmupSteps, "learning-rate warmup steps")
	fs.StringVar(&o.LRSchedule, "lr-schedule", o.LRSchedule, "constant, cosine or linear")
	fs.Float64Var(&o.GradClip, "grad-clip", o.GradClip, "max gradient norm (0 disables)")
	fs.Float64Var(&o.EMARate, "ema", o.EMARate, "EMA decay rate")
	fs.StringVar(&o.Timesteps, "t-sampler", o.Timesteps, "timestep sampler: uniform or loss-second-moment")
	fs.Float64Var(&o.LabelDropout, "label-dropout", 0.1, "probability of dropping a label (classifier-free guidance)")
	fs.BoolVar(&o.Flip, "flip", false, "random horizontal flips (not for digits)")
	fs.Uint64Var(&o.Seed, "seed", 0, "random seed")
	fs.IntVar(&o.SaveEvery, "save-every", o.SaveEvery, "checkpoint every K steps")
	fs.IntVar(&o.SampleEvery, "sample-every", 0, "write a sample grid every K steps (0: never)")
	fs.IntVar(&o.LogEvery, "log-every", o.LogEvery, "log every K steps")
	dopts.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ds, err := data.Open(ctx, *dataset, dopts)
	if err != nil {
		return err
	}
	var cfg unet.Config
	if *config != "" {
		b, err := os.ReadFile(*config)
		if err != nil {
			return fmt.Errorf("train: --config: %w", err)
		}
		if cfg, err = unet.ParseConfig(b); err != nil {
			return err
		}
	} else if cfg, err = unet.Preset(*preset); err != nil {
		return usageError{err.Error()}
	}
	c, h, w := ds.Shape()
	if c != cfg.InChannels || h != cfg.SampleSize || w != cfg.SampleSize {
		return usageError{fmt.Sprintf("train: the dataset gives %dx%dx%d images, the model takes %dx%dx%d (set --size, --channels or the model config)", c, h, w, cfg.InChannels, cfg.SampleSize, cfg.SampleSize)}
	}
	if ds.NumClasses() == 0 {
		o.LabelDropout = 0
	}
	dcfg := diffusion.DefaultConfig()
	dcfg.Timesteps = *T
	if err := dcfg.Loss.UnmarshalText([]byte(*loss)); err != nil {
		return usageError{fmt.Sprintf("train: --loss %q: allowed simple, vlb, hybrid", *loss)}
	}
	if err := dcfg.Prediction.UnmarshalText([]byte(*pred)); err != nil {
		return usageError{fmt.Sprintf("train: --prediction %q: allowed epsilon, sample, v_prediction", *pred)}
	}
	if err := dcfg.Schedule.UnmarshalText([]byte(*sched)); err != nil {
		return usageError{fmt.Sprintf("train: --schedule %q: allowed linear, cosine, scaled_linear, sigmoid", *sched)}
	}
	switch {
	case *variance != "":
		if err := dcfg.Variance.UnmarshalText([]byte(*variance)); err != nil {
			return usageError{fmt.Sprintf("train: --variance %q: allowed fixed_small, fixed_large, learned, learned_range", *variance)}
		}
	case dcfg.Loss != diffusion.LossSimple:
		dcfg.Variance = diffusion.LearnedRange
		fmt.Fprintf(stderr, "train: --loss %s learns the variance: --variance learned_range (set --variance to choose)\n", dcfg.Loss)
	}
	if dcfg.Variance.IsLearned() {
		cfg.OutChannels = 2 * cfg.InChannels
	}
	if o.WarmupSteps > o.Steps {
		fmt.Fprintf(stderr, "train: warning: --warmup %d is more than --steps %d: the learning rate never reaches --lr\n", o.WarmupSteps, o.Steps)
	}
	d, err := diffusion.New(dcfg)
	if err != nil {
		return err
	}
	cpu, err := kernels.NewCPU(kernels.CPUOptions{Threads: *threads})
	if err != nil {
		return err
	}
	net, err := unet.New(cfg, cpu, o.Seed)
	if err != nil {
		return err
	}
	dj, _ := json.Marshal(dcfg)
	tr := &train.Trainer{Options: o, Net: net, Diffusion: d, Data: ds, CPU: cpu, Dir: *out, Progress: stderr,
		Meta: train.Meta{UNetConfig: cfg.JSON(), DiffusionConfig: dj, ClassNames: ds.ClassNames()}}
	if o.SampleEvery > 0 {
		eval, err := unet.New(cfg, cpu, 0)
		if err != nil {
			return err
		}
		tr.Sample = func(ctx context.Context, step int, ema map[string]weights.Tensor) error {
			if err := eval.SetTensors(ema); err != nil {
				return err
			}
			so := diffusion.Options{Sampler: diffusion.SamplerDDIM, Steps: 50, Seed: 1, N: 16, C: cfg.InChannels, H: h, W: w}
			if k := ds.NumClasses(); k > 0 {
				for i := 0; i < 16; i++ {
					so.Labels = append(so.Labels, i%k)
				}
			}
			b, err := d.Sample(ctx, eval, so)
			if err != nil {
				return err
			}
			return img.WriteGrid(filepath.Join(*out, fmt.Sprintf("samples-%06d.png", step)), b, img.GridOptions{NRow: 4, Padding: 2})
		}
	}
	fmt.Fprintf(stderr, "training %d-parameter UNet on %s (%d images, %d classes) on %s into %s\n",
		net.NumParams(), *dataset, ds.Len(), ds.NumClasses(), cpu.Name(), *out)
	err = tr.Run(ctx, *resume)
	if perr := writeLossPlot(filepath.Join(*out, "log.jsonl"), filepath.Join(*out, "loss.png")); perr != nil {
		fmt.Fprintln(stderr, "train:", perr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checkpoint: %s\n", tr.CheckpointPath())
	return nil
}
