package adm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/schedule"
	"github.com/ddpm-go/ddpm/weights"
	"github.com/ddpm-go/ddpm/weights/pt"
)

// ArgsFile is the flags file read beside a checkpoint: args.json.
const ArgsFile = "args.json"

// IsCheckpoint reports whether path names a PyTorch checkpoint (.pt or
// .pth), the format of OpenAI's released weights.
func IsCheckpoint(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".pt", ".pth":
		return true
	}
	return false
}

// ConfigFor finds the config of the checkpoint at path: flags (a JSON
// file path, or a flag string as the READMEs print it, "--image_size 64
// ..."), else args.json beside the checkpoint, else the preset of a
// released checkpoint recognised by its file name (see Preset). It says
// where the config came from.
func ConfigFor(path, flags string) (Config, string, error) {
	if f := strings.TrimSpace(flags); f != "" {
		if strings.HasPrefix(f, "--") {
			c, err := ParseFlags(f)
			if err != nil {
				return Config{}, "", fmt.Errorf("config flags: %w", err)
			}
			return c, "the given flags", nil
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return Config{}, "", fmt.Errorf("config: %w", err)
		}
		c, err := ParseArgs(b)
		if err != nil {
			return Config{}, "", fmt.Errorf("config %s: %w", f, err)
		}
		return c, f, nil
	}
	args := filepath.Join(filepath.Dir(path), ArgsFile)
	b, err := os.ReadFile(args)
	switch {
	case err == nil:
		c, err := ParseArgs(b)
		if err != nil {
			return Config{}, "", fmt.Errorf("%s: %w", args, err)
		}
		return c, args, nil
	case !errors.Is(err, fs.ErrNotExist):
		return Config{}, "", fmt.Errorf("config: %w", err)
	}
	if c, ok := Preset(path); ok {
		return c, "the preset for " + filepath.Base(path), nil
	}
	return Config{}, "", fmt.Errorf("%s: no %s beside it and not a released checkpoint name (%s): give the model's flags (--config FILE.json or \"--image_size 64 ...\")",
		path, ArgsFile, strings.Join(Presets(), ", "))
}

// LoadCheckpoint reads an OpenAI checkpoint (torch.save of a state dict;
// float16 weights of use_fp16 models become float32) and builds its
// network on ops with cfg. Every state-dict key must be a parameter of
// the network with its shape: missing, unexpected and mis-shaped tensors
// are one error listing every name.
func LoadCheckpoint[B any](path string, cfg Config, ops kernels.Ops[B]) (*Net[B], error) {
	ts, err := pt.Read(path)
	if err != nil {
		return nil, fmt.Errorf("adm: read checkpoint: %w", err)
	}
	m, err := newNet[B](cfg, ops, nil)
	if err != nil {
		return nil, err
	}
	if err := m.SetTensors(ts); err != nil {
		m.Close()
		return nil, fitError(path, cfg, err)
	}
	return m, nil
}

// OpenSource reads an OpenAI checkpoint (.pt) as a weights.Source: the
// state dict's tensors, with the Config (from flags, args.json or the
// preset, see ConfigFor) as its model config and, for diffusion models,
// the diffusion of the flags, as a converted model file holds them. Any
// other path is opened by weights.Open and must be a converted ADM model.
func OpenSource(path, flags string) (*weights.Source, error) {
	if !IsCheckpoint(path) {
		src, err := weights.Open(path)
		if err != nil {
			return nil, err
		}
		if !IsConfig(src.UNetConfig) {
			return nil, fmt.Errorf("adm: %s is not a guided-diffusion or GLIDE model (its config has no _class_name %s)", path, kindList())
		}
		return src, nil
	}
	cfg, _, err := ConfigFor(path, flags)
	if err != nil {
		return nil, fmt.Errorf("adm: %w", err)
	}
	ts, err := pt.Read(path)
	if err != nil {
		return nil, fmt.Errorf("adm: read checkpoint: %w", err)
	}
	src := &weights.Source{Path: path, Format: weights.FormatModel, Model: weights.Model{UNetConfig: cfg.JSON(), Tensors: ts}}
	if cfg.Kind != Classifier {
		dc, err := cfg.Diffusion()
		if err != nil {
			return nil, err
		}
		if src.DiffusionConfig, err = json.Marshal(dc); err != nil {
			return nil, fmt.Errorf("adm: diffusion config: %w", err)
		}
	}
	return src, nil
}

// Load opens an ADM network from path (an OpenAI checkpoint or a
// converted model file, see OpenSource) and builds it on ops.
func Load[B any](path, flags string, ops kernels.Ops[B]) (*Net[B], *weights.Source, error) {
	src, err := OpenSource(path, flags)
	if err != nil {
		return nil, nil, err
	}
	m, err := FromSource[B](src, ops)
	if err != nil {
		return nil, nil, err
	}
	return m, src, nil
}

// FromSource builds the network of a converted model file (weights.Open
// of a ddpm model file whose config is an ADM Config) on ops.
func FromSource[B any](src *weights.Source, ops kernels.Ops[B]) (*Net[B], error) {
	cfg, err := ParseArgs(src.UNetConfig)
	if err != nil {
		return nil, fmt.Errorf("adm: %s: %w", src.Path, err)
	}
	m, err := newNet[B](cfg, ops, nil)
	if err != nil {
		return nil, err
	}
	if err := m.SetTensors(src.Tensors); err != nil {
		m.Close()
		return nil, fitError(src.Path, cfg, err)
	}
	return m, nil
}

