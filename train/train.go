// Package train trains a diffusion model on any device: the network's
// forward and backward passes, the loss, gradient-norm clipping, AdamW
// with warmup and a learning-rate schedule, and an exponential moving
// average of the weights all run where the network's nn.Net lives (the
// CPU or a GPU), on flat parameter, gradient and optimiser buffers; the
// host draws the batch, the timesteps and the noise. Also: importance
// sampling of timesteps, label dropout for classifier-free guidance,
// atomic checkpoints with exact resume, a JSONL log and a progress line.
//
// Every random draw of example i of (1-based) step s (its timestep,
// noise, label dropout and dropout masks) comes from (Options.Seed, s, i)
// alone, so the training does not depend on how a batch is split.
package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/dist"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/nn"
	"github.com/ddpm-go/ddpm/weights"
)

// Options configures a training run. Zero values take the defaults of
// DefaultOptions where noted.
type Options struct {
	Steps        int              `json:"steps"`         // total optimiser steps (>= 1)
	Batch        int              `json:"batch"`         // images per step (>= 1)
	LR           float64          `json:"lr"`            // peak learning rate (> 0)
	WarmupSteps  int              `json:"warmup_steps"`  // linear warmup from 0 (>= 0)
	LRSchedule   LRSchedule       `json:"lr_schedule"`   // decay after warmup
	Beta1        float64          `json:"beta1"`         // AdamW beta1 in [0, 1)
	Beta2        float64          `json:"beta2"`         // AdamW beta2 in [0, 1)
	AdamEps      float64          `json:"adam_eps"`      // AdamW epsilon (> 0)
	WeightDecay  float64          `json:"weight_decay"`  // decoupled weight decay (>= 0)
	GradClip     float64          `json:"grad_clip"`     // max global gradient norm; 0 disables
	EMARate      float64          `json:"ema_rate"`      // EMA decay in [0, 1)
	EMAWarmup    bool             `json:"ema_warmup"`    // use min(rate, (1+step)/(10+step))
	Timesteps    TimestepSampling `json:"timesteps"`     // how t is drawn
	LabelDropout float64          `json:"label_dropout"` // probability a label becomes -1 (null class), in [0, 1)
	Flip         bool             `json:"flip"`          // random horizontal flips (not for digits)
	Seed         uint64           `json:"seed"`          // seeds data order, noise, t and dropout
	SaveEvery    int              `json:"save_every"`    // checkpoint every K steps (0: only at the end)
	SampleEvery  int              `json:"sample_every"`  // call Trainer.Sample every K steps (0: never)
	LogEvery     int              `json:"log_every"`     // JSONL and progress line every K steps (0: 10)
	LossScale    LossScale        `json:"loss_scale"`    // dynamic loss scaling (fp16 training); see LossScale
}

// DefaultOptions are the settings of Ho et al. 2020 scaled for small runs.
func DefaultOptions() Options {
	return Options{Steps: 10000, Batch: 32, LR: 2e-4, WarmupSteps: 500, LRSchedule: Constant, Beta1: 0.9, Beta2: 0.999,
		AdamEps: 1e-8, GradClip: 1, EMARate: 0.999, EMAWarmup: true, Timesteps: Uniform, SaveEvery: 1000, LogEvery: 10}
}

// Validate names the first bad option and what is allowed.
func (o Options) Validate() error {
	bad := func(name string, v any, allowed string) error {
		return fmt.Errorf("train: option %s = %v: %s", name, v, allowed)
	}
	switch {
	case o.Steps < 1:
		return bad("steps", o.Steps, "must be >= 1")
	case o.Batch < 1:
		return bad("batch", o.Batch, "must be >= 1")
	case !(o.LR > 0) || math.IsInf(o.LR, 0):
		return bad("lr", o.LR, "must be > 0")
	case o.WarmupSteps < 0:
		return bad("warmup_steps", o.WarmupSteps, "must be >= 0")
	case o.LRSchedule < Constant || o.LRSchedule > Linear:
		return bad("lr_schedule", o.LRSchedule, "allowed: constant, cosine, linear")
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		return bad("beta1", o.Beta1, "must be in [0, 1)")
	case !(o.Beta2 >= 0 && o.Beta2 < 1):
		return bad("beta2", o.Beta2, "must be in [0, 1)")
	case !(o.AdamEps > 0):
		return bad("adam_eps", o.AdamEps, "must be > 0")
	case !(o.WeightDecay >= 0):
		return bad("weight_decay", o.WeightDecay, "must be >= 0")
	case !(o.GradClip >= 0):
		return bad("grad_clip", o.GradClip, "must be >= 0 (0 disables)")
	case !(o.EMARate >= 0 && o.EMARate < 1):
		return bad("ema_rate", o.EMARate, "must be in [0, 1)")
	case o.Timesteps < Uniform || o.Timesteps > LossSecondMoment:
		return bad("timesteps", o.Timesteps, "allowed: uniform, loss-second-moment")
	case !(o.LabelDropout >= 0 && o.LabelDropout < 1):
		return bad("label_dropout", o.LabelDropout, "must be in [0, 1)")
	case o.SaveEvery < 0 || o.SampleEvery < 0 || o.LogEvery < 0:
		return bad("save_every/sample_every/log_every", [3]int{o.SaveEvery, o.SampleEvery, o.LogEvery}, "must be >= 0")
	}
	return o.LossScale.validate()
}

