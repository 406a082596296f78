package adm

import (
	"context"
	"fmt"
	"math"
	"sync"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/nn"
)

// Net is one of guided-diffusion's networks on a backend (kernels.CPU or
// a GPU's kernels.Ops): its Config and an nn.Net holding the weights in
// device memory and the compiled graphs. UNet models implement
// diffusion.Model (Predict); a SuperRes model does too once its
// low-resolution image is bound (WithLowRes); classifiers give Logits and
// the guidance gradient (ClassifierGradient). A Net is safe for
// concurrent use (calls are serialised).
type Net[B any] struct {
	cfg Config
	a   arch
	nn  *nn.Net[B]
	tok *nn.Tokens // a GLIDE model's token state (nil otherwise), guarded by textMu
	// textMu serialises a GLIDE model's runs: the token state is set
	// before each.
	textMu sync.Mutex
}

// Model is a Net on the CPU.
type Model = Net[[]float32]

// New returns the network of cfg on the CPU with PyTorch-style random
// initialisation drawn from seed (uniform +-1/sqrt(fan_in) for
// convolutions and linear layers, ones and zeros for norms, N(0, 1) for
// embeddings); load weights with SetTensors.
func New(cfg Config, cpu *kernels.CPU, seed uint64) (*Model, error) {
	if cpu == nil {
		return nil, fmt.Errorf("adm: New: nil kernels.CPU")
	}
	return NewOn[[]float32](cfg, cpu, seed)
}

// NewOn is New on any backend.
func NewOn[B any](cfg Config, ops kernels.Ops[B], seed uint64) (*Net[B], error) {
	return newNet(cfg, ops, &seed)
}

// newNet builds the network of cfg on ops, initialised from *seed, or
// with zero parameters (to be loaded) when seed is nil.
func newNet[B any](cfg Config, ops kernels.Ops[B], seed *uint64) (*Net[B], error) {
	a, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	probe := nn.Key{N: 1, H: a.size, W: a.size}
	var tok *nn.Tokens
	if a.text != nil {
		tok = &nn.Tokens{}
	}
	bf := func(b *nn.Builder[B], k nn.Key) (*G.Node, error) {
		if a.text != nil {
			return buildText(a, b, k, tok)
		}
		return build(a, b, k)
	}
	var n *nn.Net[B]
	if seed != nil {
		n, err = nn.New[B](ops, bf, probe, *seed)
	} else {
		n, err = nn.NewEmpty[B](ops, bf, probe)
	}
	if err != nil {
		return nil, fmt.Errorf("adm: %w", err)
	}
	return &Net[B]{cfg: cfg, a: a, nn: n, tok: tok}, nil
}

// Config returns the network's configuration.
func (m *Net[B]) Config() Config { return m.cfg }

// Kind says which network this is.
func (m *Net[B]) Kind() Kind { return m.cfg.Kind }

// Engine is the network on its backend (parameters, graphs, VJP).
func (m *Net[B]) Engine() *nn.Net[B] { return m.nn }

// NumParams is the number of parameter values.
func (m *Net[B]) NumParams() int { return m.nn.NumParams() }

// Close frees the network's device memory.
func (m *Net[B]) Close() { m.nn.Close() }

// OutChannels is the output channels of a UNet or SuperRes model (6 with
// learn_sigma: eps, then the variance interpolation v), or the number of
// classes of a classifier.
func (m *Net[B]) OutChannels() int { return m.a.out }

// Classes is the number of class labels a UNet or SuperRes model is
// conditioned on (0 when unconditional); a classifier's outputs are
// OutChannels.
func (m *Net[B]) Classes() int { return m.a.classes }

// Info describes the network for trainers and servers.
func (m *Net[B]) Info() nn.Info {
	return nn.Info{Config: m.cfg.JSON(), InChannels: m.a.img, OutChannels: m.a.out, Size: m.a.size,
		Classes: m.a.classes, NullClass: -1}
}

// Key is the graph shape of a batch.
func Key(x diffusion.Batch) nn.Key { return nn.Key{N: x.N, H: x.H, W: x.W} }

