package main

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/cuda"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/pipeline"
	"github.com/ddpm-go/ddpm/schedule"
)

const sampleExamples = `  ddpm sample --out digits.png                          # 16 digits from the embedded model
  ddpm sample --class 7 --n 100 --out-dir sevens        # one PNG per image
  ddpm sample --sampler ddpm --steps 1000 --seed 3 --out a.png
  ddpm sample --sampler dpm++2m --karras --steps 20 --out fast.png
  ddpm sample --class 3 --guidance 3 --out threes.png   # classifier-free guidance
  ddpm sample --init-image x.png --strength 0.3 --out edit.png   # img2img (SDEdit)
  ddpm sample --init-image x.png --mask m.png --sampler ddpm --out fill.png   # inpainting (RePaint; white = keep)
  ddpm sample --model PIPE --steps 10 --noise x.npy --class 1,4,9 --raw out.npy   # reproduce a diffusers run
  ddpm sample --model base.pt --prompt "a corgi" --guidance 3 --steps 27 --n 2   # GLIDE text-to-image
  ddpm sample --model base.pt --prompt "a corgi" --guidance 3 --respacing fast27   # GLIDE's own 27 timesteps
  ddpm sample --model 256x256_diffusion.pt --class 207 --respacing 250   # guided-diffusion's timestep_respacing
  ddpm sample --model base_inpaint.pt --prompt "a corgi" --init-image x.png --mask m.png --guidance 3 --out fill.png   # GLIDE inpainting`

// samplerHelp is the --sampler flag's help text.
var samplerHelp = "sampler: " + strings.Join(samplerNames(), ", ") +
	"\n(default: the scheduler a diffusers pipeline's scheduler_config.json names, else ddpm for a\nmodel that learned its variance (GLIDE, guided-diffusion, --loss hybrid), else ddim;\nddpm and ddim are the native samplers, the others diffusers' schedulers)"

// sampleOptions are the flags of "ddpm sample".
type sampleOptions struct {
	model, device   string
	precision       string // --precision (GPU arithmetic)
	n, steps        int
	nSet            bool   // --n given explicitly
	stepsSet        bool   // --steps given explicitly
	respacing       string // --respacing: an improved-diffusion/GLIDE section string
	sampler         string
	karras          bool
	eta             float64
	seed            uint64
	seedSet         bool // --seed given; otherwise a random seed is drawn and printed
	class           string
	guidance        float64
	clip            string // auto, true or false
	threshold       float64
	modelEps        bool
	out, outDir     string
	outSet          bool // --out or --out-dir given
	initImage, mask string
	strength        float64
	noise, raw      string        // --noise and --raw .npy files
	classifier      string        // --classifier: noisy classifier for guidance
	classifierScale float64       // --classifier-scale
	uncond          bool          // --uncond: the null class for a class-conditional model
	prompts         promptList    // --prompt: GLIDE's text, one per image or one for all
	up              upsampleFlags // --upsample and its options (sample_upsample.go)
}

