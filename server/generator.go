package server

import (
	"context"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
)

// ModelInfo describes the loaded model to clients (GET /v1/models) and to
// the request validation.
type ModelInfo struct {
	Name       string   // model id shown by /v1/models, e.g. "ddpm-mnist"
	ImageSize  int      // images are ImageSize x ImageSize pixels
	Channels   int      // 1 (gray) or 3 (RGB)
	NumClasses int      // 0 for an unconditional model
	ClassNames []string // len NumClasses, or nil (then classes are named by index)
	// TrainSteps is T, the length of the training schedule: the most
	// denoising steps a request may ask for.
	TrainSteps int
	// DefaultSteps, DefaultSampler (a name of diffusion.Samplers, parsed once by New)
	// and DefaultGuidance apply when a request leaves them out.
	DefaultSteps    int
	DefaultSampler  string
	DefaultGuidance float64
	Device          string // which device runs the model, e.g. "cpu (onednn)"
	// Classifier names the noisy classifier that guides the model when a
	// request sets classifier_scale (Dhariwal & Nichol 2021); "" for none.
	Classifier string
	// Text marks a text-to-image model (GLIDE): a request's prompt is the
	// text of each of its images, guidance_scale is classifier-free
	// guidance against the empty prompt, and NumClasses is 0.
	Text bool
	// NoNullClass marks a class-conditional model without a null class
	// (guided-diffusion's ImageNet models, a diffusers UNet without
	// ddpm_null_class): it has no unconditional output, so requests for
	// classifier-free guidance (guidance_scale other than 0 and 1) are
	// refused; classifier_scale (Classifier) still guides it.
	NoNullClass bool
	// Inpaint marks a generator that takes a request's init_image and
	// mask (Item.Known): every DiffusionGenerator does.
	Inpaint bool
	// UpsampleSteps is the number of model calls of a second stage that
	// runs on every batch after its denoising steps (ddpm serve
	// --upsample's upsampler): Generate reports them as steps
	// Steps+1 .. Steps+UpsampleSteps, and a job's total_steps counts them.
	UpsampleSteps int
}

// batchSteps is the number of steps Generate reports for one batch with
// settings s: the denoising steps and the upsampling stage's.
func (m ModelInfo) batchSteps(s Settings) int { return s.Steps + m.UpsampleSteps }

// Check reports an inconsistent ModelInfo.
func (m ModelInfo) Check() error {
	switch {
	case m.Name == "":
		return fmt.Errorf("server: model info: Name is empty")
	case m.ImageSize < 1 || m.ImageSize > 4096:
		return fmt.Errorf("server: model info: ImageSize %d outside [1, 4096]", m.ImageSize)
	case m.Channels != 1 && m.Channels != 3:
		return fmt.Errorf("server: model info: Channels %d: want 1 or 3", m.Channels)
	case m.NumClasses < 0:
		return fmt.Errorf("server: model info: NumClasses %d is negative", m.NumClasses)
	case m.ClassNames != nil && len(m.ClassNames) != m.NumClasses:
		return fmt.Errorf("server: model info: %d ClassNames for NumClasses %d", len(m.ClassNames), m.NumClasses)
	case m.TrainSteps < 1:
		return fmt.Errorf("server: model info: TrainSteps %d must be >= 1", m.TrainSteps)
	case m.DefaultSteps < 1 || m.DefaultSteps > m.TrainSteps:
		return fmt.Errorf("server: model info: DefaultSteps %d outside [1, TrainSteps=%d]", m.DefaultSteps, m.TrainSteps)
	case m.Text && (m.NumClasses != 0 || m.Classifier != ""):
		return fmt.Errorf("server: model info: a text model has no classes (NumClasses %d) and no classifier (%q)", m.NumClasses, m.Classifier)
	case m.UpsampleSteps < 0:
		return fmt.Errorf("server: model info: UpsampleSteps %d is negative", m.UpsampleSteps)
	case m.NoNullClass && m.DefaultGuidance != 0 && m.DefaultGuidance != 1:
		return fmt.Errorf("server: model info: DefaultGuidance %g on a model without a null class (NoNullClass)", m.DefaultGuidance)
	}
	if _, err := parseSampler(m.DefaultSampler); err != nil {
		return fmt.Errorf("server: model info: DefaultSampler: %w", err)
	}
	return nil
}

// Settings are the sampler settings shared by every image of one model
// batch: two requests can be batched together exactly when their Settings
// are equal.
type Settings struct {
	Steps    int               // number of denoising steps (respaced schedule length), 1..TrainSteps
	Sampler  diffusion.Sampler // SamplerDDPM (ancestral, Ho et al. 2020) or SamplerDDIM (Song et al. 2021)
	Eta      float64           // DDIM's eta in [0, 1]: 0 is deterministic, 1 matches DDPM's variance
	Guidance float64           // classifier-free guidance scale w (Ho & Salimans 2022); 0 means none
	// ClassifierScale is the classifier guidance scale s (Dhariwal &
	// Nichol 2021) towards each image's class; 0 means none.
	ClassifierScale float64
	// Inpaint is the Key of the known image and mask (Item.Known) of
	// every item of the batch; "" for none. Requests with different
	// images never share a batch: a GLIDE inpainting model binds one
	// known image per batch.
	Inpaint string
}