// FitError says that a checkpoint's tensors do not fit the network its
// config describes; Unwrap gives the full *weights.MismatchError.
type FitError struct {
	Path string
	Kind Kind
	Err  *weights.MismatchError
}

// Error names the file and the network and lists at most five names per
// kind of difference.
func (e *FitError) Error() string {
	list := func(names []string, sep string) string {
		if len(names) > 5 {
			return strings.Join(names[:5], sep) + fmt.Sprintf("%sand %d more", sep, len(names)-5)
		}
		return strings.Join(names, sep)
	}
	var parts []string
	if n := len(e.Err.Missing); n > 0 {
		parts = append(parts, fmt.Sprintf("%d missing (%s)", n, list(e.Err.Missing, ", ")))
	}
	if n := len(e.Err.Unexpected); n > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected (%s)", n, list(e.Err.Unexpected, ", ")))
	}
	if n := len(e.Err.Misshaped); n > 0 {
		s := make([]string, len(e.Err.Misshaped))
		for i, m := range e.Err.Misshaped {
			s[i] = fmt.Sprintf("%s is %v, want %v", m.Name, m.Got, m.Want)
		}
		parts = append(parts, fmt.Sprintf("%d mis-shaped (%s)", n, list(s, "; ")))
	}
	return fmt.Sprintf("adm: %s does not fit the %s its config describes (are the flags right?): %s", e.Path, e.Kind, strings.Join(parts, "; "))
}

func (e *FitError) Unwrap() error { return e.Err }

// fitError wraps a SetTensors failure of path.
func fitError(path string, cfg Config, err error) error {
	var me *weights.MismatchError
	if errors.As(err, &me) {
		return &FitError{Path: path, Kind: cfg.Kind, Err: me}
	}
	return fmt.Errorf("adm: %s: %w", path, err)
}

// Shapes maps every parameter (state-dict key) to its shape.
func (m *Net[B]) Shapes() map[string][]int { return m.nn.Shapes() }

// SetTensors uploads weights under their state-dict names; names and
// shapes must match the network's exactly.
func (m *Net[B]) SetTensors(t map[string]weights.Tensor) error { return m.nn.SetTensors(t) }

// Tensors returns a copy of the weights under their state-dict names.
func (m *Net[B]) Tensors() (map[string]weights.Tensor, error) { return m.nn.Tensors() }

// Export returns the network as a ddpm model: its Config as the model
// config (with "_class_name", so Open and pipeline recognise it), the
// diffusion of its flags for diffusion models, and every tensor.
func (m *Net[B]) Export() (*weights.Model, error) {
	ts, err := m.Tensors()
	if err != nil {
		return nil, err
	}
	out := &weights.Model{UNetConfig: m.cfg.JSON(), Tensors: ts}
	if m.cfg.Kind != Classifier {
		dc, err := m.cfg.Diffusion()
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(dc)
		if err != nil {
			return nil, fmt.Errorf("adm: diffusion config: %w", err)
		}
		out.DiffusionConfig = b
	}
	return out, nil
}

// Save writes the network as a ddpm model file (safetensors with the
// config in its metadata).
func (m *Net[B]) Save(path string) error {
	wm, err := m.Export()
	if err == nil {
		err = weights.WriteModel(path, wm)
	}
	if err != nil {
		return fmt.Errorf("adm: save %s: %w", path, err)
	}
	return nil
}

// Diffusion returns the Gaussian diffusion of the flags, as
// create_gaussian_diffusion builds it: the named beta schedule over
// diffusion_steps (linear scaled by 1000/steps, or Nichol & Dhariwal's
// cosine), epsilon (or x_0 with predict_xstart) prediction, learned-range
// variance with learn_sigma else fixed large (sigma_small is never set by
// the scripts), the hybrid loss with learn_sigma, and clipping of x_0
// (the scripts' clip_denoised default). timestep_respacing is a sampling
// choice (the sampler's steps) and rescale_timesteps must be false: the
// released models take timesteps in [0, diffusion_steps).
func (c Config) Diffusion() (diffusion.Config, error) {
	d := diffusion.DefaultConfig()
	if c.DiffusionSteps < 1 {
		return d, fmt.Errorf("adm: diffusion_steps %d: must be >= 1", c.DiffusionSteps)
	}
	d.Timesteps = c.DiffusionSteps
	switch c.NoiseSchedule {
	case "linear":
		d.Schedule = schedule.Linear
		scale := 1000 / float64(c.DiffusionSteps)
		d.BetaStart, d.BetaEnd = scale*0.0001, scale*0.02
	case "cosine", "squaredcos_cap_v2": // GLIDE's name for the same schedule
		d.Schedule = schedule.Cosine
	default:
		return d, fmt.Errorf("adm: noise_schedule %q: allowed are linear, cosine, squaredcos_cap_v2", c.NoiseSchedule)
	}
	if c.RescaleTimesteps {
		return d, fmt.Errorf("adm: rescale_timesteps True: models taking timesteps scaled to [0, 1000) are not supported")
	}
	if c.PredictXStart {
		d.Prediction = diffusion.PredictX0
	}
	d.Variance, d.Loss = diffusion.FixedLarge, diffusion.LossSimple
	if c.LearnSigma {
		d.Variance, d.Loss = diffusion.LearnedRange, diffusion.LossHybrid
	}
	d.ClipDenoised = true
	return d, nil
}