// LRAt is the learning rate of (1-based) step: linear warmup over
// WarmupSteps, then constant, cosine or linear decay to 0 at Steps.
func (o Options) LRAt(step int) float64 {
	if step <= o.WarmupSteps {
		return o.LR * float64(step) / float64(max(o.WarmupSteps, 1))
	}
	f := float64(step-o.WarmupSteps) / float64(max(o.Steps-o.WarmupSteps, 1))
	switch o.LRSchedule {
	case Cosine:
		return o.LR * 0.5 * (1 + math.Cos(math.Pi*f))
	case Linear:
		return o.LR * (1 - f)
	}
	return o.LR
}

// Meta is what a checkpoint records about the model besides its weights.
// Left empty, it is filled from the network and the diffusion.
type Meta struct {
	UNetConfig      json.RawMessage // diffusers UNet2DModel config
	DiffusionConfig json.RawMessage // package diffusion's config
	ClassNames      []string
}

// Network is a trainable diffusion network on backend B (unet.Net[B]
// implements it): its engine (flat parameter and gradient buffers,
// training steps), the encoding of its inputs, and its description.
type Network[B any] interface {
	diffusion.Model
	Engine() *nn.Net[B]
	Inputs(x diffusion.Batch, t []float64, y []int) (map[string][]float32, error)
	Info() nn.Info
}

// Trainer runs training. Set the fields, then call Run.
type Trainer[B any] struct {
	Options   Options
	Net       Network[B]
	Diffusion *diffusion.Diffusion
	Data      data.Dataset
	Meta      Meta
	// Dir receives checkpoint.safetensors and log.jsonl.
	Dir string
	// Overwrite lets Run start afresh over an existing checkpoint in Dir
	// (without it, and without resume, that is an error).
	Overwrite bool
	// Comm, when its Size is above 1, makes this process one rank of a
	// data-parallel run (dist.FromEnv under mpirun): Options.Batch is the
	// global batch, split evenly over the ranks; each rank computes the
	// gradient of its share and the gradients are summed over the ranks
	// (ReduceGrads) before the optimiser step, which every rank then takes
	// identically. Rank 0 alone writes checkpoints, logs, sample grids and
	// progress; every rank reads the checkpoint to resume. nil (or a world
	// of one) trains in this process alone.
	Comm dist.Comm
	// ReduceGrads, if set, sums the flat gradient buffer (n values) over
	// the ranks in place, on the device (NCCL on GPUs). nil sums through
	// Comm.AllReduceSum: in place for host buffers ([]float32), through a
	// host copy otherwise.
	ReduceGrads func(g B, n int) error
	// Progress, if non-nil, receives a progress line every LogEvery steps.
	Progress io.Writer
	// Sample, if non-nil, is called every SampleEvery steps with the EMA
	// weights (to write a sample grid, for example).
	Sample func(ctx context.Context, step int, ema map[string]weights.Tensor) error
	// Classify trains Net as a noisy classifier of the dataset's labels
	// (its output: one logit per class) for classifier guidance, with
	// the cross-entropy on x_t at uniform t of Diffusion instead of the
	// denoising loss (see classify.go). The log adds the batch accuracy.
	Classify bool

	ops       kernels.Ops[B]
	eng       *nn.Net[B]
	step      int
	sampler   *diffusion.TimestepSampler
	loader    *data.Loader
	m, v, ema B // flat optimiser state and EMA weights on the device
	norm      B // 1 value: the last gradient norm
	labelled  bool
	scale     lossScaler // Options.LossScale's state
	rank      int        // this process's rank and the number of ranks
	ranks     int
	local     int        // examples per rank per step
	hostLoss  [2]float32 // Classify: the last step's loss and accuracy
}

