package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
	"github.com/ddpm-go/ddpm/pipeline"
)

// "ddpm sample --upsample FILE": the second stage of GLIDE's and
// guided-diffusion's cascades (64x64 -> 256x256) after the base stage,
// by pipeline.Upsample.

// upsampleFlags are the second stage's flags of "ddpm sample".
type upsampleFlags struct {
	model    string  // --upsample: the upsampler's model file
	steps    int     // --upsample-steps
	stepsSet bool    // --upsample-steps given
	temp     float64 // --upsample-temp (0: the upsampler's default)
}

// upsampleHelp is "ddpm sample"'s help of --upsample.
const upsampleHelp = "upsample the samples with this super-resolution model, as the second stage of a cascade:\n" +
	"glide-text2im's upsample.pt (64 -> 256, the same --prompt, no guidance) after base.pt, or\n" +
	"guided-diffusion's 64_256_upsampler.pt (the same --class) after 64x64_diffusion.pt; the\n" +
	"upsampled images are the output (PNGs and --raw)"

// register adds --upsample (with the command's help text) and the second
// stage's --upsample-steps and --upsample-temp to fs.
func (u *upsampleFlags) register(fs *flag.FlagSet, help string) {
	u.steps = pipeline.UpsampleSteps
	fs.StringVar(&u.model, "upsample", "", help)
	fs.Func("upsample-steps", fmt.Sprintf("ancestral steps of the --upsample stage (default %d: glide-text2im's fast27 timesteps;\nother counts evenly spaced)", pipeline.UpsampleSteps), func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("%q: want an integer >= 1", s)
		}
		u.steps, u.stepsSet = n, true
		return nil
	})
	fs.Float64Var(&u.temp, "upsample-temp", 0, fmt.Sprintf("scale of the --upsample stage's starting noise (glide-text2im's upsample_temp;\n0: %g for GLIDE, 1 for guided-diffusion)", pipeline.GlideUpsampleTemp))
}

// check reports the flag errors both commands share (cmd names the
// command in the message): the second stage's flags without --upsample,
// and a bad --upsample-temp.
func (u *upsampleFlags) check(cmd string) error {
	switch {
	case u.model == "" && (u.stepsSet || u.temp != 0):
		return usageError{cmd + ": --upsample-steps and --upsample-temp need --upsample"}
	case u.model != "" && (!(u.temp >= 0) || math.IsInf(u.temp, 0)):
		return usageError{fmt.Sprintf("%s: --upsample-temp %v: must be a finite number >= 0", cmd, u.temp)}
	}
	return nil
}

// upsampleStage is an opened --upsample model and its options.
type upsampleStage struct {
	up   *pipeline.Pipeline
	o    pipeline.UpsampleOptions
	size int // the base stage's output size
}

