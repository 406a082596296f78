package server

import (
	"context"
	"errors"
	"fmt"
	"image"
	"runtime/debug"
	"sync"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
)

// DiffusionGenerator is the Generator of a real model: it samples with
// package diffusion (DDPM ancestral sampling, Ho et al. 2020, Algorithm 2;
// DDIM, Song et al. 2021, Eq. 12; classifier-free guidance, Ho & Salimans
// 2022) and batches the images of one Generate call into one model call per
// denoising step.
//
// Each image runs its own diffusion.Sample with its own seed, so an image
// depends only on its seed, class (or prompt) and settings, never on the other images
// of its batch; the runs meet at every step in a shared model wrapper that
// concatenates their inputs into one (N, C, H, W) batch, calls the model
// once and hands each run its rows. A run whose Item is cancelled stops at
// its next step and leaves the group; the others go on in a smaller batch.
//
// Items with a known image (Item.Known, from a request's init_image and
// mask) inpaint: the sampler keeps the known region (diffusion.Options
// Image and Mask: RePaint with ddpm, replacement after each step with the
// other samplers), or, on a GLIDE inpainting model (SetTextInpaint), the
// model does, as "ddpm sample" inpaints.
type DiffusionGenerator struct {
	model diffusion.Model
	diff  *diffusion.Diffusion
	info  ModelInfo
	guide func(scale float64, labels []int) *diffusion.ClassifierGuidance
	text  func(prompts []string) (diffusion.Model, error)
	// textInpaint binds a GLIDE inpainting model to prompts and a known
	// image (SetTextInpaint); nil for the other models.
	textInpaint func(prompts []string, k *Known) (diffusion.Model, func(x diffusion.Batch) error, error)
}

// SetText makes the generator serve a text-to-image model (GLIDE):
// bind returns the model conditioned on prompts, one per image, whose
// Predict takes label i for prompt i and -1 for the empty prompt
// (pipeline.Pipeline.WithPrompts with n = len(prompts)). Each Generate
// binds its items' prompts once; image i samples with label i, so
// classifier-free guidance (Settings.Guidance) is against the empty
// prompt. The model must have no classes. Call it before the server
// starts.
func (g *DiffusionGenerator) SetText(bind func(prompts []string) (diffusion.Model, error)) error {
	if bind == nil {
		return errors.New("server: SetText: nil bind")
	}
	if g.info.NumClasses != 0 || g.guide != nil {
		return fmt.Errorf("server: SetText: the model %q has classes or a classifier; a text model has neither", g.info.Name)
	}
	g.info.Text, g.text = true, bind
	return nil
}

// SetTextInpaint makes a text model (SetText first) a GLIDE inpainting
// model (glide-text2im's base_inpaint.pt): the items of a batch with a
// known image (Item.Known, one per batch) are sampled with the model that
// bind returns for their prompts and k, which keeps the known region in
// its own x_0 estimate; keep then sets the known region of each (1, C, H,
// W) sample exactly (pipeline.Pipeline.WithPrompts with
// pipeline.TextInputs{InpaintImage, InpaintMask}, and its KeepKnown, as
// "ddpm sample" does). The sampler then keeps nothing itself. Without it
// a text model inpaints in the sampler, as every other model does. Call
// it before the server starts.
func (g *DiffusionGenerator) SetTextInpaint(bind func(prompts []string, k *Known) (model diffusion.Model, keep func(x diffusion.Batch) error, err error)) error {
	if bind == nil {
		return errors.New("server: SetTextInpaint: nil bind")
	}
	if g.text == nil {
		return fmt.Errorf("server: SetTextInpaint: the model %q is not a text model (SetText first)", g.info.Name)
	}
	g.textInpaint = bind
	return nil
}

// SetClassifier lets requests with classifier_scale be guided by a noisy
// classifier named name: guide returns the sampler option for a scale
// and labels (pipeline.Classifier.Guidance). The model must be
// class-conditional: each image is guided towards its class. Call it
// before the server starts.
func (g *DiffusionGenerator) SetClassifier(name string, guide func(scale float64, labels []int) *diffusion.ClassifierGuidance) error {
	if g.info.NumClasses == 0 || g.info.Text {
		return fmt.Errorf("server: classifier guidance: the model %q is unconditional (requests name classes only on class-conditional models)", g.info.Name)
	}
	if name == "" || guide == nil {
		return errors.New("server: SetClassifier: empty name or nil guide")
	}
	g.info.Classifier, g.guide = name, guide
	return nil
}

// NewDiffusionGenerator wraps model, sampled with the process d, as a
// Generator described by info. info.TrainSteps is set to d.T(); the other
// fields are checked as ModelInfo.Check does.
func NewDiffusionGenerator(model diffusion.Model, d *diffusion.Diffusion, info ModelInfo) (*DiffusionGenerator, error) {
	if model == nil || d == nil {
		return nil, errors.New("server: NewDiffusionGenerator: nil model or diffusion")
	}
	if info.Text {
		return nil, errors.New("server: NewDiffusionGenerator: info.Text: make a text model with SetText")
	}
	info, err := DiffusionInfo(d, info)
	if err != nil {
		return nil, err
	}
	return &DiffusionGenerator{model: model, diff: d, info: info}, nil
}