// checkInput validates a batch and its timesteps against the network.
func (m *Net[B]) checkInput(x diffusion.Batch, t []float64) error {
	if err := x.Check(); err != nil {
		return fmt.Errorf("adm: input: %w", err)
	}
	if x.C != m.a.img {
		return fmt.Errorf("adm: input has %d channels, the %s takes %d", x.C, m.cfg.Kind, m.a.img)
	}
	f := m.a.finalDS
	if m.a.kind == Classifier && m.a.pool == "attention" {
		if x.H != m.a.size || x.W != m.a.size {
			return fmt.Errorf("adm: input size %dx%d: the classifier's attention pool takes %dx%d (image_size)", x.H, x.W, m.a.size, m.a.size)
		}
	} else if x.H%f != 0 || x.W%f != 0 {
		return fmt.Errorf("adm: input size %dx%d: height and width must be multiples of %d", x.H, x.W, f)
	}
	if len(t) != x.N {
		return fmt.Errorf("adm: %d timesteps for a batch of %d", len(t), x.N)
	}
	for i, v := range t {
		if !(v >= 0) || math.IsInf(v, 0) {
			return fmt.Errorf("adm: timesteps[%d] = %v: must be finite and >= 0", i, v)
		}
	}
	return nil
}

// Inputs returns the graph inputs of (x, t, y) after checking them, as
// the training loop feeds them to the engine (train.Network).
func (m *Net[B]) Inputs(x diffusion.Batch, t []float64, y []int) (map[string][]float32, error) {
	return m.inputs(x, t, y, nil)
}

// inputs returns the graph inputs for (x, t, y, lowRes) after checking
// them: x, the timestep embedding, the one-hot labels and the upsampled
// low-resolution image.
func (m *Net[B]) inputs(x diffusion.Batch, t []float64, y []int, lowRes *diffusion.Batch) (map[string][]float32, error) {
	if err := m.checkInput(x, t); err != nil {
		return nil, err
	}
	temb := make([]float32, x.N*m.a.model)
	timestepEmbedding(temb, t, m.a.model)
	in := map[string][]float32{inputX: x.Data, inputTEmb: temb}
	k := m.a.classes
	switch {
	case k == 0 && y != nil:
		return nil, fmt.Errorf("adm: class labels given, but the %s is not class-conditional (class_cond False)", m.cfg.Kind)
	case k > 0:
		if len(y) != x.N {
			return nil, fmt.Errorf("adm: the model is class-conditional (class_cond True): need %d class labels, have %d", x.N, len(y))
		}
		oh := make([]float32, x.N*k)
		for i, v := range y {
			if v < 0 || v >= k {
				return nil, fmt.Errorf("adm: class label [%d] = %d: allowed 0..%d", i, v, k-1)
			}
			oh[i*k+v] = 1
		}
		in[inputClass] = oh
	}
	if m.a.kind == SuperRes {
		if lowRes == nil {
			return nil, fmt.Errorf("adm: the SuperResModel needs its low-resolution image (low_res)")
		}
		if err := lowRes.Check(); err != nil {
			return nil, fmt.Errorf("adm: low_res: %w", err)
		}
		if lowRes.N != x.N || lowRes.C != m.a.img {
			return nil, fmt.Errorf("adm: low_res has shape (%d, %d, %d, %d), want (%d, %d, h, w)", lowRes.N, lowRes.C, lowRes.H, lowRes.W, x.N, m.a.img)
		}
		in[inputLowRes] = Bilinear(*lowRes, x.H, x.W).Data
	}
	return in, nil
}

// Predict runs a UNet on x_t at (possibly fractional) timesteps t of the
// training schedule with labels y (nil for an unconditional model) and
// returns its output (N, out_channels, H, W): eps (or x_0 with
// predict_xstart), then with learn_sigma the variance interpolation v.
// A SuperRes model needs PredictLowRes or WithLowRes; a classifier,
// Logits.
func (m *Net[B]) Predict(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	if m.a.text != nil {
		return diffusion.Batch{}, fmt.Errorf("adm: Predict on a %s: use PredictText or WithText (the model reads a prompt)", m.a.kind)
	}
	if m.a.kind != UNet {
		return diffusion.Batch{}, fmt.Errorf("adm: Predict on a %s: use %s", m.a.kind, map[Kind]string{SuperRes: "PredictLowRes or WithLowRes", Classifier: "Logits"}[m.a.kind])
	}
	return m.predict(ctx, x, t, y, nil)
}

// PredictLowRes is Predict for a SuperRes model conditioned on lowRes
// (N, 3, h, w) in [-1, 1], upsampled bilinearly to x's size as
// SuperResModel.forward does (F.interpolate, align_corners=False).
func (m *Net[B]) PredictLowRes(ctx context.Context, x diffusion.Batch, t []float64, y []int, lowRes diffusion.Batch) (diffusion.Batch, error) {
	if m.a.kind != SuperRes {
		return diffusion.Batch{}, fmt.Errorf("adm: PredictLowRes on a %s (not a SuperResModel)", m.a.kind)
	}
	return m.predict(ctx, x, t, y, &lowRes)
}