// state is the trainer's part of a checkpoint (weights.MetaTrainState).
type state struct {
	Step    int               `json:"step"`
	Sampler json.RawMessage   `json:"sampler"`
	Loader  *data.LoaderState `json:"loader"`
	Options Options           `json:"options"`
	Scaler  *lossScaler       `json:"loss_scaler,omitempty"`
}

// CheckpointPath is where Run writes and resumes its checkpoint.
func (tr *Trainer[B]) CheckpointPath() string {
	return filepath.Join(tr.Dir, "checkpoint.safetensors")
}

// init checks everything that can fail before the first step and sets up
// the optimiser state on the device.
func (tr *Trainer[B]) init() error {
	o := tr.Options
	if err := o.Validate(); err != nil {
		return err
	}
	if tr.Net == nil || tr.Diffusion == nil || tr.Data == nil {
		return errors.New("train: Trainer needs Net, Diffusion and Data")
	}
	if tr.Dir == "" {
		return errors.New("train: Trainer needs Dir (where checkpoints go)")
	}
	info := tr.Net.Info()
	c, h, w := tr.Data.Shape()
	if c != info.InChannels || h != info.Size || w != info.Size {
		return fmt.Errorf("train: the dataset gives %dx%dx%d images, the network takes %dx%dx%d", c, h, w, info.InChannels, info.Size, info.Size)
	}
	if tr.Classify {
		if err := tr.classifyInit(); err != nil {
			return err
		}
	} else if want := tr.Diffusion.OutChannels(info.InChannels); info.OutChannels != want {
		return fmt.Errorf("train: the diffusion's variance %s needs %d output channels, the network has out_channels = %d",
			tr.Diffusion.Config().Variance, want, info.OutChannels)
	}
	tr.rank, tr.ranks = 0, 1
	if tr.Comm != nil {
		tr.rank, tr.ranks = tr.Comm.Rank(), tr.Comm.Size()
	}
	if o.Batch%tr.ranks != 0 {
		return fmt.Errorf("train: option batch = %d (the global batch) does not split over %d ranks: make it a multiple of %d", o.Batch, tr.ranks, tr.ranks)
	}
	tr.local = o.Batch / tr.ranks
	tr.labelled = tr.Data.NumClasses() > 0 && info.Classes > 0
	switch {
	case tr.Classify:
	case tr.Data.NumClasses() > 0 && info.Classes == 0:
		tr.Options.LabelDropout = 0 // the labels are ignored (the CLI says so)
	case tr.labelled && tr.Data.NumClasses() > info.Classes-boolInt(info.NullClass >= 0):
		return fmt.Errorf("train: the dataset has %d classes, the network %d class embeddings (null class %d)", tr.Data.NumClasses(), info.Classes, info.NullClass)
	case tr.labelled && o.LabelDropout > 0 && info.NullClass < 0:
		return fmt.Errorf("train: option label_dropout = %v needs a null class: set ddpm_null_class in the UNet config (an extra class embedding) or use label dropout 0", o.LabelDropout)
	case o.LabelDropout > 0 && tr.Data.NumClasses() == 0:
		return fmt.Errorf("train: option label_dropout = %v needs a labelled dataset", o.LabelDropout)
	}
	if len(tr.Meta.UNetConfig) == 0 {
		tr.Meta.UNetConfig = info.Config
	}
	if len(tr.Meta.DiffusionConfig) == 0 {
		b, err := json.Marshal(tr.Diffusion.Config())
		if err != nil {
			return fmt.Errorf("train: diffusion config: %w", err)
		}
		tr.Meta.DiffusionConfig = b
	}
	if tr.Meta.ClassNames == nil {
		tr.Meta.ClassNames = tr.Data.ClassNames()
	}
	var err error
	if o.Timesteps == Uniform {
		tr.sampler, err = diffusion.NewUniformSampler(tr.Diffusion.T())
	} else {
		tr.sampler, err = diffusion.NewLossSecondMomentSampler(tr.Diffusion.T(), 10, 0.001)
	}
	if err != nil {
		return err
	}
	if tr.loader, err = data.NewLoader(tr.Data, o.Batch, o.Seed, data.LoaderOptions{Flip: o.Flip}); err != nil {
		return err
	}
	if tr.ranks > 1 {
		// Every rank must train the same model on the same data with the
		// same options: compare a digest of all three with rank 0's.
		id, _ := json.Marshal(struct {
			O       Options
			Net     []byte
			Diff    json.RawMessage
			N, C, H int
		}{o, info.Config, tr.Meta.DiffusionConfig, tr.Data.Len(), c, h})
		if err := dist.CheckSame(tr.Comm, "the training setup (options, model config, diffusion, dataset)", id); err != nil {
			return err
		}
	}
	tr.eng = tr.Net.Engine()
	tr.ops = tr.eng.Ops()
	n := tr.eng.NumParams()
	tr.m, tr.v, tr.ema, tr.norm = tr.ops.Alloc(n), tr.ops.Alloc(n), tr.ops.Alloc(n), tr.ops.Alloc(1)
	tr.ops.Copy(tr.ema, tr.eng.ParamBuffer(), n)
	if err := tr.ops.Sync(); err != nil {
		return fmt.Errorf("train: allocate the optimiser state (%d parameters) on %s: %w", n, tr.ops.Name(), err)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Step is the number of optimiser steps done so far.
func (tr *Trainer[B]) Step() int { return tr.step }

// Run trains until Options.Steps, resuming from Dir's checkpoint when
// resume is true and one exists. Without resume an existing checkpoint is
// an error unless Overwrite is set. It saves a checkpoint every SaveEvery
// steps, at the end and when ctx is cancelled (then it returns ctx's
// error). A NaN or infinite loss or gradient stops training with an error
// and leaves the last checkpoint as it was.
func (tr *Trainer[B]) Run(ctx context.Context, resume bool) error {
	if err := tr.init(); err != nil {
		return err
	}
	defer tr.free()
	lead := tr.rank == 0 // writes the checkpoint, the log and the progress
	if err := os.MkdirAll(tr.Dir, 0o755); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if lead {
		removeStaleTemps(tr.CheckpointPath())
	}
	_, statErr := os.Stat(tr.CheckpointPath())
	exists := statErr == nil
	switch {
	case resume && exists:
		if err := tr.load(); err != nil {
			return err
		}
	case exists && !tr.Overwrite:
		return fmt.Errorf("train: %s already holds a checkpoint: resume it, or overwrite it explicitly (--resume or --overwrite)", tr.CheckpointPath())
	}
	logf := io.Discard
	if lead {
		logPath := filepath.Join(tr.Dir, "log.jsonl")
		if err := truncateLog(logPath, tr.step); err != nil {
			return err
		}
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("train: %w", err)
		}
		defer f.Close()
		logf = f
	}
	o := tr.Options
	logEvery := o.LogEvery
	if logEvery == 0 {
		logEvery = 10
	}
	start, startStep := time.Now(), tr.step
	lossHost := make([]float32, 1)
	var sumLoss float64
	var nLoss int
	for tr.step < o.Steps {
		if ctx.Err() != nil {
			if err := tr.save(); err != nil {
				return err
			}
			return ctx.Err()
		}
		if err := tr.one(ctx); err != nil {
			if ctx.Err() != nil {
				if serr := tr.save(); serr != nil {
					return serr
				}
				return ctx.Err()
			}
			return err
		}
		logNow := tr.step%logEvery == 0 || tr.step == o.Steps
		if !logNow {
			continue
		}
		// One download of the loss and the gradient norm per logged step.
		norm := make([]float32, 1)
		if tr.Classify {
			lossHost[0] = tr.hostLoss[0]
		} else {
			lb, _, err := tr.eng.LossBuffers()
			if err != nil {
				return err
			}
			tr.ops.Download(lossHost, lb)
		}
		tr.ops.Download(norm, tr.norm)
		if err := tr.ops.Sync(); err != nil {
			return fmt.Errorf("train: step %d: %w", tr.step, err)
		}
		if tr.ranks > 1 { // each rank's loss is the mean over its share
			if err := tr.Comm.AllReduceSum(lossHost); err != nil {
				return fmt.Errorf("train: step %d: %w", tr.step, err)
			}
			lossHost[0] /= float32(tr.ranks)
		}
		loss, gnorm := float64(lossHost[0])*tr.lossFactor(), float64(norm[0])
		if !tr.stepSkipped() && (math.IsNaN(loss) || math.IsInf(loss, 0) || math.IsNaN(gnorm) || math.IsInf(gnorm, 0)) {
			return fmt.Errorf("train: loss %v, gradient norm %v at step %d; stopped, the last checkpoint %s is kept", loss, gnorm, tr.step, tr.CheckpointPath())
		}
		if !math.IsInf(loss, 0) && !math.IsNaN(loss) { // a step the loss scaler skipped may have overflowed
			sumLoss += loss
			nLoss++
		}
		el := time.Since(start).Seconds()
		its := float64(tr.step-startStep) / el
		rec := map[string]any{"step": tr.step, "loss": sumLoss / float64(max(nLoss, 1)), "lr": o.LRAt(tr.step), "grad_norm": gnorm,
			"epoch": tr.loader.Epoch(), "time": time.Now().UTC().Format(time.RFC3339)}
		tr.logScale(rec)
		if tr.Classify {
			rec["accuracy"] = tr.hostLoss[1]
		}
		b, _ := json.Marshal(rec)
		if _, err := logf.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("train: log: %w", err)
		}
		if tr.Progress != nil && lead {
			eta := time.Duration(float64(o.Steps-tr.step)/its) * time.Second
			fmt.Fprintf(tr.Progress, "step %d/%d  loss %.4f  %.2f it/s  ETA %s\n", tr.step, o.Steps, sumLoss/float64(nLoss), its, eta.Round(time.Second))
		}
		sumLoss, nLoss = 0, 0
		if o.SaveEvery > 0 && tr.step%o.SaveEvery == 0 && tr.step < o.Steps {
			if err := tr.save(); err != nil {
				return err
			}
		}
		if o.SampleEvery > 0 && tr.step%o.SampleEvery == 0 && tr.Sample != nil && lead {
			ema, err := tr.download(tr.ema)
			if err != nil {
				return err
			}
			if err := tr.Sample(ctx, tr.step, tr.eng.Split(ema)); err != nil {
				return fmt.Errorf("train: sample at step %d: %w", tr.step, err)
			}
		}
	}
	return tr.save()
}

