// Package train trains a diffusion model: AdamW with warmup and a learning
// rate schedule, gradient-norm clipping, an exponential moving average of
// the weights, importance sampling of timesteps, label dropout for
// classifier-free guidance, atomic checkpoints with exact resume, a JSONL
// log and a progress line.
package train

import (
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
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/weights"
)

// Options configures a training run. Zero values take the defaults of
// DefaultOptions where noted.
type Options struct {
	Steps        int     `json:"steps"`         // total optimiser steps (>= 1)
	Batch        int     `json:"batch"`         // images per step (>= 1)
	LR           float64 `json:"lr"`            // peak learning rate (> 0)
	WarmupSteps  int     `json:"warmup_steps"`  // linear warmup from 0 (>= 0)
	LRSchedule   string  `json:"lr_schedule"`   // "constant", "cosine" or "linear" decay after warmup
	Beta1        float64 `json:"beta1"`         // AdamW beta1 in [0, 1)
	Beta2        float64 `json:"beta2"`         // AdamW beta2 in [0, 1)
	AdamEps      float64 `json:"adam_eps"`      // AdamW epsilon (> 0)
	WeightDecay  float64 `json:"weight_decay"`  // decoupled weight decay (>= 0)
	GradClip     float64 `json:"grad_clip"`     // max global gradient norm; 0 disables
	EMARate      float64 `json:"ema_rate"`      // EMA decay in [0, 1)
	EMAWarmup    bool    `json:"ema_warmup"`    // use min(rate, (1+step)/(10+step))
	Timesteps    string  `json:"timesteps"`     // t sampler: "uniform" or "loss-second-moment"
	LabelDropout float64 `json:"label_dropout"` // probability a label becomes -1 (null class), in [0, 1)
	Flip         bool    `json:"flip"`          // random horizontal flips (not for digits)
	Seed         uint64  `json:"seed"`          // seeds data order, noise, t and dropout
	SaveEvery    int     `json:"save_every"`    // checkpoint every K steps (0: only at the end)
	SampleEvery  int     `json:"sample_every"`  // call Trainer.Sample every K steps (0: never)
	LogEvery     int     `json:"log_every"`     // JSONL and progress line every K steps (0: 10)
}

// DefaultOptions are the settings of Ho et al. 2020 scaled for small runs.
func DefaultOptions() Options {
	return Options{Steps: 10000, Batch: 32, LR: 2e-4, WarmupSteps: 500, LRSchedule: "constant", Beta1: 0.9, Beta2: 0.999,
		AdamEps: 1e-8, GradClip: 1, EMARate: 0.999, EMAWarmup: true, Timesteps: "uniform", SaveEvery: 1000, LogEvery: 10}
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
	case o.LRSchedule != "constant" && o.LRSchedule != "cosine" && o.LRSchedule != "linear":
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
	case o.Timesteps != "uniform" && o.Timesteps != "loss-second-moment":
		return bad("timesteps", o.Timesteps, "allowed: uniform, loss-second-moment")
	case !(o.LabelDropout >= 0 && o.LabelDropout < 1):
		return bad("label_dropout", o.LabelDropout, "must be in [0, 1)")
	case o.SaveEvery < 0 || o.SampleEvery < 0 || o.LogEvery < 0:
		return bad("save_every/sample_every/log_every", [3]int{o.SaveEvery, o.SampleEvery, o.LogEvery}, "must be >= 0")
	}
	return nil
}

// LRAt is the learning rate of (1-based) step: linear warmup over
// WarmupSteps, then constant, cosine or linear decay to 0 at Steps.
func (o Options) LRAt(step int) float64 {
	if step <= o.WarmupSteps {
		return o.LR * float64(step) / float64(max(o.WarmupSteps, 1))
	}
	f := float64(step-o.WarmupSteps) / float64(max(o.Steps-o.WarmupSteps, 1))
	switch o.LRSchedule {
	case "cosine":
		return o.LR * 0.5 * (1 + math.Cos(math.Pi*f))
	case "linear":
		return o.LR * (1 - f)
	}
	return o.LR
}

