// Package pipeline opens a model for generation: the weights from any
// source (a diffusers folder or pipeline, a ddpm model file or checkpoint,
// a Hugging Face Hub id, the embedded default model), the UNet built on
// the device --device names (the CPU, or a GPU through package cuda), and
// the diffusion process that came with the weights. It is what the CLI's
// sample, eval, predict and bench commands and the server share.
package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/unet"
	"github.com/ddpm-go/ddpm/weights"
)

// Options configure Open.
type Options struct {
	// Device is "auto" (a GPU when a driver, a device and cuBLAS are
	// present, else the CPU), "cpu", "cuda" or "cuda:N"; empty means auto.
	Device string
	// CPU configures the CPU backend (Open sets ConstWeights: the weights
	// never change while sampling). BF16 runs its convolutions in bf16.
	CPU kernels.CPUOptions
	// GPU configures the GPU backend. Its Precision is the --precision
	// flag for either device: on the CPU, "bf16" sets CPU.BF16 and "fp16"
	// is an error (cuda.CPUPrecision).
	GPU cuda.Options
	// NoGraphs turns off CUDA graphs on the GPU. By default the model runs
	// through cuda.GraphOps, which replays each repeated forward pass (one
	// per sampling step) as one CUDA graph launch instead of hundreds of
	// kernel launches, with bit-identical results.
	NoGraphs bool
	// Logf, if set, receives the one line saying which device runs and
	// download progress of Hub models.
	Logf func(format string, args ...any)
}

// Pipeline is an opened model: its weights' source, the UNet on a device,
// and the diffusion process to sample with.
type Pipeline struct {
	// Source is where the weights came from, with their configs and class names.
	Source *weights.Source
	// Config is the UNet's configuration.
	Config unet.Config
	// Diffusion is the process of the weights (see DiffusionFor).
	Diffusion *diffusion.Diffusion
	// Scheduler is the source's diffusers scheduler config (a pipeline
	// folder's scheduler/scheduler_config.json, or the one a model file
	// keeps from its conversion), parsed and checked; nil when the source
	// has none. Samplers use it by default (diffusion.Options.Scheduler),
	// so a diffusers pipeline samples with the scheduler it names.
	Scheduler *diffusion.SchedulerConfig
	// Model is the UNet on the device.
	Model diffusion.Model
	// Device names the backend running the UNet, e.g. "cpu (dnnl, dnnl
	// conv, 2 threads)".
	Device string
	// OpenAI is the guided-diffusion network (package adm) when the model
	// is one, else nil; see openai.go.
	OpenAI OpenAIModel

	close func()
}

// Open loads source (weights.DefaultPath or "" for the embedded model) and
// builds its UNet on o.Device. Call Close when done.
func Open(ctx context.Context, source string, o Options) (*Pipeline, error) {
	if _, err := cuda.ParseDevice(deviceOr(o.Device)); err != nil {
		return nil, err
	}
	src, err := OpenSource(ctx, source, o.Logf)
	if err != nil {
		return nil, err
	}
	d, err := DiffusionFor(src)
	if err != nil {
		return nil, err
	}
	sched, err := SchedulerFor(src)
	if err != nil {
		return nil, err
	}
	cpuOpts := o.CPU
	cpuOpts.ConstWeights = true
	be, err := cuda.Select(deviceOr(o.Device), cuda.SelectOptions{CPU: cpuOpts, GPU: o.GPU, Logf: o.Logf})
	if err != nil {
		return nil, err
	}
	p := &Pipeline{Source: src, Diffusion: d, Scheduler: sched, Device: be.Name()}
	if isOpenAIModel(src) {
		return openOpenAI(p, src, be)
	}
	if be.GPU != nil {
		var ops kernels.Ops[cuda.Ptr] = be.GPU
		if !o.NoGraphs {
			g := cuda.NewGraphOps(be.GPU)
			ops, p.Device = g, g.Name()
		}
		m, err := unet.FromSourceOn[cuda.Ptr](src, ops)
		if err != nil {
			be.GPU.Close()
			return nil, fmt.Errorf("model %s: %w", src.Path, err)
		}
		p.Model, p.Config = m, m.Config()
		p.close = func() { m.Close(); be.GPU.Close() }
		return p, nil
	}
	m, err := unet.FromSource(src, be.CPU)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", src.Path, err)
	}
	p.Model, p.Config, p.close = m, m.Config(), m.Close
	return p, nil
}