// exampleRNG is the random source of example i of (1-based) step s.
func (tr *Trainer[B]) exampleRNG(s, i int) *rand.Rand {
	return rand.New(rand.NewPCG(tr.Options.Seed, uint64(s)*0x9e3779b97f4a7c15+uint64(i)+1))
}

// one queues a single optimiser step on the device.
func (tr *Trainer[B]) one(ctx context.Context) error {
	o := tr.Options
	all, yAll, err := tr.loader.Next(ctx)
	if err != nil {
		return fmt.Errorf("train: data: %w", err)
	}
	s := tr.step + 1
	n, D := tr.local, all.C*all.H*all.W
	first := tr.rank * n // this rank's share of the global batch
	x0 := diffusion.Batch{N: n, C: all.C, H: all.H, W: all.W, Data: all.Data[first*D : (first+n)*D]}
	y := yAll[first : first+n]
	if !tr.labelled {
		y = nil
	}
	t := make([]int, n)
	wts := make([]float64, n)
	noise := diffusion.NewBatch(x0.N, x0.C, x0.H, x0.W)
	for i := range n {
		r := tr.exampleRNG(s, first+i)
		ti, wi := tr.sampler.Sample(r, 1)
		t[i], wts[i] = ti[0], wi[0]
		for j := i * D; j < (i+1)*D; j++ {
			noise.Data[j] = float32(r.NormFloat64())
		}
		if y != nil && o.LabelDropout > 0 && r.Float64() < o.LabelDropout {
			y[i] = -1
		}
	}
	xt, err := tr.Diffusion.QSample(x0, noise, t)
	if err != nil {
		return err
	}
	tf := make([]float64, n)
	coefs := make([]diffusion.LossCoefs, n)
	for i, v := range t {
		tf[i] = float64(tr.Diffusion.Schedule().Timesteps[v])
		if coefs[i], err = tr.Diffusion.LossCoefs(v); err != nil {
			return err
		}
	}
	var in map[string][]float32
	if tr.Classify {
		err = tr.classifyStep(ctx, xt, tf, yAll[first:first+n])
	} else {
		in, err = tr.Net.Inputs(xt, tf, y)
	}
	if err != nil {
		return err
	}
	if tr.Classify {
		return tr.update(s)
	}
	cfg := tr.Diffusion.Config()
	dims := kernels.DiffusionLossDims{N: n, D: D, Learned: cfg.Variance.IsLearned(), Range: cfg.Variance == diffusion.LearnedRange}
	err = tr.eng.TrainStep(ctx, nn.Key{N: n, H: x0.H, W: x0.W}, nn.TrainInputs{Net: in, Loss: dims, X0: x0.Data,
		Noise: noise.Data, Coef: tr.scaleCoef(nn.LossCoefRows(coefs, wts)), State: nn.State{Seed: uint64(s)*0xd6e8feb86659fd93 ^ o.Seed, Example: first}})
	if err != nil {
		return err
	}
	if o.Timesteps != Uniform { // the importance sampler needs every step's losses
		_, tb, err := tr.eng.LossBuffers()
		if err != nil {
			return err
		}
		terms := make([]float32, 3*n)
		tr.ops.Download(terms, tb)
		if err := tr.ops.Sync(); err != nil {
			return fmt.Errorf("train: step %d: %w", s, err)
		}
		// Every rank updates the sampler with the whole global batch: each
		// fills its share of (t, loss) and a sum gathers them.
		shared := make([]float32, 2*o.Batch)
		for i := range n {
			shared[2*(first+i)], shared[2*(first+i)+1] = float32(t[i]), terms[3*i]
		}
		if tr.ranks > 1 {
			if err := tr.Comm.AllReduceSum(shared); err != nil {
				return fmt.Errorf("train: step %d: gather the losses: %w", s, err)
			}
		}
		gt, losses := make([]int, o.Batch), make([]float64, o.Batch)
		for i := range gt {
			gt[i], losses[i] = int(shared[2*i]), float64(shared[2*i+1])
		}
		if err := tr.sampler.Update(gt, losses); err != nil {
			return err
		}
	}
	return tr.update(s)
}

