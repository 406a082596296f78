package unet

import (
	"context"
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/nn"
)

// Net is diffusers' UNet2DModel on one backend (kernels.CPU or a GPU's
// kernels.Ops): the config plus an nn.Net holding the weights in device
// memory and the compiled graphs. It implements diffusion.Model (Predict)
// and the trainer's network interface (Engine, TrainInputs). A Net is safe
// for concurrent use (calls are serialised).
type Net[B any] struct {
	cfg Config
	nn  *nn.Net[B]
}

// Model is the UNet on the CPU.
type Model = Net[[]float32]

// New returns a UNet on the CPU with PyTorch's default initialisation
// (uniform in +-1/sqrt(fan_in) for convolutions and linear layers, ones
// and zeros for norms, N(0, 1) for the class embedding), drawn from seed.
func New(cfg Config, cpu *kernels.CPU, seed uint64) (*Model, error) {
	if cpu == nil {
		return nil, fmt.Errorf("unet: New: nil kernels.CPU")
	}
	return NewOn[[]float32](cfg, cpu, seed)
}

// NewOn is New on any backend. A config needing more than
// DefaultMaxBytes (see Config.CheckSize) is refused before anything is
// allocated; NewOnLimited takes another limit.
func NewOn[B any](cfg Config, ops kernels.Ops[B], seed uint64) (*Net[B], error) {
	return NewOnLimited(cfg, ops, seed, DefaultMaxBytes)
}

// NewOnLimited is NewOn with a memory limit of maxBytes.
func NewOnLimited[B any](cfg Config, ops kernels.Ops[B], seed uint64, maxBytes int64) (*Net[B], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.CheckSize(maxBytes); err != nil {
		return nil, err
	}
	probe := nn.Key{N: 1, H: cfg.SampleSize, W: cfg.SampleSize}
	n, err := nn.New[B](ops, builderOf[B](cfg), probe, seed)
	if err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	return &Net[B]{cfg: cfg, nn: n}, nil
}

// newEmptyOn is NewOn with zeroed parameters, for weights read from a file
// (drawing 36M random values only to overwrite them took 2.8 s of the 4.5
// s that opening the DDPM CIFAR-10 UNet took).
func newEmptyOn[B any](cfg Config, ops kernels.Ops[B]) (*Net[B], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.CheckSize(DefaultMaxBytes); err != nil {
		return nil, err
	}
	probe := nn.Key{N: 1, H: cfg.SampleSize, W: cfg.SampleSize}
	n, err := nn.NewEmpty[B](ops, builderOf[B](cfg), probe)
	if err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	return &Net[B]{cfg: cfg, nn: n}, nil
}

// builderOf is cfg's network as an nn.BuildFunc.
func builderOf[B any](cfg Config) nn.BuildFunc[B] {
	return func(b *nn.Builder[B], k nn.Key) (*G.Node, error) { return build(cfg, b, k) }
}

// Config returns the model's configuration.
func (m *Net[B]) Config() Config { return m.cfg }

// Engine is the network on its backend, for a trainer: flat parameter and
// gradient buffers and training steps.
func (m *Net[B]) Engine() *nn.Net[B] { return m.nn }

// NumParams is the number of trainable values.
func (m *Net[B]) NumParams() int { return m.nn.NumParams() }

// Shapes maps every parameter name to its shape.
func (m *Net[B]) Shapes() map[string][]int { return m.nn.Shapes() }

// Close frees the model's device memory.
func (m *Net[B]) Close() { m.nn.Close() }

// checkInput validates a batch, its timesteps and labels against the model.
func (m *Net[B]) checkInput(x diffusion.Batch, t []float64, y []int) error {
	if err := x.Check(); err != nil {
		return fmt.Errorf("unet: input: %w", err)
	}
	levels := len(m.cfg.BlockOutChannels)
	if x.C != m.cfg.InChannels {
		return fmt.Errorf("unet: input has %d channels, the model takes in_channels = %d", x.C, m.cfg.InChannels)
	}
	if f := 1 << (levels - 1); x.H%f != 0 || x.W%f != 0 {
		return fmt.Errorf("unet: input size %dx%d: height and width must be multiples of %d", x.H, x.W, f)
	}
	if len(t) != x.N {
		return fmt.Errorf("unet: %d timesteps for a batch of %d", len(t), x.N)
	}
	for i, v := range t {
		if !(v >= 0) || math.IsInf(v, 0) {
			return fmt.Errorf("unet: timesteps[%d] = %v: must be finite and >= 0", i, v)
		}
	}
	k := m.cfg.numClasses()
	if k == 0 {
		if y != nil {
			return fmt.Errorf("unet: class labels given, but the model is unconditional (num_class_embeds is null)")
		}
		return nil
	}
	if len(y) != x.N {
		return fmt.Errorf("unet: the model is class-conditional: need %d class labels, have %d", x.N, len(y))
	}
	for i, v := range y {
		if v == -1 && m.cfg.NullClass != nil {
			continue
		}
		if v < 0 || v >= k || (m.cfg.NullClass != nil && v == *m.cfg.NullClass) {
			allowed := fmt.Sprintf("0..%d", k-1)
			if m.cfg.NullClass != nil {
				allowed = fmt.Sprintf("0..%d except the null class %d, or -1 for unconditional", k-1, *m.cfg.NullClass)
			}
			return fmt.Errorf("unet: class label [%d] = %d: allowed %s", i, v, allowed)
		}
	}
	return nil
}