func parseSample(args []string, stderr io.Writer) (sampleOptions, error) {
	var o sampleOptions
	fs := newFlagSet("sample", "sample [flags]", sampleExamples, stderr)
	fs.StringVar(&o.model, "model", "", "model: diffusers folder or pipeline, ddpm model file or checkpoint, Hub id (default: the embedded model)")
	fs.IntVar(&o.n, "n", 16, "number of images (1..1024; with --noise: the file's N)")
	fs.IntVar(&o.steps, "steps", 50, "denoising steps (1..T; Heun and dpm2 call the model about twice per step;\n100 when a model that learned its variance is sampled with its default, ddpm)")
	fs.StringVar(&o.respacing, "respacing", "", "timesteps as OpenAI's timestep_respacing picks them, instead of --steps (ddpm and ddim only):\na count (100), section counts (10,15,20), ddimN (ddim50) or GLIDE's fast27")
	fs.StringVar(&o.sampler, "sampler", "", samplerHelp)
	fs.BoolVar(&o.karras, "karras", false, "Karras et al. 2022 noise levels (use_karras_sigmas): dpm++2m, dpm++3m, dpm++2m-sde, dpm++2s,\nunipc, deis, euler, heun, lms")
	fs.Float64Var(&o.eta, "eta", 0, "DDIM eta in [0, 1] (0 is deterministic)")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed: image i draws its noise from seed+i, as ddpm serve does (default: a random seed, printed)")
	fs.StringVar(&o.class, "class", "", "class label for every image, or a comma-separated list: an index, or a class name the model\nknows (e.g. \"golden retriever\" on guided-diffusion's ImageNet models) (default: cycle through the classes;\nwith --init-image: the null class, i.e. no condition)")
	fs.Float64Var(&o.guidance, "guidance", 0, "classifier-free guidance scale (0 = none; 2 to 4 sharpens the class;\nfor GLIDE, the prompt against the empty prompt)")
	fs.Var(&o.prompts, "prompt", "text prompt of a GLIDE model (glide-text2im's base.pt, base_inpaint.pt): repeat once per\nimage, or give one for all (--n sets the count; several prompts without --n set it);\nwith --init-image and --mask on an inpainting model the masked-out region is drawn")
	fs.StringVar(&o.classifier, "classifier", "", "classifier guidance (Dhariwal & Nichol 2021) by this noisy classifier towards --class:\na guided-diffusion classifier .pt or a ddpm train-classifier checkpoint")
	fs.Float64Var(&o.classifierScale, "classifier-scale", 1, "classifier guidance scale s (the gradient's weight; >= 0)")
	fs.BoolVar(&o.uncond, "uncond", false, "give a class-conditional model its null class (no condition): with --classifier the\nclassifier alone steers towards --class")
	fs.StringVar(&o.clip, "clip", "auto", "clip the x0 estimate to [-1, 1] at each step: auto (the model's setting), true or false")
	fs.Float64Var(&o.threshold, "threshold", 0, "dynamic thresholding quantile in (0, 1] instead of the clip (Imagen; 0 = off)")
	fs.BoolVar(&o.modelEps, "model-eps", false, "native DDIM: keep the model's epsilon after clipping x0 (diffusers' default;\nthe default re-derives it from the clipped x0, which guidance needs)")
	fs.StringVar(&o.out, "out", "samples.png", "grid PNG to write")
	fs.StringVar(&o.outDir, "out-dir", "", "write one PNG per image into this directory instead of a grid")
	fs.StringVar(&o.initImage, "init-image", "", "start from this image (img2img with --strength, or inpainting with --mask)")
	fs.Float64Var(&o.strength, "strength", 0.3, "img2img noise strength in [0, 1]: how much of the image is redrawn")
	fs.StringVar(&o.mask, "mask", "", "inpainting mask PNG: white keeps --init-image, black is generated\n(RePaint with --sampler ddpm; the other samplers replace the known region after each step)")
	fs.StringVar(&o.noise, "noise", "", "starting noise: a standard-normal float32 (N, C, H, W) .npy file, scaled by the\nsolver's initial sigma as diffusers pipelines do (sets --n)")
	fs.StringVar(&o.raw, "raw", "", "also write the final sample as a float32 (N, C, H, W) .npy file, before any clamping or\nquantising (then no PNG unless --out or --out-dir is given)")
	fs.StringVar(&o.device, "device", "auto", "auto, cpu or cuda[:N]")
	fs.StringVar(&o.precision, "precision", "", precisionHelp)
	o.up.register(fs, upsampleHelp) // --upsample, --upsample-steps, --upsample-temp
	if err := parseFlags(fs, args); err != nil {
		return o, err
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "seed":
			o.seedSet = true
		case "n":
			o.nSet = true
		case "steps":
			o.stepsSet = true
		case "out", "out-dir":
			o.outSet = true
		}
	})
	if o.n < 1 || o.n > 1024 {
		return o, usageError{fmt.Sprintf("sample: --n %d: must be in 1..1024", o.n)}
	}
	if o.sampler != "" {
		if _, err := diffusion.ParseSampler(o.sampler); err != nil {
			return o, usageError{fmt.Sprintf("sample: --sampler %q: allowed are %s", o.sampler, strings.Join(samplerNames(), ", "))}
		}
	}
	if err := checkRespacing(o); err != nil {
		return o, err
	}
	if o.clip != "auto" && o.clip != "true" && o.clip != "false" {
		return o, usageError{fmt.Sprintf("sample: --clip %q: allowed auto, true, false", o.clip)}
	}
	if !(o.threshold >= 0 && o.threshold <= 1) {
		return o, usageError{fmt.Sprintf("sample: --threshold %v: must be in (0, 1], or 0 for off", o.threshold)}
	}
	if o.mask != "" && o.initImage == "" {
		return o, usageError{"sample: --mask needs --init-image"}
	}
	if !(o.classifierScale >= 0) || math.IsInf(o.classifierScale, 0) {
		return o, usageError{fmt.Sprintf("sample: --classifier-scale %v: must be a finite number >= 0", o.classifierScale)}
	}
	if o.prompts != nil && o.uncond {
		return o, usageError{"sample: --uncond with --prompt: give --prompt \"\" for the unconditional text"}
	}
	if o.uncond && o.guidance != 0 {
		return o, usageError{"sample: --uncond with --guidance: classifier-free guidance needs the condition"}
	}
	return o, nil
}