// Meta is what a checkpoint records about the model besides its weights.
type Meta struct {
	UNetConfig      json.RawMessage // diffusers UNet2DModel config
	DiffusionConfig json.RawMessage // package diffusion's config
	ClassNames      []string
}

// Trainer runs training. Set the fields, then call Run.
type Trainer struct {
	Options   Options
	Net       Network
	Diffusion *diffusion.Diffusion
	Data      data.Dataset
	CPU       *kernels.CPU // runs AdamW and the EMA update
	Meta      Meta
	// Dir receives checkpoint.safetensors and log.jsonl.
	Dir string
	// Progress, if non-nil, receives a progress line every LogEvery steps.
	Progress io.Writer
	// Sample, if non-nil, is called every SampleEvery steps with the EMA
	// weights (to write a sample grid, for example).
	Sample func(ctx context.Context, step int, ema map[string]weights.Tensor) error

	step    int
	rng     *rand.Rand
	pcg     *rand.PCG
	sampler *diffusion.TimestepSampler
	loader  *data.Loader
	ema     [][]float32
	m, v    [][]float32
}

// state is the trainer's part of a checkpoint (weights.MetaTrainState).
type state struct {
	Step    int               `json:"step"`
	RNG     []byte            `json:"rng"`
	Sampler json.RawMessage   `json:"sampler"`
	Loader  *data.LoaderState `json:"loader"`
	Options Options           `json:"options"`
}

// CheckpointPath is where Run writes and resumes its checkpoint.
func (tr *Trainer) CheckpointPath() string { return filepath.Join(tr.Dir, "checkpoint.safetensors") }