// DiffusionInfo completes info for a model sampled with the process d as
// NewDiffusionGenerator does (TrainSteps is d.T(); DefaultSampler and
// DefaultSteps, when unset, from d.DefaultSampling: ddpm at 100 steps for a
// model that learned its variance, else ddim at 50; Inpaint true) and
// checks it. A cluster's api replica, which runs no model, describes it
// with this.
func DiffusionInfo(d *diffusion.Diffusion, info ModelInfo) (ModelInfo, error) {
	if d == nil {
		return info, errors.New("server: DiffusionInfo: nil diffusion")
	}
	info.TrainSteps = d.T()
	info.Inpaint = true // diffusion.Options.Image and Mask, on every model
	sampler, steps := d.DefaultSampling()
	if info.DefaultSteps == 0 {
		info.DefaultSteps = steps
	}
	if info.DefaultSampler == "" {
		info.DefaultSampler = sampler.String()
	}
	if err := info.Check(); err != nil {
		return info, err
	}
	return info, nil
}

// Info implements Generator.
func (g *DiffusionGenerator) Info() ModelInfo { return g.info }

// Generate implements Generator.
func (g *DiffusionGenerator) Generate(ctx context.Context, s Settings, items []Item, progress func(step, total int)) ([]image.Image, error) {
	xs, err := g.Samples(ctx, s, items, progress)
	if err != nil {
		return nil, err
	}
	out := make([]image.Image, len(items))
	for i, x := range xs {
		if x == nil {
			continue
		}
		imgs, err := img.ToImages(*x)
		if err != nil {
			return nil, fmt.Errorf("generate image %d (seed %d): %w", i, items[i].Seed, err)
		}
		out[i] = imgs[0]
	}
	return out, nil
}