func deviceOr(d string) string {
	if d == "" {
		return "auto"
	}
	return d
}

// Close releases the model's device memory (and the GPU).
func (p *Pipeline) Close() {
	if p.close != nil {
		p.close()
		p.close = nil
	}
}

// Classes is the number of real classes of a class-conditional model (its
// class embeddings less the null class used for guidance), 0 when it is
// unconditional.
func (p *Pipeline) Classes() int { return Classes(p.Config) }

// Classes is Pipeline.Classes for a UNet config.
func Classes(c unet.Config) int {
	if c.NumClassEmbeds == nil {
		return 0
	}
	if c.NullClass != nil {
		return *c.NumClassEmbeds - 1
	}
	return *c.NumClassEmbeds
}

// OpenSource opens a model source: "" or weights.DefaultPath is the
// embedded default model; an existing path is read from disk; a Hugging
// Face Hub id (org/name[@revision]) resolves through the Hub cache,
// downloading what is missing (progress to logf), cancellable with ctx.
func OpenSource(ctx context.Context, path string, logf func(format string, args ...any)) (*weights.Source, error) {
	if path == "" || path == weights.DefaultPath {
		return weights.OpenDefault()
	}
	if _, err := os.Stat(path); err != nil && weights.IsHubID(path) {
		var ho weights.HubOptions
		if logf != nil {
			ho.Progress = func(p weights.HubProgress) {
				if p.Done == p.Total {
					logf("downloaded %s (%d bytes)", p.File, p.Total)
				}
			}
		}
		return weights.OpenHub(ctx, path, ho)
	}
	if isOpenAISource(path) {
		return openOpenAISource(path)
	}
	return weights.Open(path)
}

// SchedulerFor parses src's diffusers scheduler config; nil (and no
// error) when it has none. An unknown _class_name or a key outside its
// allowed values is an error naming the model and the key.
func SchedulerFor(src *weights.Source) (*diffusion.SchedulerConfig, error) {
	if len(src.SchedulerConfig) == 0 {
		return nil, nil
	}
	sc, err := diffusion.ParseSchedulerConfig(src.SchedulerConfig)
	if err != nil {
		return nil, fmt.Errorf("model %s: scheduler_config.json: %w", src.Path, err)
	}
	return &sc, nil
}

// DiffusionFor builds the diffusion process of src: its ddpm diffusion
// config, else its diffusers scheduler config (of any scheduler class:
// its training schedule, prediction, variance and clipping, as
// diffusion.FromDiffusers reads them), else Ho et al. 2020's defaults
// (linear betas, T = 1000, epsilon, fixed small variance).
func DiffusionFor(src *weights.Source) (*diffusion.Diffusion, error) {
	cfg := diffusion.DefaultConfig()
	switch {
	case len(src.DiffusionConfig) > 0:
		if err := json.Unmarshal(src.DiffusionConfig, &cfg); err != nil {
			return nil, fmt.Errorf("model %s: diffusion config: %w", src.Path, err)
		}
	case len(src.SchedulerConfig) > 0:
		sc, err := SchedulerFor(src)
		if err != nil {
			return nil, err
		}
		// The parsed config again as plain JSON: Python's -Infinity
		// (lambda_min_clipped, a sampling key) is not JSON, and
		// FromDiffusers reads only the training keys.
		sc.LambdaMinClipped = nil
		data, err := json.Marshal(sc)
		if err != nil {
			return nil, fmt.Errorf("model %s: scheduler_config.json: %w", src.Path, err)
		}
		c, _, err := diffusion.FromDiffusers(data)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", src.Path, err)
		}
		cfg = c
	}
	d, err := diffusion.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", src.Path, err)
	}
	return d, nil
}
