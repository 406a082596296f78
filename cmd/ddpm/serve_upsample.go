package main

import (
	"context"
	"fmt"
	"image"
	"log/slog"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/server"
	"github.com/ddpm-go/ddpm/weights"
)

// "ddpm serve --upsample FILE": every image the base model makes goes
// through the second stage of the cascade (pipeline.Upsample, 64x64 ->
// 256x256 for GLIDE's base.pt and upsample.pt) before it is answered, with
// the seeds, prompts and class labels "ddpm sample --upsample" gives it, so
// that a request and "ddpm sample" with its settings give the same PNGs.
// Inpainting requests are refused: the base stage would need init_image
// fitted to its own size, which the server does not keep.

// serveUpsampleHelp is "ddpm serve"'s help of --upsample.
const serveUpsampleHelp = "upsample every image with this super-resolution model `path` before answering:\n" +
	"glide-text2im's upsample.pt (64 -> 256, the request's prompt, no guidance) after base.pt, or\n" +
	"guided-diffusion's 64_256_upsampler.pt after a class-conditional 64x64 diffusers model (the\n" +
	"request's class_label); /v1/models then reports the upsampler's size, and inpainting requests\n" +
	"are refused"

// checkServe reports flag errors of the second stage, before any model
// is read.
func (u *upsampleFlags) checkServe(o serveOptions) error {
	if err := u.check("serve"); err != nil {
		return err
	}
	if u.model != "" && o.testFake {
		return usageError{"serve: --upsample and --test-fake-model exclude each other"}
	}
	return nil
}

// upsampleChain is what the server needs to know of an upsampler, read
// from its config alone (a cluster's api replica loads no model).
type upsampleChain struct {
	path    string   // --upsample
	kind    adm.Kind // SuperRes, SuperResText2Im or SuperResInpaintText2Im
	low     int      // the side of the images it takes
	size    int      // the side of the images it makes
	classes int      // class_cond's classes; 0 for none
	steps   int      // the process's T
}

// readUpsampleChain reads the upsampler at path (src) with its process d.
func readUpsampleChain(path string, src *weights.Source, d *diffusion.Diffusion) (upsampleChain, error) {
	c := upsampleChain{path: path, steps: d.T()}
	if !adm.IsConfig(src.UNetConfig) {
		return c, fmt.Errorf("--upsample %s: the model is a diffusers UNet, not a super-resolution model (guided-diffusion's 64_256_upsampler.pt, glide-text2im's upsample.pt)", path)
	}
	cfg, err := adm.ParseArgs(src.UNetConfig)
	if err != nil {
		return c, fmt.Errorf("--upsample %s: %w", path, err)
	}
	switch cfg.Kind {
	case adm.SuperRes, adm.SuperResText2Im, adm.SuperResInpaintText2Im:
	default:
		return c, fmt.Errorf("--upsample %s: the model is guided-diffusion's %s, not a super-resolution model (guided-diffusion's 64_256_upsampler.pt, glide-text2im's upsample.pt)", path, cfg.Kind)
	}
	c.kind, c.size, c.low = cfg.Kind, cfg.ImageSize, cfg.SmallSize
	if c.low == 0 { // as pipeline.Pipeline.LowResSize
		c.low = cfg.ImageSize / 4
	}
	if cfg.ClassCond {
		c.classes = adm.NumClasses
		if cfg.NumClasses > 0 {
			c.classes = cfg.NumClasses
		}
	}
	return c, nil
}

// describe checks that the chain can follow the base model described by
// base with the flags u, at startup, and returns the description of the
// served chain: the upsampler's size, named base+upsampler, not
// inpainting.
func (c upsampleChain) describe(base server.ModelInfo, u upsampleFlags) (server.ModelInfo, error) {
	text := c.kind.IsText()
	switch {
	case base.Channels != 3:
		return base, fmt.Errorf("--upsample %s: the base model makes %d-channel images; the upsamplers take RGB", c.path, base.Channels)
	case base.ImageSize != c.low:
		return base, fmt.Errorf("--upsample %s: the upsampler takes %dx%d images to %dx%d, but the base model makes %dx%d", c.path, c.low, c.low, c.size, c.size, base.ImageSize, base.ImageSize)
	case text && !base.Text:
		return base, fmt.Errorf("--upsample %s: the upsampler is GLIDE's %s, conditioned on text, but the base model is not a GLIDE text model (glide-text2im's base.pt)", c.path, c.kind)
	case !text && base.Text:
		return base, fmt.Errorf("--upsample %s: the base model is GLIDE's, but the upsampler is %s, which takes no text (glide-text2im's upsample.pt follows base.pt)", c.path, c.kind)
	case c.classes > 0 && base.NumClasses == 0:
		return base, fmt.Errorf("--upsample %s: the upsampler is class-conditional (%d classes), but the base model is unconditional: the requests have no class label to give it", c.path, c.classes)
	case c.classes > 0 && base.NumClasses > c.classes:
		return base, fmt.Errorf("--upsample %s: the base model has %d classes, the class-conditional upsampler %d", c.path, base.NumClasses, c.classes)
	case u.steps < 1 || u.steps > c.steps:
		return base, fmt.Errorf("--upsample-steps %d: must be in 1..%d (the upsampler's timesteps)", u.steps, c.steps)
	}
	info := base
	info.Name = base.Name + "+" + modelName(c.path)
	info.ImageSize = c.size
	info.Inpaint = false // see the file comment
	info.UpsampleSteps = u.steps
	return info, info.Check()
}