func (tr *Trainer) init() error {
	o := tr.Options
	if err := o.Validate(); err != nil {
		return err
	}
	if tr.Net == nil || tr.Diffusion == nil || tr.Data == nil || tr.CPU == nil {
		return errors.New("train: Trainer needs Net, Diffusion, Data and CPU")
	}
	if tr.Options.LabelDropout > 0 && tr.Data.NumClasses() == 0 {
		return fmt.Errorf("train: option label_dropout = %v needs a labelled dataset", o.LabelDropout)
	}
	tr.pcg = rand.NewPCG(o.Seed, 0x7472616e)
	tr.rng = rand.New(tr.pcg)
	var err error
	if o.Timesteps == "uniform" {
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
	ps := tr.Net.Params()
	tr.ema, tr.m, tr.v = make([][]float32, len(ps)), make([][]float32, len(ps)), make([][]float32, len(ps))
	for i, p := range ps {
		tr.ema[i] = append([]float32(nil), p.Value...)
		tr.m[i] = make([]float32, len(p.Value))
		tr.v[i] = make([]float32, len(p.Value))
	}
	return nil
}

// Step is the number of optimiser steps done so far.
func (tr *Trainer) Step() int { return tr.step }

// Run trains until Options.Steps, resuming from Dir's checkpoint when
// resume is true and one exists. It saves a checkpoint every SaveEvery
// steps, at the end and when ctx is cancelled (then it returns ctx's
// error). A NaN or infinite loss stops training with an error and leaves
// the last checkpoint as it was.
func (tr *Trainer) Run(ctx context.Context, resume bool) error {
	if err := tr.init(); err != nil {
		return err
	}
	if err := os.MkdirAll(tr.Dir, 0o755); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if resume {
		if err := tr.load(); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	logf, err := os.OpenFile(filepath.Join(tr.Dir, "log.jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	defer logf.Close()
	o := tr.Options
	logEvery := o.LogEvery
	if logEvery == 0 {
		logEvery = 10
	}
	start, startStep := time.Now(), tr.step
	var sumLoss float64
	var nLoss int
	for tr.step < o.Steps {
		if ctx.Err() != nil {
			if err := tr.save(); err != nil {
				return err
			}
			return ctx.Err()
		}
		loss, gnorm, err := tr.one(ctx)
		if err != nil {
			if ctx.Err() != nil {
				if serr := tr.save(); serr != nil {
					return serr
				}
				return ctx.Err()
			}
			return err
		}
		sumLoss += loss
		nLoss++
		if tr.step%logEvery == 0 || tr.step == o.Steps {
			el := time.Since(start).Seconds()
			its := float64(tr.step-startStep) / el
			rec := map[string]any{"step": tr.step, "loss": sumLoss / float64(nLoss), "lr": o.LRAt(tr.step), "grad_norm": gnorm,
				"epoch": tr.loader.Epoch(), "time": time.Now().UTC().Format(time.RFC3339)}
			b, _ := json.Marshal(rec)
			if _, err := logf.Write(append(b, '\n')); err != nil {
				return fmt.Errorf("train: log: %w", err)
			}
			if tr.Progress != nil {
				eta := time.Duration(float64(o.Steps-tr.step)/its) * time.Second
				fmt.Fprintf(tr.Progress, "step %d/%d  loss %.4f  %.2f it/s  ETA %s\n", tr.step, o.Steps, sumLoss/float64(nLoss), its, eta.Round(time.Second))
			}
			sumLoss, nLoss = 0, 0
		}
		if o.SaveEvery > 0 && tr.step%o.SaveEvery == 0 && tr.step < o.Steps {
			if err := tr.save(); err != nil {
				return err
			}
		}
		if o.SampleEvery > 0 && tr.step%o.SampleEvery == 0 && tr.Sample != nil {
			if err := tr.Sample(ctx, tr.step, tr.emaTensors()); err != nil {
				return fmt.Errorf("train: sample at step %d: %w", tr.step, err)
			}
		}
	}
	return tr.save()
}

// one runs a single optimiser step and returns the loss and the gradient
// norm before clipping.
func (tr *Trainer) one(ctx context.Context) (float64, float64, error) {
	o := tr.Options
	x, y, err := tr.loader.Next(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("train: data: %w", err)
	}
	if tr.Data.NumClasses() == 0 {
		y = nil
	} else {
		for i := range y {
			if o.LabelDropout > 0 && tr.rng.Float64() < o.LabelDropout {
				y[i] = -1
			}
		}
	}
	tb, err := tr.Diffusion.NewTrainingBatch(x, tr.sampler, tr.rng)
	if err != nil {
		return 0, 0, err
	}
	var terms diffusion.LossTerms
	loss, err := tr.Net.Step(ctx, tb.Xt, tb.T, y, tr.rng.Uint64(), tb.LossFunc(tr.Diffusion, &terms))
	if err != nil {
		return 0, 0, err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, 0, fmt.Errorf("train: loss is %v at step %d; stopped, the last checkpoint %s is kept", loss, tr.step+1, tr.CheckpointPath())
	}
	if err := tr.sampler.Update(tb.T, terms.Loss); err != nil {
		return 0, 0, err
	}
	ps := tr.Net.Params()
	var ss float64
	for _, p := range ps {
		ss += float64(tr.CPU.SumSquares(p.Grad, len(p.Grad)))
	}
	gnorm := math.Sqrt(ss)
	if math.IsNaN(gnorm) || math.IsInf(gnorm, 0) {
		return 0, 0, fmt.Errorf("train: gradient norm is %v at step %d; stopped, the last checkpoint %s is kept", gnorm, tr.step+1, tr.CheckpointPath())
	}
	if o.GradClip > 0 && gnorm > o.GradClip {
		s := float32(o.GradClip / gnorm)
		for _, p := range ps {
			tr.CPU.Axpby(p.Grad, 0, p.Grad, s, len(p.Grad))
		}
	}
	tr.step++
	h := kernels.AdamWParams{LR: float32(o.LRAt(tr.step)), Beta1: float32(o.Beta1), Beta2: float32(o.Beta2), Eps: float32(o.AdamEps), WeightDecay: float32(o.WeightDecay)}
	decay := o.EMARate
	if o.EMAWarmup {
		decay = math.Min(decay, float64(1+tr.step)/float64(10+tr.step))
	}
	for i, p := range ps {
		tr.CPU.AdamW(p.Value, tr.m[i], tr.v[i], p.Grad, h, tr.step, len(p.Value))
		tr.CPU.EMA(tr.ema[i], p.Value, float32(decay), len(p.Value))
	}
	if err := tr.CPU.Sync(); err != nil {
		return 0, 0, fmt.Errorf("train: optimiser: %w", err)
	}
	return loss, gnorm, nil
}

func (tr *Trainer) emaTensors() map[string]weights.Tensor { return tr.tensors(tr.ema) }

// tensors names per-parameter buffers (copies) by the parameters' names.
func (tr *Trainer) tensors(bufs [][]float32) map[string]weights.Tensor {
	out := make(map[string]weights.Tensor, len(bufs))
	for i, p := range tr.Net.Params() {
		out[p.Name] = weights.Tensor{Shape: p.Shape, Data: append([]float32(nil), bufs[i]...)}
	}
	return out
}

// save writes the checkpoint atomically: EMA weights as the model, plus
// raw weights, Adam moments and the trainer state.
func (tr *Trainer) save() error {
	ps := tr.Net.Params()
	raw := make([][]float32, len(ps))
	for i, p := range ps {
		raw[i] = p.Value
	}
	rng, err := tr.pcg.MarshalBinary()
	if err != nil {
		return fmt.Errorf("train: rng state: %w", err)
	}
	smp, err := tr.sampler.MarshalState()
	if err != nil {
		return fmt.Errorf("train: sampler state: %w", err)
	}
	ls := tr.loader.State()
	st, err := json.Marshal(state{Step: tr.step, RNG: rng, Sampler: smp, Loader: &ls, Options: tr.Options})
	if err != nil {
		return fmt.Errorf("train: state: %w", err)
	}
	c := &weights.Checkpoint{
		Model: weights.Model{UNetConfig: tr.Meta.UNetConfig, DiffusionConfig: tr.Meta.DiffusionConfig,
			ClassNames: tr.Meta.ClassNames, Tensors: tr.tensors(tr.ema)},
		Raw: tr.tensors(raw), AdamM: tr.tensors(tr.m), AdamV: tr.tensors(tr.v), TrainState: st,
	}
	return weights.WriteCheckpoint(tr.CheckpointPath(), c)
}

// load restores everything save wrote.
func (tr *Trainer) load() error {
	path := tr.CheckpointPath()
	if _, err := os.Stat(path); err != nil {
		return err
	}
	c, err := weights.ReadCheckpoint(path)
	if err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	var st state
	if err := json.Unmarshal(c.TrainState, &st); err != nil {
		return fmt.Errorf("train: resume %s: train state: %w", path, err)
	}
	ps := tr.Net.Params()
	want := make(map[string][]int, len(ps))
	for _, p := range ps {
		want[p.Name] = p.Shape
	}
	for _, set := range []struct {
		name string
		t    map[string]weights.Tensor
	}{{"ema", c.Tensors}, {"raw", c.Raw}, {"adam_m", c.AdamM}, {"adam_v", c.AdamV}} {
		if err := weights.CheckTensors(set.t, want); err != nil {
			return fmt.Errorf("train: resume %s: %s tensors: %w", path, set.name, err)
		}
	}
	for i, p := range ps {
		copy(p.Value, c.Raw[p.Name].Data)
		copy(tr.ema[i], c.Tensors[p.Name].Data)
		copy(tr.m[i], c.AdamM[p.Name].Data)
		copy(tr.v[i], c.AdamV[p.Name].Data)
	}
	if err := tr.pcg.UnmarshalBinary(st.RNG); err != nil {
		return fmt.Errorf("train: resume %s: rng: %w", path, err)
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
	return nil
}