// respacingAllowed says what --respacing takes.
const respacingAllowed = "allowed are a count (100), comma-separated section counts (10,15,20), ddimN (ddim50) or fast27"

// checkRespacing checks --respacing against the other flags: it replaces
// --steps and works with the native ddpm and ddim samplers only (the
// model's T, which bounds the counts, is checked once the model is open).
func checkRespacing(o sampleOptions) error {
	if o.respacing == "" {
		return nil
	}
	if strings.TrimSpace(o.respacing) == "" {
		return usageError{"sample: --respacing is empty: " + respacingAllowed}
	}
	if o.stepsSet {
		return usageError{fmt.Sprintf("sample: --steps %d and --respacing %s both given: --respacing picks the timesteps itself; give one of them", o.steps, o.respacing)}
	}
	if s, err := diffusion.ParseSampler(o.sampler); o.sampler != "" && err == nil && s != diffusion.SamplerDDPM && s != diffusion.SamplerDDIM {
		return usageError{fmt.Sprintf("sample: --respacing is for the native ddpm and ddim samplers, not --sampler %s (use --steps with it)", o.sampler)}
	}
	if o.karras {
		return usageError{"sample: --respacing with --karras: Karras noise levels pick their own timesteps (use --steps)"}
	}
	return nil
}

// samplerNames lists the --sampler names in diffusion.Samplers order.
func samplerNames() []string {
	var names []string
	for _, s := range diffusion.Samplers() {
		names = append(names, s.String())
	}
	return names
}

// randomSeed draws a seed from the operating system's random source, so
// runs without --seed differ; it is printed so a run can be repeated.
func randomSeed() uint64 {
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on supported systems
	}
	return binary.LittleEndian.Uint64(b[:]) >> 11 // 53 bits: exact in JSON and JavaScript
}