// Item is one image to generate.
type Item struct {
	Seed  int64 // seeds this image's noise: the same seed and settings give the same image
	Class int   // class label in [0, NumClasses), or -1 for an unconditional or text model
	// Prompt is the image's text on a text model (ModelInfo.Text; "" is
	// the empty prompt); "" otherwise.
	Prompt string
	// Known is the init image and mask that the image inpaints (the same
	// for every item of a batch, Settings.Inpaint being its Key); nil for
	// plain generation.
	Known *Known
	// Done is closed when nobody wants this image any more (its client went
	// away, its job was cancelled or timed out). A Generator should stop
	// spending work on it (leaving its image nil) while it finishes the
	// other items of the batch. Nil means never.
	Done <-chan struct{}
}

// dead reports whether it.Done is closed.
func (it Item) dead() bool {
	if it.Done == nil {
		return false
	}
	select {
	case <-it.Done:
		return true
	default:
		return false
	}
}

// Generator runs a model: the server's one dependency on the diffusion code,
// so that the HTTP layer is tested with a fast fake. Generate must be safe
// to call from one goroutine at a time (the server runs one worker per
// device); Info must be safe for concurrent use.
type Generator interface {
	// Info describes the model; it must not change after the server starts.
	Info() ModelInfo
	// Generate samples len(items) images as one batch with settings s,
	// calling progress(step, total) after each denoising step (step counts
	// from 1 to total: s.Steps plus Info().UpsampleSteps). It returns one
	// image per item, nil for items whose Done closed before they
	// finished, or an error when ctx ends or the model fails. Settings
	// arrive validated against Info.
	Generate(ctx context.Context, s Settings, items []Item, progress func(step, total int)) ([]image.Image, error)
}

// FakeGenerator is a deterministic stand-in for a diffusion model, for tests
// and for load-testing the server without a model: it is NOT a model. Each
// image is a magenta pattern computed from the seed, class and prompt (red and blue
// at 255, green in [0, 127]), with an inpainting item's known region
// (Item.Known, mask 1) copied from its init image, and each denoising step sleeps StepDelay plus
// ImageDelay per live image, a cost model in which batching pays off.
type FakeGenerator struct {
	Model      ModelInfo
	StepDelay  time.Duration // fixed cost of one denoising step of a batch
	ImageDelay time.Duration // extra cost per live image per step
	// Fail, when non-nil, is returned by Generate (after the steps ran).
	Fail error
	// Calls, when non-nil, receives the number of items of every call
	// (a non-blocking send).
	Calls chan int
}

// NewFakeGenerator returns a FakeGenerator for a size x size model with the
// given channels and class names (nil for an unconditional model).
func NewFakeGenerator(size, channels int, classNames []string) *FakeGenerator {
	return &FakeGenerator{Model: ModelInfo{
		Name: "fake", ImageSize: size, Channels: channels,
		NumClasses: len(classNames), ClassNames: classNames,
		TrainSteps: 1000, DefaultSteps: 20, DefaultSampler: "ddim",
		Device: "fake", Inpaint: true,
	}}
}

// Info implements Generator.
func (f *FakeGenerator) Info() ModelInfo { return f.Model }

// Generate implements Generator.
func (f *FakeGenerator) Generate(ctx context.Context, s Settings, items []Item, progress func(step, total int)) ([]image.Image, error) {
	if f.Calls != nil {
		select {
		case f.Calls <- len(items):
		default:
		}
	}
	total := f.Model.batchSteps(s) // an upsampling stage's steps follow the denoising ones
	for step := 1; step <= total; step++ {
		live := 0
		for _, it := range items {
			if !it.dead() {
				live++
			}
		}
		if d := f.StepDelay + time.Duration(live)*f.ImageDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("fake generator: step %d of %d: %w", step, total, context.Cause(ctx))
			case <-t.C:
			}
		} else if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("fake generator: step %d of %d: %w", step, total, context.Cause(ctx))
		}
		if progress != nil {
			progress(step, total)
		}
	}
	if f.Fail != nil {
		return nil, f.Fail
	}
	out := make([]image.Image, len(items))
	n := f.Model.ImageSize
	for i, it := range items {
		if it.dead() {
			continue
		}
		img := image.NewNRGBA(image.Rect(0, 0, n, n))
		var ph uint64 // 0 for no prompt, so that class models keep their images
		if it.Prompt != "" {
			f := fnv.New64a()
			f.Write([]byte(it.Prompt))
			ph = f.Sum64() | 1
		}
		for y := 0; y < n; y++ {
			for x := 0; x < n; x++ {
				h := uint64(it.Seed)*0x9E3779B97F4A7C15 ^ uint64(it.Class+1)*0xBF58476D1CE4E5B9 ^ uint64(y*n+x)*0x94D049BB133111EB ^ ph
				h ^= h >> 29
				g := uint8(h>>33) & 0x7f
				img.SetNRGBA(x, y, color.NRGBA{R: 255, G: g, B: 255, A: 255})
			}
		}
		if k := it.Known; k != nil && f.Model.Inpaint {
			keepKnownFake(img, k)
		}
		out[i] = img
	}
	return out, nil
}

// keepKnownFake copies the known pixels (mask 1) of k into im.
func keepKnownFake(im *image.NRGBA, k *Known) {
	n := im.Rect.Dx()
	if k.Image.H != n || k.Image.W != n || k.Mask.H != n || k.Mask.W != n {
		return
	}
	hw := n * n
	for p := range hw {
		if k.Mask.Data[p] != 1 {
			continue
		}
		c := color.NRGBA{A: 255}
		c.R = img.ToUint8(k.Image.Data[p])
		c.G, c.B = c.R, c.R
		if k.Image.C == 3 {
			c.G, c.B = img.ToUint8(k.Image.Data[hw+p]), img.ToUint8(k.Image.Data[2*hw+p])
		}
		im.SetNRGBA(p%n, p/n, c)
	}
}