// update sums the gradients over the ranks, unscales and clips them and
// takes the AdamW and EMA steps of (1-based) step s.
func (tr *Trainer[B]) update(s int) error {
	o := tr.Options
	grads, _ := tr.eng.GradBuffer()
	params := tr.eng.ParamBuffer()
	np := tr.eng.NumParams()
	if tr.ranks > 1 {
		if err := tr.reduce(grads, np); err != nil {
			return fmt.Errorf("train: step %d: %w", s, err)
		}
		tr.ops.Axpby(grads, 1/float32(tr.ranks), grads, 0, np) // the mean over the global batch
	}
	if skip, err := tr.unscaleGrads(grads, np); err != nil || skip { // Options.LossScale
		tr.step = s
		return err
	}
	tr.ops.Norm(tr.norm, grads, np)
	if o.GradClip > 0 {
		tr.ops.ClipToNorm(grads, tr.norm, float32(o.GradClip), np)
	}
	h := kernels.AdamWParams{LR: float32(o.LRAt(s)), Beta1: float32(o.Beta1), Beta2: float32(o.Beta2), Eps: float32(o.AdamEps), WeightDecay: float32(o.WeightDecay)}
	decay := o.EMARate
	if o.EMAWarmup {
		decay = math.Min(decay, float64(1+s)/float64(10+s))
	}
	tr.ops.AdamW(params, tr.m, tr.v, grads, h, s, np)
	tr.ops.EMA(tr.ema, params, float32(decay), np)
	tr.step = s
	return nil
}