// readNoise reads --noise: a float32 (or float64) .npy array of shape
// (N, c, s, s) with finite values.
func readNoise(path string, c, size int) (diffusion.Batch, error) {
	a, err := npy.ReadFile(path)
	if err != nil {
		return diffusion.Batch{}, fmt.Errorf("sample: --noise: %w", err)
	}
	if !a.DType.IsFloat() {
		return diffusion.Batch{}, usageError{fmt.Sprintf("sample: --noise %s: dtype %s, want float32 (<f4) or float64", path, a.DType)}
	}
	if len(a.Shape) != 4 || a.Shape[0] < 1 || a.Shape[0] > 1024 || a.Shape[1] != c || a.Shape[2] != size || a.Shape[3] != size {
		return diffusion.Batch{}, usageError{fmt.Sprintf("sample: --noise %s: shape %v, want (N, %d, %d, %d) with N in 1..1024", path, a.Shape, c, size, size)}
	}
	b := diffusion.Batch{N: a.Shape[0], C: c, H: size, W: size, Data: a.Float32s()}
	for i, v := range b.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return diffusion.Batch{}, usageError{fmt.Sprintf("sample: --noise %s: value %d is %v: must be finite", path, i, v)}
		}
	}
	return b, nil
}

// solverOptions sets the solver of so from --sampler, --karras and the
// model's own scheduler config: no --sampler samples with sched when the
// model has one (--clip and --threshold applied to it), else the native
// ddim; --sampler ddpm or ddim is the native sampler; another --sampler
// on a model with a scheduler config keeps that config's training keys
// (diffusion.SchedulerConfigFor), else the model's diffusion process's.
func solverOptions(so *diffusion.Options, o sampleOptions, sched *diffusion.SchedulerConfig) error {
	so.Karras = o.karras
	if o.sampler == "" && sched == nil {
		o.sampler = "ddim"
	}
	var base diffusion.SchedulerConfig
	if o.sampler == "" {
		base = *sched
	} else {
		s, err := diffusion.ParseSampler(o.sampler)
		if err != nil {
			return usageError{fmt.Sprintf("sample: --sampler: %v", err)}
		}
		so.Sampler = s
		if s == diffusion.SamplerDDPM || s == diffusion.SamplerDDIM || sched == nil {
			return nil
		}
		if base, err = diffusion.SchedulerConfigFor(o.sampler, false, *sched); err != nil {
			return fmt.Errorf("sample: --sampler %s: %w", o.sampler, err)
		}
	}
	switch o.clip {
	case "true", "false":
		v := o.clip == "true"
		base.ClipSample = &v
		if !v {
			base.Thresholding = false
		}
	}
	if o.threshold > 0 {
		t, r := true, o.threshold
		base.ClipSample, base.Thresholding, base.DynamicThresholdingRatio = &t, true, &r
	}
	so.Scheduler = &base
	return nil
}

