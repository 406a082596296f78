package unet

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/kernels"
	"github.com/ddpm-go/ddpm/train"
)

// Model is diffusers' UNet2DModel as a Gorgonia graph. It implements
// diffusion.Model (Predict) and train.Network (Step, Params). Graphs are
// built once per input shape and the six most recently used are kept;
// all graphs share the parameter tensors. A Model is safe for concurrent
// use (calls are serialised).
type Model struct {
	cfg    Config
	cpu    *kernels.CPU
	mu     sync.Mutex
	params []*param          // in creation order
	byName map[string]*param // diffusers state_dict key -> param
	graphs map[graphKey]*graph
	uses   uint64     // graphFor calls, for evicting the least recently used graph
	init   *rand.Rand // parameter initialisation while the first graph is built
}

// param is one parameter tensor, shared by every graph of the model.
type param struct {
	name  string
	shape tensor.Shape
	t     *tensor.Dense
	grad  []float32
}

type graphKey struct {
	n, h, w int
	train   bool
}

// graph is one built graph with its machine and input tensors.
type graph struct {
	g                *G.ExprGraph
	x, temb, onehot  *tensor.Dense // inputs, overwritten before each run
	out              *G.Node
	xNode, tembNode  *G.Node
	ohNode, lossNode *G.Node
	vm               G.VM
	loss             *ExternalLoss
	lossFn           func(out, dout []float32) (float64, error)
	gradNodes        []*G.Node    // per Model.params entry
	dropMasks        []*[]float32 // backing of dropNodes' values
	dropNodes        []*G.Node
	paramNodes       []*G.Node
	nodeOf           map[string]*G.Node
	classes          int
	lastUse          uint64
}

// New returns a model with PyTorch's default initialisation (uniform in
// +-1/sqrt(fan_in) for convolutions and linear layers, ones and zeros for
// norms, N(0, 1) for the class embedding), drawn from seed. The ops run
// on cpu.
func New(cfg Config, cpu *kernels.CPU, seed uint64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cpu == nil {
		return nil, fmt.Errorf("unet: New: nil kernels.CPU")
	}
	m := &Model{cfg: cfg, cpu: cpu, byName: map[string]*param{}, graphs: map[graphKey]*graph{},
		init: rand.New(rand.NewPCG(seed, 0x756e6574))}
	// Building the smallest graph creates every parameter.
	if _, err := m.graphFor(graphKey{1, cfg.SampleSize, cfg.SampleSize, false}); err != nil {
		return nil, err
	}
	m.init = nil
	return m, nil
}

// Config returns the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// NumParams is the number of trainable values.
func (m *Model) NumParams() int {
	n := 0
	for _, p := range m.params {
		n += p.shape.TotalSize()
	}
	return n
}

// Shapes maps every parameter name to its shape.
func (m *Model) Shapes() map[string][]int {
	s := make(map[string][]int, len(m.params))
	for _, p := range m.params {
		s[p.name] = []int(p.shape.Clone())
	}
	return s
}

// Params returns the parameters in a fixed order; Value shares the model's
// memory and Grad holds the gradient of the last Step.
func (m *Model) Params() []train.Param {
	out := make([]train.Param, len(m.params))
	for i, p := range m.params {
		if p.grad == nil {
			p.grad = make([]float32, p.shape.TotalSize())
		}
		out[i] = train.Param{Name: p.name, Shape: []int(p.shape.Clone()), Value: p.t.Data().([]float32), Grad: p.grad}
	}
	return out
}

