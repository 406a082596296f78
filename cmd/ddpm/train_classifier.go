package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/train"
)

const trainClassifierExamples = `  ddpm train-classifier --dataset mnist --steps 3000 --out runs/mnist-classifier
  ddpm sample --classifier runs/mnist-classifier/checkpoint.safetensors --classifier-scale 2 --class 3
  ddpm train-classifier --dataset mnist --model runs/mnist/checkpoint.safetensors --out runs/clf   # that model's noise schedule
  ddpm train-classifier --dataset folder:./pets --size 64 --config "--classifier_width 128 --classifier_depth 2" --out runs/pets-clf`

// runTrainClassifier trains guided-diffusion's noisy classifier
// (EncoderUNetModel) on a labelled dataset for classifier guidance.
func runTrainClassifier(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := train.DefaultOptions()
	o.LR, o.WeightDecay, o.EMARate, o.WarmupSteps, o.Steps = 3e-4, 0.05, 0.999, 200, 3000
	dopts := data.Options{Size: 32, Resize: data.ResizePad}
	fs := newFlagSet("train-classifier", "train-classifier [flags]", trainClassifierExamples, stderr)
	dataset := fs.String("dataset", "mnist", "labelled dataset: mnist, fashion-mnist, idx:DIR or folder:DIR")
	config := fs.String("config", "", "classifier flags as guided-diffusion's READMEs print them (\"--classifier_width 128 ...\"),\nor a JSON file of them; image_size, in_channels and num_classes come from the dataset\n(default: width 64, depth 2, channel mult 1,2,2, attention at 16 and 8, attention pool)")
	model := fs.String("model", "", "diffusion model whose noise schedule the classifier learns (default: --schedule and --timesteps)")
	sched := fs.String("schedule", "linear", "beta schedule without --model: linear, cosine, scaled_linear or sigmoid")
	T := fs.Int("timesteps", 1000, "diffusion steps T without --model")
	out := fs.String("out", "runs/classifier", "directory for checkpoint.safetensors and log.jsonl")
	resume := fs.Bool("resume", false, "continue from --out's checkpoint")
	overwrite := fs.Bool("overwrite", false, "start afresh over an existing checkpoint in --out")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	device := fs.String("device", "auto", "auto, cpu or cuda[:N]")
	fs.IntVar(&o.Steps, "steps", o.Steps, "optimiser steps")
	fs.IntVar(&o.Batch, "batch", 64, "images per step")
	fs.Float64Var(&o.LR, "lr", o.LR, "peak learning rate")
	fs.IntVar(&o.WarmupSteps, "warmup", o.WarmupSteps, "learning-rate warmup steps")
	fs.TextVar(&o.LRSchedule, "lr-schedule", o.LRSchedule, "learning-rate decay after warmup: constant, cosine or linear")
	fs.Float64Var(&o.WeightDecay, "weight-decay", o.WeightDecay, "AdamW weight decay (guided-diffusion's classifiers use 0.05)")
	fs.Float64Var(&o.EMARate, "ema", o.EMARate, "EMA decay rate")
	fs.BoolVar(&o.Flip, "flip", false, "random horizontal flips (not for digits)")
	fs.Uint64Var(&o.Seed, "seed", 0, "random seed")
	fs.IntVar(&o.SaveEvery, "save-every", o.SaveEvery, "checkpoint every K steps")
	fs.IntVar(&o.LogEvery, "log-every", o.LogEvery, "log every K steps")
	dopts.BindFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ds, err := data.Open(ctx, *dataset, dopts)
	if err != nil {
		return err
	}
	if ds.NumClasses() == 0 {
		return usageError{fmt.Sprintf("train-classifier: --dataset %s has no class labels", *dataset)}
	}
	cfg, err := classifierConfig(*config, ds)
	if err != nil {
		return err
	}
	var d *diffusion.Diffusion
	if *model != "" {
		src, err := pipeline.OpenSource(ctx, *model, nil)
		if err != nil {
			return fmt.Errorf("train-classifier: --model: %w", err)
		}
		if d, err = pipeline.DiffusionFor(src); err != nil {
			return fmt.Errorf("train-classifier: --model: %w", err)
		}
	} else {
		dcfg := diffusion.DefaultConfig()
		dcfg.Timesteps = *T
		if err := dcfg.Schedule.UnmarshalText([]byte(*sched)); err != nil {
			return usageError{fmt.Sprintf("train-classifier: --schedule %q: allowed linear, cosine, scaled_linear, sigmoid", *sched)}
		}
		if d, err = diffusion.New(dcfg); err != nil {
			return err
		}
	}
	be, err := cuda.Select(*device, cuda.SelectOptions{CPU: kernels.CPUOptions{Threads: *threads},
		Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }})
	if err != nil {
		return err
	}
	job := classifierJob{o: o, cfg: cfg, d: d, ds: ds, dataset: *dataset, out: *out, resume: *resume, overwrite: *overwrite}
	if be.GPU != nil {
		defer be.GPU.Close()
		err = trainClassifierOn[cuda.Ptr](ctx, be.GPU, job, stderr)
	} else {
		err = trainClassifierOn[[]float32](ctx, be.CPU, job, stderr)
	}
	if perr := writeLossPlot(filepath.Join(*out, "log.jsonl"), filepath.Join(*out, "loss.png")); perr != nil {
		fmt.Fprintln(stderr, "train-classifier:", perr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checkpoint: %s\n", filepath.Join(*out, "checkpoint.safetensors"))
	return nil
}

// classifierConfig is the classifier's config: flags (a flag string, or
// a JSON file of flags) over ddpm's small default, with the image size,
// channels and classes the dataset has.
func classifierConfig(flags string, ds data.Dataset) (adm.Config, error) {
	c, h, w := ds.Shape()
	if h != w {
		return adm.Config{}, usageError{fmt.Sprintf("train-classifier: the dataset's images are %dx%d: the classifier takes square images (set --size)", h, w)}
	}
	base := fmt.Sprintf("--classifier_width 64 --classifier_depth 2 --classifier_channel_mult 1,2,2 --classifier_attention_resolutions %d,%d "+
		"--classifier_pool attention --classifier_resblock_updown True --classifier_use_scale_shift_norm True", h/2, h/4)
	user := flags
	if flags != "" && !strings.HasPrefix(strings.TrimSpace(flags), "--") {
		b, err := os.ReadFile(flags)
		if err != nil {
			return adm.Config{}, fmt.Errorf("train-classifier: --config: %w", err)
		}
		var vals map[string]any
		if err := json.Unmarshal(b, &vals); err != nil {
			return adm.Config{}, fmt.Errorf("train-classifier: --config %s: %w", flags, err)
		}
		var parts []string
		for k, v := range vals {
			parts = append(parts, fmt.Sprintf("--%s=%v", k, strings.Trim(strings.ReplaceAll(fmt.Sprint(v), " ", ","), "[]")))
		}
		user = strings.Join(parts, " ")
	}
	cfg, err := adm.ParseFlags(fmt.Sprintf("%s %s --image_size %d --in_channels %d --num_classes %d", base, user, h, c, ds.NumClasses()))
	if err != nil {
		return adm.Config{}, usageError{fmt.Sprintf("train-classifier: %v", err)}
	}
	return cfg, nil
}

// classifierJob is what runTrainClassifier resolved from the flags.
type classifierJob struct {
	o                 train.Options
	cfg               adm.Config
	d                 *diffusion.Diffusion
	ds                data.Dataset
	dataset, out      string
	resume, overwrite bool
}

// trainClassifierOn trains job's classifier on one backend.
func trainClassifierOn[B any](ctx context.Context, ops kernels.Ops[B], job classifierJob, stderr io.Writer) error {
	net, err := adm.NewOn[B](job.cfg, ops, job.o.Seed)
	if err != nil {
		return err
	}
	defer net.Close()
	dj, _ := json.Marshal(job.d.Config())
	tr := &train.Trainer[B]{Options: job.o, Net: net, Diffusion: job.d, Data: job.ds, Dir: job.out, Overwrite: job.overwrite, Classify: true,
		Progress: stderr, Meta: train.Meta{UNetConfig: job.cfg.JSON(), DiffusionConfig: dj, ClassNames: job.ds.ClassNames()}}
	fmt.Fprintf(stderr, "training %d-parameter noisy classifier on %s (%d images, %d classes, %d diffusion steps) on %s into %s\n",
		net.NumParams(), job.dataset, job.ds.Len(), job.ds.NumClasses(), job.d.T(), ops.Name(), job.out)
	return tr.Run(ctx, job.resume)
}