// reduce sums the gradient buffer over the ranks in place.
func (tr *Trainer[B]) reduce(g B, n int) error {
	if tr.ReduceGrads != nil {
		return tr.ReduceGrads(g, n)
	}
	if host, ok := any(g).([]float32); ok {
		return tr.Comm.AllReduceSum(host[:n])
	}
	buf := make([]float32, n)
	tr.ops.Download(buf, g)
	if err := tr.ops.Sync(); err != nil {
		return err
	}
	if err := tr.Comm.AllReduceSum(buf); err != nil {
		return fmt.Errorf("all-reduce the gradients: %w", err)
	}
	tr.ops.Upload(g, buf)
	return nil
}

// download copies a flat device buffer to the host.
func (tr *Trainer[B]) download(b B) ([]float32, error) {
	out := make([]float32, tr.eng.NumParams())
	tr.ops.Download(out, b)
	if err := tr.ops.Sync(); err != nil {
		return nil, fmt.Errorf("train: download: %w", err)
	}
	return out, nil
}

// free releases the optimiser buffers.
func (tr *Trainer[B]) free() {
	if tr.ops == nil {
		return
	}
	for _, b := range []B{tr.m, tr.v, tr.ema, tr.norm} {
		tr.ops.Free(b)
	}
}

// save writes the checkpoint atomically: EMA weights as the model, plus
// raw weights, Adam moments and the trainer state. Non-finite weights are
// never written. Only rank 0 writes.
func (tr *Trainer[B]) save() error {
	if tr.rank != 0 {
		return nil
	}
	var flat [4][]float32
	for i, b := range []B{tr.ema, tr.eng.ParamBuffer(), tr.m, tr.v} {
		v, err := tr.download(b)
		if err != nil {
			return err
		}
		flat[i] = v
	}
	for _, v := range flat[:2] {
		for _, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return fmt.Errorf("train: the weights are not finite at step %d; stopped, the last checkpoint %s is kept", tr.step, tr.CheckpointPath())
			}
		}
	}
	smp, err := tr.sampler.MarshalState()
	if err != nil {
		return fmt.Errorf("train: sampler state: %w", err)
	}
	ls := tr.loader.State()
	st, err := json.Marshal(state{Step: tr.step, Sampler: smp, Loader: &ls, Options: tr.Options, Scaler: tr.scalerState()})
	if err != nil {
		return fmt.Errorf("train: state: %w", err)
	}
	c := &weights.Checkpoint{
		Model: weights.Model{UNetConfig: tr.Meta.UNetConfig, DiffusionConfig: tr.Meta.DiffusionConfig,
			ClassNames: tr.Meta.ClassNames, Tensors: tr.eng.Split(flat[0])},
		Raw: tr.eng.Split(flat[1]), AdamM: tr.eng.Split(flat[2]), AdamV: tr.eng.Split(flat[3]), TrainState: st,
	}
	return weights.WriteCheckpoint(tr.CheckpointPath(), c)
}