// prepareUpsample opens the --upsample model (nil without the flag) and
// checks, before the base stage runs, that it takes the base model's o.n
// images with so's labels: an upsampler, of the base output's size, the
// prompts of a GLIDE base for a GLIDE upsampler, the class labels for a
// class-conditional one. Close the result.
func prepareUpsample(ctx context.Context, o sampleOptions, m *pipeline.Pipeline, so diffusion.Options, stderr io.Writer) (*upsampleStage, error) {
	u := o.up
	if err := u.check("sample"); err != nil || u.model == "" {
		return nil, err
	}
	if c := m.Config.InChannels; c != 3 {
		return nil, usageError{fmt.Sprintf("sample: --upsample: the base model makes %d-channel images; the upsamplers take RGB", c)}
	}
	up, err := openPipelineGPU(ctx, u.model, o.device, o.precision, stderr)
	if err != nil {
		return nil, err
	}
	s := &upsampleStage{up: up, size: m.Config.SampleSize}
	fail := func(err error) (*upsampleStage, error) {
		up.Close()
		return nil, err
	}
	if !up.IsUpsampler() {
		_, err := up.LowResSize()
		return fail(usageError{fmt.Sprintf("sample: --upsample %s: %v", u.model, err)})
	}
	s.o = pipeline.UpsampleOptions{Steps: u.steps, Temp: u.temp, Seed: upsampleSeed(so.Seed)}
	for _, sd := range so.Seeds {
		s.o.Seeds = append(s.o.Seeds, upsampleSeed(sd))
	}
	switch {
	case up.IsText() && !m.IsText():
		return fail(usageError{fmt.Sprintf("sample: --upsample %s: the upsampler is GLIDE's %s, conditioned on text, but the base model is not a GLIDE text model (glide-text2im's base.pt)", u.model, up.OpenAI.Kind())})
	case up.IsText():
		s.o.Prompts = o.prompts
		if up.OpenAI.Kind() == adm.SuperResInpaintText2Im && o.initImage != "" && o.mask != "" {
			// glide-text2im's inpaint notebook gives upsample_inpaint.pt
			// the known image and mask at 256x256 too.
			size := up.Config.SampleSize
			x, err := img.ReadFile(o.initImage, 3, size, size)
			if err != nil {
				return fail(err)
			}
			mk, err := img.ReadMask(o.mask, size, size)
			if err != nil {
				return fail(err)
			}
			s.o.Inpaint = &pipeline.TextInputs{InpaintImage: &x, InpaintMask: &mk}
		}
	case m.IsText():
		return fail(usageError{fmt.Sprintf("sample: --upsample %s: the base model is GLIDE's, but the upsampler is %s, which takes no text (glide-text2im's upsample.pt follows base.pt)", u.model, up.OpenAI.Kind())})
	case up.Classes() > 0:
		s.o.Labels = so.Labels
		if s.o.Labels == nil && o.class != "" { // an unconditional base steered by --classifier
			if s.o.Labels, err = parseClassLabels(o.class, o.n, up.Classes(), pipeline.ClassLookup(up.Source, up.Classes())); err != nil {
				return fail(usageError{err.Error()})
			}
		}
		if s.o.Labels == nil {
			return fail(usageError{fmt.Sprintf("sample: --upsample %s: the upsampler is class-conditional: give --class for the images (a class-conditional base model passes its labels on)", u.model)})
		}
	}
	if err := pipeline.CheckUpsample(up, o.n, s.size, s.o); err != nil {
		return fail(usageError{fmt.Sprintf("sample: --upsample %s: %v", u.model, err)})
	}
	return s, nil
}

// upsampleSeed derives the second stage's seed from the base stage's
// (SplitMix64's finaliser), so the stages draw unrelated noise.
func upsampleSeed(s uint64) uint64 {
	s += 0x9e3779b97f4a7c15
	s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9
	s = (s ^ (s >> 27)) * 0x94d049bb133111eb
	return s ^ (s >> 31)
}

// run upsamples the base stage's samples b; a nil stage returns b.
func (s *upsampleStage) run(ctx context.Context, b diffusion.Batch, stderr io.Writer) (diffusion.Batch, error) {
	if s == nil {
		return b, nil
	}
	size := s.up.Config.SampleSize
	fmt.Fprintf(stderr, "upsample: %dx%d -> %dx%d with %s, %d ancestral steps\n", b.H, b.W, size, size, s.up.OpenAI.Kind(), s.o.Steps)
	bar := newProgress(stderr, "upsampling")
	s.o.Progress = func(p diffusion.Progress) { bar.update(p.Step, p.Total) }
	out, err := pipeline.Upsample(ctx, s.up, b, s.o)
	bar.done()
	if err != nil {
		return diffusion.Batch{}, fmt.Errorf("sample: --upsample: %w", err)
	}
	return out, nil
}

// Close releases the upsampler (nil: nothing).
func (s *upsampleStage) Close() {
	if s != nil {
		s.up.Close()
	}
}