func (m *Net[B]) predict(ctx context.Context, x diffusion.Batch, t []float64, y []int, lowRes *diffusion.Batch) (diffusion.Batch, error) {
	if err := ctx.Err(); err != nil {
		return diffusion.Batch{}, err
	}
	in, err := m.inputs(x, t, y, lowRes)
	if err != nil {
		return diffusion.Batch{}, err
	}
	out := diffusion.NewBatch(x.N, m.a.out, x.H, x.W)
	if err := m.nn.Forward(ctx, Key(x), in, out.Data); err != nil {
		return diffusion.Batch{}, fmt.Errorf("adm: %w", err)
	}
	return out, nil
}

// WithLowRes binds a SuperRes model to its low-resolution images (N, 3,
// h, w) for a sampler: the result's Predict calls PredictLowRes with them
// (the batch size must match).
func (m *Net[B]) WithLowRes(lowRes diffusion.Batch) (diffusion.Model, error) {
	if m.a.kind != SuperRes {
		return nil, fmt.Errorf("adm: WithLowRes on a %s (not a SuperResModel)", m.a.kind)
	}
	if err := lowRes.Check(); err != nil {
		return nil, fmt.Errorf("adm: low_res: %w", err)
	}
	return lowResModel[B]{m, lowRes}, nil
}

type lowResModel[B any] struct {
	m   *Net[B]
	low diffusion.Batch
}

func (l lowResModel[B]) Predict(ctx context.Context, x diffusion.Batch, t []float64, y []int) (diffusion.Batch, error) {
	return l.m.PredictLowRes(ctx, x, t, y, l.low)
}

// Logits runs a classifier on x_t at timesteps t and returns its logits
// (N, NumClasses), row-major.
func (m *Net[B]) Logits(ctx context.Context, x diffusion.Batch, t []float64) ([]float32, error) {
	if m.a.kind != Classifier {
		return nil, fmt.Errorf("adm: Logits on a %s (not a classifier)", m.a.kind)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in, err := m.inputs(x, t, nil, nil)
	if err != nil {
		return nil, err
	}
	out := make([]float32, x.N*m.a.out)
	if err := m.nn.Forward(ctx, Key(x), in, out); err != nil {
		return nil, fmt.Errorf("adm: %w", err)
	}
	return out, nil
}

// timestepEmbedding writes guided-diffusion's timestep_embedding(t, dim)
// into dst (N, dim): with half = dim/2 and freq_i = exp(-ln(10000) i /
// half), row n is [cos(t_n freq), sin(t_n freq)] (cosine first), zero
// padded for odd dim. Defined for real t; the frequencies and arguments
// are float32 as in PyTorch.
func timestepEmbedding(dst []float32, t []float64, dim int) {
	half := dim / 2
	clear(dst)
	lnp := float32(-math.Log(10000))
	for i := 0; i < half; i++ {
		freq := float32(math.Exp(float64(lnp * float32(i) / float32(half))))
		for n, tv := range t {
			arg := float64(float32(tv) * freq)
			dst[n*dim+i], dst[n*dim+half+i] = float32(math.Cos(arg)), float32(math.Sin(arg))
		}
	}
}

// Bilinear resizes x to (h, w) as PyTorch's F.interpolate(x, (h, w),
// mode="bilinear", align_corners=False): source coordinate (i + 0.5) *
// in/out - 0.5, clamped at 0, linear between the two neighbours (the
// upsampling of SuperResModel.forward).
func Bilinear(x diffusion.Batch, h, w int) diffusion.Batch {
	out := diffusion.NewBatch(x.N, x.C, h, w)
	type tap struct {
		i0, i1 int
		l1     float32
	}
	taps := func(in, outN int) []tap {
		ts := make([]tap, outN)
		scale := float32(in) / float32(outN)
		for i := range ts {
			src := (float32(i)+0.5)*scale - 0.5
			if src < 0 {
				src = 0
			}
			i0 := int(src)
			i1 := i0
			if i0 < in-1 {
				i1 = i0 + 1
			}
			ts[i] = tap{i0, i1, src - float32(i0)}
		}
		return ts
	}
	th, tw := taps(x.H, h), taps(x.W, w)
	for p := 0; p < x.N*x.C; p++ {
		src := x.Data[p*x.H*x.W : (p+1)*x.H*x.W]
		dst := out.Data[p*h*w : (p+1)*h*w]
		for i, a := range th {
			r0, r1 := src[a.i0*x.W:(a.i0+1)*x.W], src[a.i1*x.W:(a.i1+1)*x.W]
			for j, b := range tw {
				top := (1-b.l1)*r0[b.i0] + b.l1*r0[b.i1]
				bot := (1-b.l1)*r1[b.i0] + b.l1*r1[b.i1]
				dst[i*w+j] = (1-a.l1)*top + a.l1*bot
			}
		}
	}
	return out
}