// load restores everything save wrote.
func (tr *Trainer[B]) load() error {
	path := tr.CheckpointPath()
	c, err := weights.ReadCheckpoint(path)
	if err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	var st state
	if err := json.Unmarshal(c.TrainState, &st); err != nil {
		return fmt.Errorf("train: resume %s: train state: %w", path, err)
	}
	for _, set := range []struct {
		name string
		t    map[string]weights.Tensor
		dst  B
	}{{"ema", c.Tensors, tr.ema}, {"raw", c.Raw, tr.eng.ParamBuffer()}, {"adam_m", c.AdamM, tr.m}, {"adam_v", c.AdamV, tr.v}} {
		flat, err := tr.eng.Join(set.t)
		if err != nil {
			return fmt.Errorf("train: resume %s: %s tensors: %w", path, set.name, err)
		}
		tr.ops.Upload(set.dst, flat)
	}
	if err := tr.ops.Sync(); err != nil {
		return fmt.Errorf("train: resume %s: %w", path, err)
	}
	if tr.sampler, err = diffusion.UnmarshalTimestepSampler(st.Sampler); err != nil {
		return fmt.Errorf("train: resume %s: %w", path, err)
	}
	if st.Loader != nil {
		if err := tr.loader.Restore(*st.Loader); err != nil {
			return fmt.Errorf("train: resume %s: %w", path, err)
		}
	}
	tr.step = st.Step
	tr.restoreScaler(st.Scaler)
	return nil
}

// removeStaleTemps deletes the temporary files an interrupted checkpoint
// write of path left behind (".checkpoint.safetensors.tmp*" beside it).
func removeStaleTemps(path string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp*"))
	for _, m := range matches {
		os.Remove(m)
	}
}

// truncateLog drops the records of steps after step from a JSONL log (a
// resumed run repeats them), rewriting it atomically; a missing log is
// fine.
func truncateLog(path string, step int) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("train: log: %w", err)
	}
	var keep []byte
	dropped := false
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec struct {
			Step int `json:"step"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Step > step {
			dropped = true
			continue
		}
		keep = append(keep, line...)
		if keep[len(keep)-1] != '\n' {
			keep = append(keep, '\n')
		}
	}
	if !dropped {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, keep, 0o644); err != nil {
		return fmt.Errorf("train: log: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("train: log: %w", err)
	}
	return nil
}