// upsampleGenerator is a server.Generator that upsamples the base model's
// images: one pipeline.Upsample call per batch, after the base stage.
type upsampleGenerator struct {
	base *server.DiffusionGenerator
	up   *pipeline.Pipeline
	info server.ModelInfo
	o    pipeline.UpsampleOptions // Steps and Temp
}

// wrapServeUpsample opens o's --upsample model and returns base followed
// by it, described by info (base's), and the func that closes the
// upsampler. Every mismatch is an error here, before the server starts.
func wrapServeUpsample(ctx context.Context, o serveOptions, base *server.DiffusionGenerator, info server.ModelInfo, log *slog.Logger) (server.Generator, func(), error) {
	up, err := pipeline.Open(ctx, o.up.model, pipeline.Options{Device: o.device, GPU: cuda.Options{Precision: o.prec},
		Logf: func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) }})
	if err != nil {
		return nil, nil, fmt.Errorf("--upsample: %w", err)
	}
	fail := func(err error) (server.Generator, func(), error) {
		up.Close()
		return nil, nil, err
	}
	c, err := readUpsampleChain(o.up.model, up.Source, up.Diffusion)
	if err != nil {
		return fail(err)
	}
	ui, err := c.describe(info, o.up)
	if err != nil {
		return fail(err)
	}
	g := &upsampleGenerator{base: base, up: up, info: ui, o: pipeline.UpsampleOptions{Steps: o.up.steps, Temp: o.up.temp}}
	// The checks pipeline.Upsample will make, on one image.
	probe := g.o
	if up.IsText() {
		probe.Prompts = []string{""}
	}
	if up.Classes() > 0 {
		probe.Labels = []int{0}
	}
	if err := pipeline.CheckUpsample(up, 1, info.ImageSize, probe); err != nil {
		return fail(fmt.Errorf("--upsample %s: %w", o.up.model, err))
	}
	log.Info("upsampler loaded", "upsample", o.up.model, "kind", string(c.kind), "from", c.low, "to", c.size, "steps", o.up.steps, "device", up.Device)
	return g, up.Close, nil
}

// serveUpsampleInfo is serveModelInfo's description of base followed by
// o's --upsample model, read without loading it.
func serveUpsampleInfo(ctx context.Context, o serveOptions, base server.ModelInfo, log *slog.Logger) (server.ModelInfo, error) {
	src, err := pipeline.OpenSource(ctx, o.up.model, func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) })
	if err != nil {
		return base, fmt.Errorf("--upsample: %w", err)
	}
	d, err := pipeline.DiffusionFor(src)
	if err != nil {
		return base, fmt.Errorf("--upsample %s: %w", o.up.model, err)
	}
	c, err := readUpsampleChain(o.up.model, src, d)
	if err != nil {
		return base, err
	}
	return c.describe(base, o.up)
}

// Info implements server.Generator.
func (g *upsampleGenerator) Info() server.ModelInfo { return g.info }

// Generate implements server.Generator: the base model's samples of the
// items (server.DiffusionGenerator.Samples, at full precision) go through
// pipeline.Upsample as one batch, item i with the seed upsampleSeed(its
// seed), its prompt (GLIDE) or class label, as "ddpm sample --upsample"
// passes image i's. Progress counts the base stage's steps, then the
// upsampler's (info.UpsampleSteps).
func (g *upsampleGenerator) Generate(ctx context.Context, s server.Settings, items []server.Item, progress func(step, total int)) ([]image.Image, error) {
	for i, it := range items {
		if it.Known != nil {
			return nil, fmt.Errorf("generate: item %d inpaints: the server upsamples (--upsample), which does not inpaint", i)
		}
	}
	total := s.Steps + g.info.UpsampleSteps // the base stage's steps, then the upsampler's
	report := func(step int) {
		if progress != nil {
			progress(min(step, total), total)
		}
	}
	xs, err := g.base.Samples(ctx, s, items, func(step, _ int) { report(step) }) // steps 1..s.Steps
	if err != nil {
		return nil, err
	}
	var live []int // the items still wanted, in order
	for i, x := range xs {
		if x != nil {
			live = append(live, i)
		}
	}
	out := make([]image.Image, len(items))
	if len(live) == 0 {
		return out, nil
	}
	x0 := xs[live[0]]
	low := diffusion.NewBatch(len(live), x0.C, x0.H, x0.W) // (N, 3, h, h)
	per := x0.C * x0.H * x0.W
	o := g.o
	for j, i := range live {
		copy(low.Data[j*per:(j+1)*per], xs[i].Data)
		o.Seeds = append(o.Seeds, upsampleSeed(uint64(items[i].Seed)))
		if g.info.Text {
			o.Prompts = append(o.Prompts, items[i].Prompt)
		}
		if g.up.Classes() > 0 {
			o.Labels = append(o.Labels, items[i].Class)
		}
	}
	o.Seed = o.Seeds[0] // unused: every image has its seed
	o.Progress = func(p diffusion.Progress) { report(s.Steps + p.Of(g.info.UpsampleSteps)) }
	hi, err := pipeline.Upsample(ctx, g.up, low, o)
	if err != nil {
		return nil, fmt.Errorf("generate: upsample: %w", err)
	}
	imgs, err := img.ToImages(hi)
	if err != nil {
		return nil, fmt.Errorf("generate: upsample: %w", err)
	}
	for j, i := range live {
		out[i] = imgs[j]
	}
	return out, nil
}
