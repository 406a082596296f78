package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/dist"
	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/train"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

const trainExamples = `  ddpm train --dataset mnist --preset mnist --steps 20000 --batch 32 --out runs/mnist
  ddpm train --dataset mnist --preset mnist --out runs/mnist --resume      # continue after a stop
  ddpm train --dataset mnist --init embedded:default --steps 5000 --lr 1e-4 --loss hybrid --schedule cosine --out runs/tuned
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
	initFrom := fs.String("init", "", "start from this model's weights (a model file, checkpoint, diffusers folder, Hub id or embedded:default)\nwith a fresh optimiser: fine-tuning; its UNet config replaces --preset (ignored when --resume finds a checkpoint)")
	loss := fs.String("loss", "simple", "loss: simple, vlb or hybrid")
	variance := fs.String("variance", "", "reverse-process variance: fixed_small, fixed_large, learned or learned_range\n(default: fixed_small for --loss simple, learned_range for vlb and hybrid)")
	sched := fs.String("schedule", "linear", "beta schedule: linear, cosine, scaled_linear or sigmoid")
	threads := fs.Int("threads", 0, "CPU threads for the model (0: all cores)")
	device := fs.String("device", "auto", "auto, cpu or cuda[:N]: where the model, the loss and the optimiser run")
	precision := precisionFlag(fs)
	overwrite := fs.Bool("overwrite", false, "start afresh over an existing checkpoint in --out (otherwise refused; see --resume)")
	collTimeout := fs.Duration("collective-timeout", 10*time.Minute, "under mpirun: abort the job when a rank waits longer than this in one collective (a hung rank)")
	pred := fs.String("prediction", "epsilon", "model output: epsilon, sample or v_prediction")
	T := fs.Int("timesteps", 1000, "diffusion steps T")
	fs.IntVar(&o.Steps, "steps", o.Steps, "optimiser steps")
	fs.IntVar(&o.Batch, "batch", o.Batch, "images per step")
	fs.Float64Var(&o.LR, "lr", o.LR, "peak learning rate")
	fs.IntVar(&o.WarmupSteps, "warmup", o.WarmupSteps, "learning-rate warmup steps")
	fs.TextVar(&o.LRSchedule, "lr-schedule", o.LRSchedule, "learning-rate decay after warmup: constant, cosine or linear")
	fs.Float64Var(&o.GradClip, "grad-clip", o.GradClip, "max gradient norm (0 disables)")
	fs.Float64Var(&o.EMARate, "ema", o.EMARate, "EMA decay rate")
	fs.TextVar(&o.Timesteps, "t-sampler", o.Timesteps, "timestep sampler: uniform or loss-second-moment (importance sampling, for --loss vlb)")
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
	var initModel *weights.Source
	if *initFrom != "" {
		if *config != "" {
			return usageError{"train: --init and --config both give the model: the model of --init is trained (drop --config)"}
		}
		if initModel, err = weights.Open(*initFrom); err != nil {
			return fmt.Errorf("train: --init: %w", err)
		}
		if cfg, err = unet.ParseConfig(initModel.UNetConfig); err != nil {
			return fmt.Errorf("train: --init %s: %w", *initFrom, err)
		}
	} else if *config != "" {
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
	switch {
	case ds.NumClasses() == 0:
		o.LabelDropout = 0
	case cfg.NumClassEmbeds == nil:
		fmt.Fprintf(stderr, "train: the model is unconditional (num_class_embeds null): the dataset's %d class labels are ignored\n", ds.NumClasses())
		o.LabelDropout = 0
	case o.LabelDropout > 0 && cfg.NullClass == nil:
		return usageError{fmt.Sprintf("train: --label-dropout %v needs a null class: set ddpm_null_class in the UNet config (one more class embedding than classes) or pass --label-dropout 0", o.LabelDropout)}
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
	if dcfg.Variance.IsLearned() && initModel == nil {
		cfg.OutChannels = 2 * cfg.InChannels
	}
	if o.WarmupSteps > o.Steps {
		fmt.Fprintf(stderr, "train: warning: --warmup %d is more than --steps %d: the learning rate never reaches --lr\n", o.WarmupSteps, o.Steps)
	}
	d, err := diffusion.New(dcfg)
	if err != nil {
		return err
	}
	if initModel != nil {
		if err := checkInitModel(initModel, cfg, d, stderr); err != nil {
			return err
		}
	}
	spec, err := cuda.ParseDevice(*device)
	if err != nil {
		return usageError{err.Error()}
	}
	// Under mpirun this process is one rank of a data-parallel run; alone
	// (or with one rank) it trains by itself, as before.
	comm, launch, err := dist.FromEnv(dist.Options{Timeout: *collTimeout})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	defer comm.Close()
	lead := comm.Rank() == 0
	if comm.Size() > 1 {
		// One GPU per rank on each node: cuda and auto (when a GPU is there)
		// take the GPU of the node-local rank.
		if n, err := cuda.Devices(); spec.Kind == "cuda" && !strings.Contains(*device, ":") || *device == "auto" && err == nil && len(n) > 0 {
			*device = fmt.Sprintf("cuda:%d", launch.LocalRank)
		}
		if lead {
			fmt.Fprintf(stderr, "train: data-parallel over %d ranks (%s): global batch %d, %d per rank\n", comm.Size(), launch, o.Batch, o.Batch/max(comm.Size(), 1))
		}
	}
	if !lead {
		stderr = io.Discard
	}
	if err := checkPrecision(*precision); err != nil {
		return err
	}
	be, err := cuda.Select(*device, cuda.SelectOptions{CPU: kernels.CPUOptions{Threads: *threads},
		GPU: cuda.Options{Precision: *precision}, Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }})
	if err != nil {
		return err
	}
	if be.GPU != nil && be.GPU.Precision() == cuda.FP16 {
		o.LossScale.Enabled = true // fp16 gradients need it (train.LossScale)
	}
	job := trainJob{o: o, cfg: cfg, d: d, dcfg: dcfg, ds: ds, dataset: *dataset, out: *out, resume: *resume, overwrite: *overwrite, comm: comm}
	if initModel != nil {
		job.init = initModel.Tensors
	}
	if be.GPU != nil {
		defer be.GPU.Close()
		reduce, closeNCCL, rerr := ncclReducer(be.GPU, comm, *collTimeout, stderr)
		if rerr != nil {
			return rerr
		}
		defer closeNCCL()
		job.reduceGPU = reduce
		err = trainOn[cuda.Ptr](ctx, be.GPU, job, stderr)
	} else {
		err = trainOn[[]float32](ctx, be.CPU, job, stderr)
	}
	if !lead {
		return err
	}
	if perr := writeLossPlot(filepath.Join(*out, "log.jsonl"), filepath.Join(*out, "loss.png")); perr != nil {
		fmt.Fprintln(stderr, "train:", perr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "checkpoint: %s\n", filepath.Join(*out, "checkpoint.safetensors"))
	return nil
}

// checkInitModel checks that --init's model (cfg, its UNet config) fits
// the run's diffusion d: its output channels must be the ones d's
// variance needs, and a process other than the model's own is said on
// stderr (fine-tuning to another schedule is allowed, but rarely meant).
func checkInitModel(src *weights.Source, cfg unet.Config, d *diffusion.Diffusion, stderr io.Writer) error {
	now := d.Config()
	if want := d.OutChannels(cfg.InChannels); cfg.OutChannels != want {
		return usageError{fmt.Sprintf("train: --init %s has out_channels = %d, the flags' variance %s needs %d (set --loss and --variance as the model was trained)",
			src.Path, cfg.OutChannels, now.Variance, want)}
	}
	own, err := pipeline.DiffusionFor(src)
	if err != nil {
		return fmt.Errorf("train: --init: %w", err)
	}
	if was := own.Config(); was.Schedule != now.Schedule || was.Timesteps != now.Timesteps || was.Prediction != now.Prediction || was.Variance != now.Variance {
		fmt.Fprintf(stderr, "train: note: --init %s was trained with schedule %s, %d steps, prediction %s, variance %s; this run uses %s, %d, %s, %s\n",
			src.Path, was.Schedule, was.Timesteps, was.Prediction, was.Variance, now.Schedule, now.Timesteps, now.Prediction, now.Variance)
	}
	return nil
}

// trainJob is what runTrain resolved from the flags.
type trainJob struct {
	o                 train.Options
	cfg               unet.Config
	d                 *diffusion.Diffusion
	dcfg              diffusion.Config
	ds                data.Dataset
	dataset, out      string
	resume, overwrite bool
	init              map[string]weights.Tensor // --init's weights, or nil for a fresh initialisation
	comm              dist.Comm
	reduceGPU         func(g cuda.Ptr, n int) error // NCCL, for a GPU run over several ranks
}

// ncclReducer returns the all-reduce of a multi-rank GPU run: NCCL's on
// the device's stream, the unique id sent from rank 0 over MPI; nil for
// one rank (or when libnccl is absent: the gradients then go through the
// host and MPI, said once on stderr).
func ncclReducer(gpu *cuda.Device, comm dist.Comm, timeout time.Duration, stderr io.Writer) (func(cuda.Ptr, int) error, func(), error) {
	if comm.Size() < 2 {
		return nil, func() {}, nil
	}
	lib, err := dist.OpenNCCL("")
	if err != nil {
		fmt.Fprintf(stderr, "train: NCCL not found, gradients go through the host and MPI: %v\n", err)
		return nil, func() {}, nil
	}
	var nc *dist.NCCLComm
	if err := gpu.WithStream(func(uintptr) error {
		var err error
		nc, err = lib.NewComm(comm, timeout)
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("train: NCCL: %w", err)
	}
	reduce := func(g cuda.Ptr, n int) error {
		return gpu.WithStream(func(stream uintptr) error { return nc.AllReduceSum(uintptr(g), n, stream) })
	}
	return reduce, func() { nc.Close() }, nil
}

// trainOn trains job's UNet on one backend: the network, the loss and the
// optimiser run on ops; sample grids are drawn from the EMA weights on the
// same device.
func trainOn[B any](ctx context.Context, ops kernels.Ops[B], job trainJob, stderr io.Writer) error {
	net, err := unet.NewOn[B](job.cfg, ops, job.o.Seed)
	if err != nil {
		return err
	}
	defer net.Close()
	if job.init != nil {
		// Run copies these into the EMA as well; a checkpoint found by
		// --resume replaces both.
		if err := net.SetTensors(job.init); err != nil {
			return fmt.Errorf("train: --init: %w", err)
		}
	}
	dj, _ := json.Marshal(job.dcfg)
	tr := &train.Trainer[B]{Options: job.o, Net: net, Diffusion: job.d, Data: job.ds, Dir: job.out, Overwrite: job.overwrite, Comm: job.comm,
		Progress: stderr, Meta: train.Meta{UNetConfig: job.cfg.JSON(), DiffusionConfig: dj, ClassNames: job.ds.ClassNames()}}
	if job.o.SampleEvery > 0 {
		eval, err := unet.NewOn[B](job.cfg, ops, 0)
		if err != nil {
			return err
		}
		defer eval.Close()
		_, h, w := job.ds.Shape()
		tr.Sample = func(ctx context.Context, step int, ema map[string]weights.Tensor) error {
			if err := eval.SetTensors(ema); err != nil {
				return err
			}
			so := diffusion.Options{Sampler: diffusion.SamplerDDIM, Steps: 50, Seed: 1, N: 16, C: job.cfg.InChannels, H: h, W: w}
			if k := job.ds.NumClasses(); k > 0 && job.cfg.NumClassEmbeds != nil {
				for i := 0; i < 16; i++ {
					so.Labels = append(so.Labels, i%k)
				}
			}
			b, err := job.d.Sample(ctx, eval, so)
			if err != nil {
				return err
			}
			return img.WriteGrid(filepath.Join(job.out, fmt.Sprintf("samples-%06d.png", step)), b, img.GridOptions{NRow: 4, Padding: 2})
		}
	}
	if job.reduceGPU != nil {
		if r, ok := any(job.reduceGPU).(func(g B, n int) error); ok {
			tr.ReduceGrads = r
		}
	}
	fmt.Fprintf(stderr, "training %d-parameter UNet on %s (%d images, %d classes) on %s into %s\n",
		net.NumParams(), job.dataset, job.ds.Len(), job.ds.NumClasses(), ops.Name(), job.out)
	return tr.Run(ctx, job.resume)
}
