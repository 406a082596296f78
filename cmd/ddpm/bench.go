package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/nn"
	"github.com/ddpm-go/ddpm/pipeline"
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
	// GPU: --precision, --no-graphs; --sample-steps times a whole DDIM run.
	Precision   string
	NoGraphs    bool
	SampleSteps int
	// Profile prints the forward pass's time per kind of op (one extra
	// run that waits for the device after every op) to stderr.
	Profile bool
}

// benchResult is the one JSON line `ddpm bench --json` prints.
type benchResult struct {
	Device          string  `json:"device"`
	Model           string  `json:"model"`
	Batch           int     `json:"batch"`
	Params          int     `json:"params"`
	ForwardMSMedian float64 `json:"forward_ms_median"`
	ImagesPerSec    float64 `json:"images_per_sec"`
	// ForwardCPUMSMedian is the process's CPU time (user and system, all
	// threads) per timed forward, median: the work a forward costs, which
	// other load on a shared host disturbs far less than the wall time.
	ForwardCPUMSMedian float64 `json:"forward_cpu_ms_median,omitempty"`
	TrainStepMSMedian  float64 `json:"train_step_ms_median,omitempty"`
	TrainImagesPerSec  float64 `json:"train_images_per_sec,omitempty"`
	Iters              int     `json:"iters"`
	Warmup             int     `json:"warmup"`
	TrainStepIncludes  string  `json:"train_step_includes,omitempty"`
	ConstWeights       bool    `json:"const_weights"`          // forward timed with kernels.CPUOptions.ConstWeights
	Precision          string  `json:"precision,omitempty"`    // arithmetic of the GEMMs and convolutions (--precision)
	Graphs             bool    `json:"graphs,omitempty"`       // GPU forward through cuda.GraphOps
	SampleSteps        int     `json:"sample_steps,omitempty"` // --sample-steps: DDIM steps of the timed sampling run
	SampleMS           float64 `json:"sample_ms,omitempty"`    // one sampling run of the batch
	SampleImagesPerS   float64 `json:"sample_images_per_sec,omitempty"`
	// SampleOutsideModel is the share of the sampling run's time spent
	// outside the UNet's Predict calls (the sampler's own arithmetic), in
	// percent.
	SampleOutsideModel float64 `json:"sample_outside_model_pct,omitempty"`
	GraphStats         string  `json:"graph_stats,omitempty"` // cuda.GraphStats after the runs
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
	fs.StringVar(&o.Device, "device", "auto", "auto, cpu or cuda[:N]")
	fs.StringVar(&o.Precision, "precision", "", precisionHelp)
	fs.BoolVar(&o.NoGraphs, "no-graphs", false, "GPU: queue every kernel of the forward pass (default: replay it as a CUDA graph)")
	fs.BoolVar(&o.Profile, "profile", false, "also print the forward pass's time per kind of op to stderr (one more run, waiting after every op)")
	fs.IntVar(&o.SampleSteps, "sample-steps", 0, "also time one DDIM sampling run of the batch with this many steps (after a 3-step warm-up run)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkPrecision(o.Precision); err != nil {
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
	case o.SampleSteps < 0:
		return usageError{fmt.Sprintf("bench: --sample-steps %d: must be >= 0", o.SampleSteps)}
	}
	return bench(ctx, o, stdout, stderr)
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

func bench(ctx context.Context, o benchOptions, stdout, stderr io.Writer) error {
	// Without --train the weights never change: let oneDNN cache its
	// reordered convolution weights, as sampling and serving do.
	be, err := cuda.Select(o.Device, cuda.SelectOptions{CPU: kernels.CPUOptions{ConstWeights: !o.Train},
		GPU: cuda.Options{Precision: o.Precision}})
	if err != nil {
		return err
	}
	if be.GPU != nil {
		defer be.GPU.Close()
		if o.NoGraphs {
			return benchOn[cuda.Ptr](ctx, be.GPU, o, stdout, stderr)
		}
		return benchOn[cuda.Ptr](ctx, cuda.NewGraphOps(be.GPU), o, stdout, stderr)
	}
	return benchOn[[]float32](ctx, be.CPU, o, stdout, stderr)
}

// benchOn times the UNet on one backend.
func benchOn[B any](ctx context.Context, ops kernels.Ops[B], o benchOptions, stdout, stderr io.Writer) error {
	var m *unet.Net[B]
	name := o.Model
	if o.Preset != "" {
		cfg, err := unet.Preset(o.Preset)
		if err != nil {
			return usageError{fmt.Sprintf("bench: --preset: %v", err)}
		}
		if m, err = unet.NewOn[B](cfg, ops, 1); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		name = "preset:" + o.Preset
	} else {
		src, err := pipeline.OpenSource(ctx, o.Model, nil)
		if err != nil {
			return fmt.Errorf("bench: --model: %w", err)
		}
		if m, err = unet.FromSourceOn[B](src, ops); err != nil {
			return fmt.Errorf("bench: --model: %w", err)
		}
	}
	defer m.Close()
	cfg := m.Config()
	r := rand.New(rand.NewPCG(1, 2))
	x := diffusion.NewBatch(o.Batch, cfg.InChannels, cfg.SampleSize, cfg.SampleSize)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	ts := make([]float64, o.Batch)
	var ys []int
	if cfg.NumClassEmbeds != nil {
		ys = make([]int, o.Batch)
	}
	for i := range ts {
		ts[i] = float64(r.IntN(1000))
		if ys != nil {
			ys[i] = r.IntN(*cfg.NumClassEmbeds)
			if cfg.NullClass != nil && ys[i] == *cfg.NullClass {
				ys[i] = -1
			}
		}
	}
	res := benchResult{Device: ops.Name(), Model: name, Batch: o.Batch, Params: m.NumParams(), Iters: o.Iters, Warmup: o.Warmup, ConstWeights: !o.Train}
	times := make([]time.Duration, 0, o.Iters)
	cpuTimes := make([]time.Duration, 0, o.Iters)
	for i := 0; i < o.Warmup+o.Iters; i++ {
		cpu0, cpuOK := processCPUTime()
		start := time.Now()
		if _, err := m.Predict(ctx, x, ts, ys); err != nil {
			return fmt.Errorf("bench: forward: %w", err)
		}
		if i >= o.Warmup {
			times = append(times, time.Since(start))
			if cpu1, ok := processCPUTime(); ok && cpuOK {
				cpuTimes = append(cpuTimes, cpu1-cpu0)
			}
		}
	}
	res.ForwardMSMedian = medianMS(times)
	if len(cpuTimes) == len(times) {
		res.ForwardCPUMSMedian = medianMS(cpuTimes)
	}
	res.ImagesPerSec = float64(o.Batch) / (res.ForwardMSMedian / 1000)
	switch g := any(ops).(type) {
	case interface{ Precision() cuda.Precision }:
		res.Precision = g.Precision().String()
	case *kernels.CPU:
		res.Precision = "fp32"
		if g.BF16() {
			res.Precision = "bf16"
		}
	}
	if o.Profile {
		if err := benchProfile(ctx, m, x, ts, ys, stderr); err != nil {
			return err
		}
	}
	if o.SampleSteps > 0 {
		if err := benchSample(ctx, m, x, ys, o, &res); err != nil {
			return err
		}
	}
	if o.Train {
		if err := benchTrain(ctx, m, x, ts, ys, o, &res); err != nil {
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
	fmt.Fprintf(stdout, "%s on %s, batch %d: forward %.1f ms (%.1f images/s", name, res.Device, o.Batch, res.ForwardMSMedian, res.ImagesPerSec)
	if res.ForwardCPUMSMedian > 0 {
		fmt.Fprintf(stdout, "; %.1f ms of CPU time", res.ForwardCPUMSMedian)
	}
	fmt.Fprint(stdout, ")")
	if o.SampleSteps > 0 {
		fmt.Fprintf(stdout, ", sampling %d DDIM steps %.1f ms (%.1f images/s, %.2f%% outside the UNet)", o.SampleSteps, res.SampleMS, res.SampleImagesPerS, res.SampleOutsideModel)
	}
	if o.Train {
		fmt.Fprintf(stdout, ", train step %.1f ms (%.1f images/s)", res.TrainStepMSMedian, res.TrainImagesPerSec)
	}
	fmt.Fprintln(stdout)
	return nil
}

// benchTrain times training steps as train.Trainer runs them, all on the
// device: forward, L_simple against a fixed target, backward, the
// gradient norm with clipping, and one AdamW update of the flat
// parameters; it waits for the device at the end of each step.
func benchTrain[B any](ctx context.Context, m *unet.Net[B], x diffusion.Batch, ts []float64, ys []int, o benchOptions, res *benchResult) error {
	D := m.Config().OutChannels * x.H * x.W
	target := make([]float32, x.N*D)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range target {
		target[i] = float32(r.NormFloat64())
	}
	in, err := m.Inputs(x, ts, ys)
	if err != nil {
		return err
	}
	coefs := make([]diffusion.LossCoefs, x.N)
	for i := range coefs {
		coefs[i] = diffusion.LossCoefs{TargetNoise: 1, MSE: 1}
	}
	ti := nn.TrainInputs{Net: in, Loss: kernels.DiffusionLossDims{N: x.N, D: D}, X0: make([]float32, len(target)),
		Noise: target, Coef: nn.LossCoefRows(coefs, nil)}
	e := m.Engine()
	ops := e.Ops()
	n := e.NumParams()
	mom, vel, norm := ops.Alloc(n), ops.Alloc(n), ops.Alloc(1)
	defer func() { ops.Free(mom); ops.Free(vel); ops.Free(norm) }()
	h := kernels.AdamWParams{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0}
	times := make([]time.Duration, 0, o.Iters)
	for i := 0; i < o.Warmup+o.Iters; i++ {
		start := time.Now()
		ti.State.Seed = uint64(i)
		if err := e.TrainStep(ctx, unet.Key(x), ti); err != nil {
			return fmt.Errorf("bench: train step: %w", err)
		}
		grads, _ := e.GradBuffer()
		ops.Norm(norm, grads, n)
		ops.ClipToNorm(grads, norm, 1, n)
		ops.AdamW(e.ParamBuffer(), mom, vel, grads, h, i+1, n)
		if err := ops.Sync(); err != nil {
			return fmt.Errorf("bench: train step: %w", err)
		}
		if i >= o.Warmup {
			times = append(times, time.Since(start))
		}
	}
	res.TrainStepMSMedian = medianMS(times)
	res.TrainImagesPerSec = float64(x.N) / (res.TrainStepMSMedian / 1000)
	res.TrainStepIncludes = "forward+mse+backward+clip+adamw"
	return nil
}

// benchSample times one DDIM sampling run of o.SampleSteps steps of the
// batch (the sampler's host work included, as ddpm sample runs it),
// after a 3-step warm-up run that builds the graph, finds the cuDNN
// algorithms and, through cuda.GraphOps, captures the forward pass.
func benchSample[B any](ctx context.Context, m *unet.Net[B], x diffusion.Batch, ys []int, o benchOptions, res *benchResult) error {
	d, err := diffusion.New(diffusion.DefaultConfig())
	if err != nil {
		return err
	}
	so := diffusion.Options{Sampler: diffusion.SamplerDDIM, Seed: 1, N: x.N, C: x.C, H: x.H, W: x.W, Labels: ys}
	so.Steps = 3
	if _, err := d.Sample(ctx, m, so); err != nil {
		return fmt.Errorf("bench: sampling warm-up: %w", err)
	}
	so.Steps = o.SampleSteps
	tm := &timedModel{m: m}
	start := time.Now()
	if _, err := d.Sample(ctx, tm, so); err != nil {
		return fmt.Errorf("bench: sampling: %w", err)
	}
	el := time.Since(start)
	res.SampleSteps = o.SampleSteps
	res.SampleMS = float64(el) / float64(time.Millisecond)
	res.SampleOutsideModel = 100 * float64(el-tm.in) / float64(el)
	res.SampleImagesPerS = float64(x.N) / el.Seconds()
	if g, ok := any(m.Engine().Ops()).(*cuda.GraphOps); ok {
		res.Graphs = true
		res.GraphStats = fmt.Sprintf("%+v", g.Stats())
	}
	return nil
}

// benchProfile prints one profiled forward pass: the time per kind of op,
// largest first, with its share of the total.
func benchProfile[B any](ctx context.Context, m *unet.Net[B], x diffusion.Batch, ts []float64, ys []int, w io.Writer) error {
	in, err := m.Inputs(x, ts, ys)
	if err != nil {
		return fmt.Errorf("bench: profile: %w", err)
	}
	prof, err := m.Engine().ProfileForward(ctx, unet.Key(x), in)
	if err != nil {
		return fmt.Errorf("bench: profile: %w", err)
	}
	var total time.Duration
	for _, p := range prof {
		total += p.Time
	}
	fmt.Fprintf(w, "forward profile, batch %d: %.1f ms in all\n", x.N, float64(total)/float64(time.Millisecond))
	for _, p := range prof {
		fmt.Fprintf(w, "%-24s %4d nodes %9.2f ms %5.1f%%\n", p.Op, p.Count, float64(p.Time)/float64(time.Millisecond), 100*float64(p.Time)/float64(total))
	}
	return nil
}

// timedModel adds up the time its model's Predict calls take.
type timedModel struct {
	m  diffusion.Model
	in time.Duration
}

// Predict calls the model and adds the call's time.
func (t *timedModel) Predict(ctx context.Context, x diffusion.Batch, ts []float64, y []int) (diffusion.Batch, error) {
	start := time.Now()
	out, err := t.m.Predict(ctx, x, ts, y)
	t.in += time.Since(start)
	return out, err
}