func runSample(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseSample(args, stderr)
	if err != nil {
		return err
	}
	if !o.seedSet {
		o.seed = randomSeed()
		fmt.Fprintf(stderr, "seed %d (pass --seed %d to repeat this run)\n", o.seed, o.seed)
	}
	m, err := openPipelineGPU(ctx, o.model, o.device, o.precision, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	cfg := m.Config
	d, err := sampleDiffusion(m.Diffusion, o)
	if err != nil {
		return err
	}
	var noise *diffusion.Batch
	if o.noise != "" {
		z, err := readNoise(o.noise, cfg.InChannels, cfg.SampleSize)
		if err != nil {
			return err
		}
		if o.nSet && o.n != z.N {
			return usageError{fmt.Sprintf("sample: --n %d, but --noise %s holds %d images: leave --n out or make them agree", o.n, o.noise, z.N)}
		}
		o.n, noise = z.N, &z
	}
	if m.IsText() && len(o.prompts) > 1 && !o.nSet && noise == nil {
		o.n = len(o.prompts) // one image per prompt
	}
	so := diffusion.Options{Steps: o.steps, Eta: o.eta, Seed: o.seed, Guidance: o.guidance, ModelEps: o.modelEps,
		N: o.n, C: cfg.InChannels, H: cfg.SampleSize, W: cfg.SampleSize, Noise: noise}
	// Image i draws its noise from seed+i alone, as ddpm serve does for a
	// request's image i: the same request gives the same images.
	for i := range o.n {
		so.Seeds = append(so.Seeds, o.seed+uint64(i))
	}
	if o.sampler == "" && m.Scheduler == nil {
		// The model's own default (Diffusion.DefaultSampling, as ddpm
		// serve): a learned variance is used by ancestral sampling only
		// (DDIM ignores it), which glide-text2im and improved-diffusion
		// run at 100 respaced steps.
		sampler, steps := m.Diffusion.DefaultSampling()
		o.sampler = sampler.String()
		if !o.stepsSet && o.respacing == "" {
			so.Steps = steps
		}
		if sampler == diffusion.SamplerDDPM {
			count := fmt.Sprintf("%d steps", so.Steps)
			if o.respacing != "" {
				count = "--respacing " + o.respacing
			}
			fmt.Fprintf(stderr, "sample: ddpm, %s (ancestral sampling with the model's learned variance; --sampler and --steps override them)\n", count)
		}
	}
	if err := solverOptions(&so, o, m.Scheduler); err != nil {
		return err
	}
	if so.Scheduler != nil && o.sampler == "" {
		fmt.Fprintf(stderr, "sample: %s from the model's scheduler config (--sampler overrides it)\n", so.Scheduler.ClassName)
	}
	if o.respacing != "" {
		if so.Scheduler != nil {
			return usageError{fmt.Sprintf("sample: --respacing is for the native ddpm and ddim samplers; the model's scheduler config picks %s: add --sampler ddpm or --sampler ddim", so.Scheduler.ClassName)}
		}
		ts, err := schedule.SectionTimesteps(d.T(), o.respacing)
		if err != nil {
			return usageError{fmt.Sprintf("sample: --respacing %q over the model's %d timesteps: %v; %s", o.respacing, d.T(), err, respacingAllowed)}
		}
		so.Steps, so.Spacing = 0, o.respacing // Spacing takes section strings; Steps is then unused
		fmt.Fprintf(stderr, "sample: --respacing %s: %d of %d timesteps\n", o.respacing, len(ts), d.T())
	}
	var clf *pipeline.Classifier
	if o.classifier != "" && !m.IsText() { // glideModel refuses it
		if clf, err = pipeline.OpenClassifier(ctx, o.classifier, pipeline.Options{Device: o.device, GPU: cuda.Options{Precision: o.precision},
			Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}); err != nil {
			return err
		}
		defer clf.Close()
		if err := clf.Check(m); err != nil {
			return usageError{"sample: --classifier: " + err.Error()}
		}
	}
	model := m.Model
	var text *pipeline.TextInputs // a GLIDE inpainting model's known image
	if m.IsText() {
		if model, text, err = glideModel(m, o); err != nil {
			return err
		}
		so.Labels = make([]int, o.n) // image i takes prompt i
		for i := range so.Labels {
			so.Labels[i] = i
		}
	} else if o.prompts != nil {
		return usageError{fmt.Sprintf("sample: --prompt is for GLIDE's text-conditional models; the model %s is not one (--class conditions a class-conditional model, by index or by name, e.g. --class \"golden retriever\" on an ImageNet model)", o.model)}
	} else if k := m.Classes(); k > 0 && o.uncond {
		if cfg.NullClass == nil {
			return usageError{"sample: --uncond: the model has no null class (it was trained without label dropout)"}
		}
		so.Labels = make([]int, o.n)
		for i := range so.Labels {
			so.Labels[i] = -1
		}
	} else if k > 0 {
		switch {
		case o.class == "" && o.initImage != "" && cfg.NullClass != nil:
			so.Labels = make([]int, o.n)
			for i := range so.Labels {
				so.Labels[i] = -1
			}
			if o.guidance != 0 {
				return usageError{"sample: --guidance needs --class (the edit is unconditional without one)"}
			}
		case o.class == "" && o.initImage != "":
			return usageError{fmt.Sprintf("sample: the model is class-conditional without a null class: give --class (0..%d) for the edit", k-1)}
		default:
			labels, err := parseClassLabels(o.class, o.n, k, pipeline.ClassLookup(m.Source, k))
			if err != nil {
				return usageError{err.Error()}
			}
			so.Labels = labels
		}
	} else if o.class != "" && clf == nil {
		return usageError{"sample: --class given, but the model is unconditional (give --classifier to steer it)"}
	} else if o.uncond {
		return usageError{"sample: --uncond: the model is unconditional already"}
	}
	if clf != nil {
		labels, err := parseClassLabels(o.class, o.n, clf.Classes(), pipeline.ClassLookup(clf.Source, clf.Classes()))
		if err != nil {
			return usageError{"sample: --classifier: " + err.Error()}
		}
		if so.Labels != nil && o.class == "" && !o.uncond {
			labels = nil // the model's labels
		}
		so.Classifier = clf.Guidance(o.classifierScale, labels)
	}
	if o.initImage != "" && text == nil {
		x, err := img.ReadFile(o.initImage, cfg.InChannels, cfg.SampleSize, cfg.SampleSize)
		if err != nil {
			return err
		}
		rep := diffusion.NewBatch(o.n, x.C, x.H, x.W)
		for i := 0; i < o.n; i++ {
			copy(rep.Data[i*len(x.Data):], x.Data)
		}
		so.Image = &rep
		if o.mask != "" {
			mk, err := img.ReadMask(o.mask, cfg.SampleSize, cfg.SampleSize)
			if err != nil {
				return err
			}
			rm := diffusion.NewBatch(o.n, 1, mk.H, mk.W)
			for i := 0; i < o.n; i++ {
				copy(rm.Data[i*len(mk.Data):], mk.Data)
			}
			so.Mask = &rm
		} else {
			so.Strength = o.strength
		}
	}
	up, err := prepareUpsample(ctx, o, m, so, stderr) // nil without --upsample
	if err != nil {
		return err
	}
	defer up.Close()
	bar := newProgress(stderr, "sampling")
	so.Progress = func(p diffusion.Progress) { bar.update(p.Step, p.Total) }
	b, err := d.Sample(ctx, model, so)
	bar.done()
	if err != nil {
		return err
	}
	if err := text.KeepKnown(b); err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	if b, err = up.run(ctx, b, stderr); err != nil { // the --upsample stage
		return err
	}
	if o.raw != "" {
		if err := writeRaw(o.raw, b); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", o.raw)
		if !o.outSet {
			return nil
		}
	}
	if o.outDir != "" {
		files, err := img.WriteEach(o.outDir, "sample", b)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %d images to %s\n", len(files), o.outDir)
		return nil
	}
	if err := img.WriteGrid(o.out, b, img.GridOptions{Padding: 2}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", o.out)
	return nil
}

// writeRaw writes the sample as a float32 (N, C, H, W) .npy file.
func writeRaw(path string, b diffusion.Batch) error {
	a, err := npy.NewFloat32([]int{b.N, b.C, b.H, b.W}, b.Data)
	if err != nil {
		return fmt.Errorf("sample: --raw: %w", err)
	}
	if err := npy.WriteFile(path, a); err != nil {
		return fmt.Errorf("sample: --raw %s: %w", path, err)
	}
	return nil
}

// sampleDiffusion applies --clip and --threshold to the model's diffusion.
func sampleDiffusion(d *diffusion.Diffusion, o sampleOptions) (*diffusion.Diffusion, error) {
	cfg := d.Config()
	switch o.clip {
	case "true":
		cfg.ClipDenoised = true
	case "false":
		cfg.ClipDenoised = false
	}
	if o.threshold > 0 {
		cfg.ClipDenoised, cfg.Thresholding, cfg.ThresholdRatio = true, true, o.threshold
	}
	if o.clip == "auto" && o.threshold == 0 {
		return d, nil
	}
	return diffusion.New(cfg)
}

// parseLabels turns --class into n labels in 0..k-1: empty cycles through
// the classes, one value repeats, a list must have n entries.
func parseLabels(s string, n, k int) ([]int, error) { return parseClassLabels(s, n, k, nil) }

// parseClassLabels is parseLabels where a label may also be a class name
// that lookup (pipeline.ClassLookup; nil: indices only) resolves, e.g.
// "golden retriever" on an ImageNet model.
func parseClassLabels(s string, n, k int, lookup func(string) (int, error)) ([]int, error) {
	labels := make([]int, n)
	if s == "" {
		for i := range labels {
			labels[i] = i % k
		}
		return labels, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != 1 && len(parts) != n {
		return nil, fmt.Errorf("sample: --class has %d labels: give one, or one per image (%d)", len(parts), n)
	}
	for i := range labels {
		p := strings.TrimSpace(parts[min(i, len(parts)-1)])
		v, err := strconv.Atoi(p)
		switch {
		case err == nil && (v < 0 || v >= k):
			return nil, fmt.Errorf("sample: --class %q: labels must be in 0..%d", p, k-1)
		case err != nil && lookup != nil:
			if v, err = lookup(p); err != nil {
				return nil, fmt.Errorf("sample: --class %q: %v (or give an index in 0..%d)", p, err, k-1)
			}
		case err != nil:
			return nil, fmt.Errorf("sample: --class %q: labels must be integers in 0..%d (the model's classes have no names)", p, k-1)
		}
		labels[i] = v
	}
	return labels, nil
}

// glideModel binds a GLIDE model (m.IsText()) to the --prompt texts for
// "ddpm sample": one per image or one for all. On an inpainting model
// (glide-text2im's base_inpaint.pt) --init-image and --mask become its
// inpainting inputs, returned to keep the known region in the result;
// otherwise --init-image and --mask stay img2img and RePaint-style
// inpainting, conditioned on the prompts.
func glideModel(m *pipeline.Pipeline, o sampleOptions) (diffusion.Model, *pipeline.TextInputs, error) {
	kind := m.OpenAI.Kind()
	switch {
	case o.class != "":
		return nil, nil, usageError{fmt.Sprintf("sample: --class: the model is GLIDE's %s, conditioned on text: give --prompt instead", kind)}
	case o.classifier != "":
		return nil, nil, usageError{fmt.Sprintf("sample: --classifier: classifier guidance is for guided-diffusion's class-conditional or unconditional models, not GLIDE's %s (use --guidance)", kind)}
	case o.prompts == nil:
		return nil, nil, usageError{fmt.Sprintf("sample: the model is GLIDE's %s: give its text with --prompt (once per image, or once for all; --prompt \"\" is unconditional)", kind)}
	case len(o.prompts) != 1 && len(o.prompts) != o.n:
		return nil, nil, usageError{fmt.Sprintf("sample: --prompt given %d times for %d images: give one per image or one for all", len(o.prompts), o.n)}
	case kind == adm.SuperResText2Im || kind == adm.SuperResInpaintText2Im:
		return nil, nil, usageError{fmt.Sprintf("sample: the model is a GLIDE upsampler (%s): give its base model with --model and it with --upsample (ddpm predict --low-res runs it alone)", kind)}
	}
	var text *pipeline.TextInputs
	if kind == adm.InpaintText2Im && o.initImage != "" && o.mask != "" {
		size := m.Config.SampleSize
		x, err := img.ReadFile(o.initImage, 3, size, size)
		if err != nil {
			return nil, nil, err
		}
		mk, err := img.ReadMask(o.mask, size, size)
		if err != nil {
			return nil, nil, err
		}
		text = &pipeline.TextInputs{InpaintImage: &x, InpaintMask: &mk}
	}
	model, err := m.WithPrompts(o.prompts, o.n, text)
	if err != nil {
		return nil, nil, fmt.Errorf("sample: %w", err)
	}
	return model, text, nil
}