// Inputs returns the graph inputs for (x, t, y) after checking them as
// Predict does: x (centred when the config says so), the sinusoidal
// timestep embedding and the one-hot labels (-1 is the null class).
func (m *Net[B]) Inputs(x diffusion.Batch, t []float64, y []int) (map[string][]float32, error) {
	if err := m.checkInput(x, t, y); err != nil {
		return nil, err
	}
	xd := append([]float32(nil), x.Data...)
	if m.cfg.CenterInputSample {
		for i, v := range xd {
			xd[i] = 2*v - 1
		}
	}
	c0 := m.cfg.BlockOutChannels[0]
	temb := make([]float32, x.N*c0)
	timestepEmbedding(temb, t, c0, m.cfg.FlipSinToCos, m.cfg.FreqShift)
	in := map[string][]float32{inputX: xd, inputTEmb: temb}
	if k := m.cfg.numClasses(); k > 0 {
		oh := make([]float32, x.N*k)
		for i, v := range y {
			if v == -1 {
				v = *m.cfg.NullClass
			}
			oh[i*k+v] = 1
		}
		in[inputClass] = oh
	}
	return in, nil
}

// Key is the graph shape of a batch.
func Key(x diffusion.Batch) nn.Key { return nn.Key{N: x.N, H: x.H, W: x.W} }

// Predict runs the network on x_t at (possibly fractional) training
// timesteps t with labels y (nil for an unconditional model; -1 selects
// the null class of a model trained for classifier-free guidance) and
// returns its output (N, out_channels, H, W).
func (m *Net[B]) Predict(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	if err := ctx.Err(); err != nil {
		return diffusion.Batch{}, err
	}
	in, err := m.Inputs(x, t, y)
	if err != nil {
		return diffusion.Batch{}, err
	}
	out := diffusion.NewBatch(x.N, m.cfg.OutChannels, x.H, x.W)
	if err := m.nn.Forward(ctx, Key(x), in, out.Data); err != nil {
		return diffusion.Batch{}, fmt.Errorf("unet: %w", err)
	}
	return out, nil
}

// timestepEmbedding writes diffusers' get_timestep_embedding for t into
// dst (N, dim): for i < half = dim/2, freq_i = exp(-ln(10000) * i /
// (half - shift)), and row n is [sin(t_n freq), cos(t_n freq)] (cos first
// when flip), zero-padded for odd dim. It is defined for any real t (the
// Euler family calls the model at fractional timesteps). Computed in
// float32 steps as diffusers does, so the embedding matches it bit for
// bit at integer timesteps.
func timestepEmbedding(dst []float32, t []float64, dim int, flip bool, shift float64) {
	half := dim / 2
	clear(dst)
	lnp := float32(-math.Log(10000))
	for i := 0; i < half; i++ {
		e := lnp * float32(i) / float32(float64(half)-shift)
		freq := float32(math.Exp(float64(e)))
		for n, tv := range t {
			arg := float64(float32(tv) * freq)
			s, c := float32(math.Sin(arg)), float32(math.Cos(arg))
			if flip {
				s, c = c, s
			}
			dst[n*dim+i], dst[n*dim+half+i] = s, c
		}
	}
}

// Info describes the model for trainers and servers.
func (m *Net[B]) Info() nn.Info {
	i := nn.Info{Config: m.cfg.JSON(), InChannels: m.cfg.InChannels, OutChannels: m.cfg.OutChannels,
		Size: m.cfg.SampleSize, Classes: m.cfg.numClasses(), NullClass: -1}
	if m.cfg.NullClass != nil {
		i.NullClass = *m.cfg.NullClass
	}
	return i
}