// checkInput validates a batch, its timesteps and labels against the model.
func (m *Model) checkInput(x diffusion.Batch, t, y []int) error {
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
		if v < 0 {
			return fmt.Errorf("unet: timesteps[%d] = %d: must be >= 0", i, v)
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

// setInputs writes x, the timestep embedding and the one-hot labels into
// the graph's input tensors.
func (m *Model) setInputs(gr *graph, x diffusion.Batch, t, y []int) {
	var oh []float32
	if gr.onehot != nil {
		oh = gr.onehot.Data().([]float32)
	}
	m.encode(gr.x.Data().([]float32), gr.temb.Data().([]float32), oh, x, t, y)
}

// encode writes the graph inputs for (x, t, y): x (centred when the config
// says so), the sinusoidal timestep embedding and the one-hot labels.
func (m *Model) encode(xd, temb, oh []float32, x diffusion.Batch, t, y []int) {
	copy(xd, x.Data)
	if m.cfg.CenterInputSample {
		for i, v := range xd {
			xd[i] = 2*v - 1
		}
	}
	timestepEmbedding(temb, t, m.cfg.BlockOutChannels[0], m.cfg.FlipSinToCos, m.cfg.FreqShift)
	if oh != nil {
		k := m.cfg.numClasses()
		clear(oh)
		for i, v := range y {
			if v == -1 {
				v = *m.cfg.NullClass
			}
			oh[i*k+v] = 1
		}
	}
}

// Predict runs the network on x_t at timesteps t with labels y (nil for an
// unconditional model; -1 selects the null class of a model trained for
// classifier-free guidance) and returns its output (N, out_channels, H, W).
func (m *Model) Predict(ctx context.Context, x diffusion.Batch, t []int, y []int) (diffusion.Batch, error) {
	if err := ctx.Err(); err != nil {
		return diffusion.Batch{}, err
	}
	if err := m.checkInput(x, t, y); err != nil {
		return diffusion.Batch{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	gr, err := m.graphFor(graphKey{x.N, x.H, x.W, false})
	if err != nil {
		return diffusion.Batch{}, err
	}
	m.setInputs(gr, x, t, y)
	defer gr.vm.Reset()
	if err := gr.vm.RunAll(); err != nil {
		return diffusion.Batch{}, fmt.Errorf("unet: forward: %w", err)
	}
	out := diffusion.NewBatch(x.N, m.cfg.OutChannels, x.H, x.W)
	copy(out.Data, floats(gr.out.Value()))
	return out, nil
}

// Step runs the forward pass, hands the output to loss, then runs the
// backward pass, leaving dL/dparam in each Params()[i].Grad. dropoutSeed
// draws the dropout masks (when the config's dropout is > 0).
func (m *Model) Step(ctx context.Context, x diffusion.Batch, t []int, y []int, dropoutSeed uint64, loss train.LossFunc) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := m.checkInput(x, t, y); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	gr, err := m.graphFor(graphKey{x.N, x.H, x.W, true})
	if err != nil {
		return 0, err
	}
	m.setInputs(gr, x, t, y)
	if len(gr.dropMasks) > 0 {
		masks := make([][]float32, len(gr.dropMasks))
		for i, mp := range gr.dropMasks {
			masks[i] = *mp
		}
		m.FillDropoutMasks(dropoutSeed, masks)
	}
	outB := diffusion.Batch{N: x.N, C: m.cfg.OutChannels, H: x.H, W: x.W}
	var lossVal float64
	gr.lossFn = func(out, dout []float32) (float64, error) {
		outB.Data = out
		l, err := loss(outB, dout)
		lossVal = l
		return l, err
	}
	defer gr.vm.Reset()
	if err := gr.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("unet: training step: %w", err)
	}
	for i, p := range m.params {
		if p.grad == nil {
			p.grad = make([]float32, p.shape.TotalSize())
		}
		copy(p.grad, floats(gr.gradNodes[i].Value()))
	}
	return lossVal, nil
}

// timestepEmbedding writes diffusers' get_timestep_embedding for t into
// dst (N, dim): for i < half = dim/2, freq_i = exp(-ln(10000) * i /
// (half - shift)), and row n is [sin(t_n freq), cos(t_n freq)] (cos first
// when flip), zero-padded for odd dim. Computed in float32 steps as
// diffusers does, so the embedding matches it bit for bit.
func timestepEmbedding(dst []float32, t []int, dim int, flip bool, shift float64) {
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