// Samples is Generate before the conversion to images: item i's final
// sample (1, C, H, W) in [-1, 1] as the sampler returns it, nil for an
// item whose Done closed. A later stage (ddpm serve --upsample) takes
// them at full precision, as "ddpm sample" passes its samples on.
func (g *DiffusionGenerator) Samples(ctx context.Context, s Settings, items []Item, progress func(step, total int)) ([]*diffusion.Batch, error) {
	model := g.model
	var known *Known
	if len(items) > 0 {
		known = items[0].Known
	}
	for i, it := range items {
		if it.Known != known && (it.Known == nil || known == nil || it.Known.Key != known.Key) {
			return nil, fmt.Errorf("generate: item %d has another known image than item 0: a batch shares one (Settings.Inpaint)", i)
		}
	}
	if known != nil && (known.Image.N != 1 || known.Image.C != g.info.Channels || known.Image.H != g.info.ImageSize || known.Image.W != g.info.ImageSize) {
		return nil, fmt.Errorf("generate: known image (%d, %d, %d, %d), want (1, %d, %d, %d)", known.Image.N, known.Image.C, known.Image.H, known.Image.W,
			g.info.Channels, g.info.ImageSize, g.info.ImageSize)
	}
	// keep, for a GLIDE inpainting model, sets each sample's known region;
	// otherwise the sampler keeps it (sampleKnown).
	var keep func(x diffusion.Batch) error
	sampleKnown := known
	if g.text != nil {
		prompts := make([]string, len(items))
		for i, it := range items {
			prompts[i] = it.Prompt
		}
		var m diffusion.Model
		var err error
		if known != nil && g.textInpaint != nil {
			m, keep, err = g.textInpaint(prompts, known)
			sampleKnown = nil
		} else {
			m, err = g.text(prompts)
		}
		if err != nil {
			return nil, fmt.Errorf("generate: binding the prompts: %w", err)
		}
		model = m
	}
	gr := &group{inner: model, ctx: ctx, members: len(items)}
	// progress counts the request's steps, not the sampler's model calls.
	var progMu sync.Mutex
	best := 0
	report := func(p diffusion.Progress) {
		progMu.Lock()
		defer progMu.Unlock()
		step := p.Of(s.Steps)
		if step > best {
			best = step
			if progress != nil {
				progress(step, s.Steps)
			}
		}
	}
	out := make([]*diffusion.Batch, len(items))
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		ictx, cancel := context.WithCancel(ctx)
		if it.Done != nil {
			go func() { // ends when the run ends (cancel) or the item is dropped
				select {
				case <-it.Done:
					cancel()
				case <-ictx.Done():
				}
			}()
		}
		o := diffusion.Options{Sampler: s.Sampler, Steps: s.Steps, Eta: s.Eta, Seed: uint64(it.Seed),
			N: 1, C: g.info.Channels, H: g.info.ImageSize, W: g.info.ImageSize, Progress: report}
		if sampleKnown != nil { // RePaint with ddpm, replacement after each step with the others
			o.Image, o.Mask = &sampleKnown.Image, &sampleKnown.Mask
		}
		if g.text != nil {
			o.Labels = []int{i} // the bound model's prompt i; -1 is the empty prompt
			o.Guidance = s.Guidance
		} else if g.info.NumClasses > 0 {
			o.Labels = []int{it.Class}
			o.Guidance = s.Guidance
			if s.ClassifierScale != 0 && g.guide != nil {
				o.Classifier = g.guide(s.ClassifierScale, nil)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			defer gr.leave()
			defer func() {
				if r := recover(); r != nil {
					errs[i] = fmt.Errorf("sampling image %d panicked: %v\n%s", i, r, debug.Stack())
				}
			}()
			x, err := g.diff.Sample(ictx, gr, o)
			if err == nil && keep != nil {
				err = keep(x)
			}
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = &x
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("generate: %w", context.Cause(ctx))
	}
	for i, err := range errs {
		if err != nil && !items[i].dead() {
			return nil, fmt.Errorf("generate image %d (seed %d): %w", i, items[i].Seed, err)
		}
		if items[i].dead() {
			out[i] = nil
		}
	}
	return out, nil
}

// group is the diffusion.Model the runs of one Generate call share: each
// Predict call waits until every run still in the group has called, then
// the last caller runs the inner model once on the concatenated batch.
type group struct {
	inner diffusion.Model
	ctx   context.Context // the batch's context (not a run's)

	mu      sync.Mutex
	members int     // runs still sampling
	pending []*call // calls of the current step
}

// call is one run's Predict of the current step.
type call struct {
	x    diffusion.Batch
	t    []float64
	y    []int
	out  diffusion.Batch
	err  error
	done chan struct{}
}

// Predict implements diffusion.Model.
func (gr *group) Predict(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	if err := x.Check(); err != nil {
		return diffusion.Batch{}, err
	}
	if len(t) != x.N || (y != nil && len(y) != x.N) {
		return diffusion.Batch{}, fmt.Errorf("group: %d timesteps and %d labels for %d rows", len(t), len(y), x.N)
	}
	c := &call{x: x, t: t, y: y, done: make(chan struct{})}
	gr.mu.Lock()
	gr.pending = append(gr.pending, c)
	batch := gr.takeLocked()
	gr.mu.Unlock()
	if batch != nil {
		gr.run(batch)
	}
	// A call always completes: either this run is the last to arrive, or a
	// later arrival or a leaving run completes the group.
	<-c.done
	return c.out, c.err
}

// leave removes a finished or cancelled run from the group, running the
// pending step if the others were only waiting for it.
func (gr *group) leave() {
	gr.mu.Lock()
	gr.members--
	batch := gr.takeLocked()
	gr.mu.Unlock()
	if batch != nil {
		gr.run(batch)
	}
}

// takeLocked returns the pending calls when every member has called.
func (gr *group) takeLocked() []*call {
	if len(gr.pending) == 0 || len(gr.pending) < gr.members {
		return nil
	}
	b := gr.pending
	gr.pending = nil
	return b
}

// run evaluates the inner model on the calls' rows as one batch and
// completes every call.
func (gr *group) run(calls []*call) {
	defer func() {
		if r := recover(); r != nil {
			err := fmt.Errorf("model panicked: %v", r)
			for _, c := range calls {
				select {
				case <-c.done:
				default:
					c.err = err
					close(c.done)
				}
			}
		}
	}()
	finish := func(err error) {
		for _, c := range calls {
			c.err = err
			close(c.done)
		}
	}
	x0 := calls[0].x
	rows := 0
	labels := false
	for _, c := range calls {
		if c.x.C != x0.C || c.x.H != x0.H || c.x.W != x0.W {
			finish(fmt.Errorf("group: row shapes differ: (%d,%d,%d) and (%d,%d,%d)", x0.C, x0.H, x0.W, c.x.C, c.x.H, c.x.W))
			return
		}
		rows += c.x.N
		labels = labels || c.y != nil
	}
	x := diffusion.NewBatch(rows, x0.C, x0.H, x0.W)
	t := make([]float64, 0, rows)
	var y []int
	if labels {
		y = make([]int, 0, rows)
	}
	off := 0
	for _, c := range calls {
		off += copy(x.Data[off:], c.x.Data)
		t = append(t, c.t...)
		if labels {
			if c.y != nil {
				y = append(y, c.y...)
			} else {
				for range c.x.N {
					y = append(y, -1)
				}
			}
		}
	}
	out, err := gr.inner.Predict(gr.ctx, x, t, y)
	if err == nil && (out.N != rows || len(out.Data) != out.Len() || out.H != x0.H || out.W != x0.W) {
		err = fmt.Errorf("group: model answered (%d,%d,%d,%d) for %d rows of (%d,%d,%d)", out.N, out.C, out.H, out.W, rows, x0.C, x0.H, x0.W)
	}
	if err != nil {
		finish(err)
		return
	}
	per := out.C * out.H * out.W
	r := 0
	for _, c := range calls {
		c.out = diffusion.Batch{N: c.x.N, C: out.C, H: out.H, W: out.W,
			Data: append([]float32(nil), out.Data[r*per:(r+c.x.N)*per]...)}
		r += c.x.N
		close(c.done)
	}
}
