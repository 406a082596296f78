package nn

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/gexec"
	"github.com/ddpm-go/ddpm/kernels"
)

// Key identifies one graph shape of a network: the batch size, the image
// height and width, and a sequence length for networks that read text (0
// otherwise).
type Key struct{ N, H, W, L int }

// BuildFunc builds a network's graph for shape k into b and returns its
// output node. It is called once per shape and mode (forward, training),
// and must declare the same parameters every time.
type BuildFunc[B any] func(b *Builder[B], k Key) (*G.Node, error)

// maxPrograms is how many compiled graphs a Net keeps: each holds the
// activations of its shape, and servers see many batch sizes.
const maxPrograms = 6

// Net is a network on one backend: its parameters in one flat device
// buffer (and, once trained, their gradients in another), and its graphs
// compiled by package gexec, one per shape and mode, built on first use
// and kept for the six most recent. It is the single engine behind every
// model and device: the same graph and ops run on kernels.CPU and on a
// GPU. A Net is safe for concurrent use (calls are serialised).
type Net[B any] struct {
	ops    kernels.Ops[B]
	build  BuildFunc[B]
	set    *paramSet
	params B // flat, set.total values
	grads  B // flat, allocated by the first TrainStep
	hasG   bool
	state  State
	mu     sync.Mutex
	progs  map[progKey]*program[B]
	uses   uint64
	last   *program[B] // of the last TrainStep
}

type progKey struct {
	Key
	train bool
	loss  kernels.DiffusionLossDims
	vjp   string // VJP: the inputs to differentiate (comma-joined), "+" prefix adds the parameters
}

// program is one compiled graph with its named inputs and outputs.
type program[B any] struct {
	p       *gexec.Program[B]
	inputs  map[string]*G.Node
	out     *G.Node
	loss    *G.Node
	inGrads []*G.Node // VJP: d/d inputs, in the order asked
	lastUse uint64
}

// New builds the network's graph for the shape probe (which declares
// every parameter, initialised from seed as the Init kinds say), then
// allocates the parameters on ops and uploads the initial values.
func New[B any](ops kernels.Ops[B], build BuildFunc[B], probe Key, seed uint64) (*Net[B], error) {
	r := rand.New(rand.NewPCG(seed, 0x756e6574))
	n := &Net[B]{ops: ops, build: build, progs: map[progKey]*program[B]{},
		set: &paramSet{byName: map[string]int{}, open: true, draw: drawer(r.Float64, r.NormFloat64)}}
	b := n.builder(false, false)
	if _, err := build(b, probe); err != nil {
		return nil, err
	}
	if err := b.Err(); err != nil {
		return nil, err
	}
	if n.set.total == 0 {
		return nil, fmt.Errorf("nn: the network declares no parameters")
	}
	n.set.open = false
	n.params = ops.Alloc(n.set.total)
	ops.Upload(n.params, n.set.init)
	n.set.init = nil
	if err := ops.Sync(); err != nil {
		return nil, fmt.Errorf("nn: allocate %d parameters on %s: %w", n.set.total, ops.Name(), err)
	}
	return n, nil
}

// builder starts a graph: a training graph when train, and one that may
// use fused inference ops when fused (see Builder.Fused).
func (n *Net[B]) builder(train, fused bool) *Builder[B] {
	return &Builder[B]{g: G.NewGraph(), set: n.set, state: &n.state, train: train, fused: fused,
		inputs: map[string]*G.Node{}, params: map[string]*G.Node{}}
}

// Ops is the backend the network runs on.
func (n *Net[B]) Ops() kernels.Ops[B] { return n.ops }

// Params lists the parameters in declaration order (their order in the
// flat buffers).
func (n *Net[B]) Params() []Param {
	out := make([]Param, len(n.set.list))
	copy(out, n.set.list)
	return out
}

// NumParams is the number of parameter values.
func (n *Net[B]) NumParams() int { return n.set.total }

// ParamBuffer is the flat parameter buffer on the device: the optimiser
// updates it in place. Do not use it while another call runs.
func (n *Net[B]) ParamBuffer() B { return n.params }

// GradBuffer is the flat gradient buffer the last TrainStep wrote (same
// layout as the parameters); ok is false before the first TrainStep.
func (n *Net[B]) GradBuffer() (g B, ok bool) { return n.grads, n.hasG }

// ReadParams downloads the parameters into dst (NumParams values).
func (n *Net[B]) ReadParams(dst []float32) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(dst) != n.set.total {
		return fmt.Errorf("nn: ReadParams: %d values, the network has %d", len(dst), n.set.total)
	}
	n.ops.Download(dst, n.params)
	return n.ops.Sync()
}

// WriteParams uploads src (NumParams values) as the parameters.
func (n *Net[B]) WriteParams(src []float32) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(src) != n.set.total {
		return fmt.Errorf("nn: WriteParams: %d values, the network has %d", len(src), n.set.total)
	}
	n.ops.Upload(n.params, src)
	return n.ops.Sync()
}

// program returns the compiled graph for pk, building it on first use.
func (n *Net[B]) program(pk progKey) (*program[B], error) {
	n.uses++
	if p, ok := n.progs[pk]; ok {
		p.lastUse = n.uses
		return p, nil
	}
	b := n.builder(pk.train, !pk.train && pk.vjp == "")
	out, err := n.build(b, pk.Key)
	if err == nil {
		err = b.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("nn: build graph %+v: %w", pk.Key, err)
	}
	pr := &program[B]{inputs: b.inputs, out: out}
	outputs := []*G.Node{out}
	var gradNodes []*G.Node
	paramNodes := make([]*G.Node, len(n.set.list))
	for i, p := range n.set.list {
		paramNodes[i] = b.params[p.Name]
		if paramNodes[i] == nil {
			return nil, fmt.Errorf("nn: graph %+v does not use parameter %s", pk.Key, p.Name)
		}
	}
	withParams := pk.train
	if pk.train {
		pr.loss = addDiffusionLoss(b, out, pk.loss)
	}
	var inNodes []*G.Node
	if pk.vjp != "" {
		names := pk.vjp
		if withParams = names[0] == '+'; withParams {
			names = names[1:]
		}
		pr.loss = addVJPSeed(b, out)
		for _, name := range strings.Split(names, ",") {
			if name == "" {
				continue
			}
			in, ok := b.inputs[name]
			if !ok {
				return nil, fmt.Errorf("nn: VJP with respect to %s: the graph has no such input", name)
			}
			inNodes = append(inNodes, in)
		}
	}
	if pk.train || pk.vjp != "" {
		if err := b.Err(); err != nil {
			return nil, fmt.Errorf("nn: loss for graph %+v: %w", pk.Key, err)
		}
		wrt := inNodes
		if withParams {
			wrt = append(slices.Clone(inNodes), paramNodes...)
		}
		all, err := gexec.Grad[B](pr.loss, wrt...)
		if err != nil {
			return nil, err
		}
		pr.inGrads = all[:len(inNodes)]
		outputs = append([]*G.Node{pr.loss}, all...)
		if withParams {
			gradNodes = all[len(inNodes):]
		}
	}
	p, err := gexec.Compile[B](n.ops, outputs, gexec.Options{})
	if err != nil {
		return nil, fmt.Errorf("nn: compile graph %+v for %s: %w", pk.Key, n.ops.Name(), err)
	}
	for i, prm := range n.set.list {
		if err := p.Bind(paramNodes[i], n.ops.Slice(n.params, prm.Offset, prm.Size)); err != nil {
			p.Close()
			return nil, err
		}
	}
	if gradNodes != nil {
		if !n.hasG {
			n.grads, n.hasG = n.ops.Alloc(n.set.total), true
		}
		for i, prm := range n.set.list {
			if err := p.Bind(gradNodes[i], n.ops.Slice(n.grads, prm.Offset, prm.Size)); err != nil {
				p.Close()
				return nil, err
			}
		}
	}
	pr.p = p
	for len(n.progs) >= maxPrograms {
		var oldest progKey
		first := true
		for k, q := range n.progs {
			if first || q.lastUse < n.progs[oldest].lastUse {
				oldest, first = k, false
			}
		}
		n.progs[oldest].p.Close()
		delete(n.progs, oldest)
	}
	pr.lastUse = n.uses
	n.progs[pk] = pr
	return pr, nil
}

// setInputs uploads the named inputs of a program; every input the graph
// declares must be given.
func (pr *program[B]) setInputs(in map[string][]float32) error {
	for name, node := range pr.inputs {
		v, ok := in[name]
		if !ok {
			return fmt.Errorf("nn: input %s %v not given", name, node.Shape())
		}
		if err := pr.p.SetInput(node, v); err != nil {
			return err
		}
	}
	return nil
}

// Forward runs the network on the named inputs of shape k and writes its
// output into out.
func (n *Net[B]) Forward(ctx context.Context, k Key, in map[string][]float32, out []float32) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	pr, err := n.program(progKey{Key: k})
	if err != nil {
		return err
	}
	if err := pr.setInputs(in); err != nil {
		return err
	}
	if err := pr.p.Run(ctx); err != nil {
		return fmt.Errorf("nn: forward on %s: %w", n.ops.Name(), err)
	}
	return pr.p.Read(pr.out, out)
}

// TrainInputs are the data of one training step: the network's named
// inputs, the diffusion loss's shape and its inputs x0, noise (N, C, H,
// W) and coefficient rows (see LossCoefRows), and the step's dropout
// State.
type TrainInputs struct {
	Net   map[string][]float32
	Loss  kernels.DiffusionLossDims
	X0    []float32
	Noise []float32
	Coef  []float32
	State State
}

// TrainStep queues a training step on the device: forward, the diffusion
// loss, backward, with the gradients written into GradBuffer. It does not
// wait for the device: queue the optimiser after it and Sync once. The
// loss and its per-example terms stay on the device (LossBuffers).
func (n *Net[B]) TrainStep(ctx context.Context, k Key, in TrainInputs) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	pr, err := n.program(progKey{Key: k, train: true, loss: in.Loss})
	if err != nil {
		return err
	}
	all := map[string][]float32{"loss.x0": in.X0, "loss.noise": in.Noise, "loss.coef": in.Coef}
	for name, v := range in.Net {
		all[name] = v
	}
	if err := pr.setInputs(all); err != nil {
		return err
	}
	n.state = in.State
	if err := pr.p.Queue(ctx); err != nil {
		return fmt.Errorf("nn: training step on %s: %w", n.ops.Name(), err)
	}
	n.last = pr
	return nil
}

// VJP runs the network on the named inputs of shape k and back-propagates
// seed (dcost/dout, shaped like the output) through it: it returns
// dcost/d input for each input named in wrt, and when params is true it
// also writes dcost/d parameters into GradBuffer. It is the
// vector-Jacobian product behind classifier guidance (the gradient of a
// classifier's log-probability with respect to its input) and the
// gradient checks of every block.
func (n *Net[B]) VJP(ctx context.Context, k Key, in map[string][]float32, seed []float32, wrt []string, params bool) (map[string][]float32, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	spec := strings.Join(wrt, ",")
	if params {
		spec = "+" + spec
	}
	if spec == "" {
		return nil, fmt.Errorf("nn: VJP with respect to nothing")
	}
	pr, err := n.program(progKey{Key: k, vjp: spec})
	if err != nil {
		return nil, err
	}
	all := map[string][]float32{"vjp.seed": seed}
	for name, v := range in {
		all[name] = v
	}
	if err := pr.setInputs(all); err != nil {
		return nil, err
	}
	n.state = State{}
	if err := pr.p.Run(ctx); err != nil {
		return nil, fmt.Errorf("nn: VJP on %s: %w", n.ops.Name(), err)
	}
	out := make(map[string][]float32, len(wrt))
	for i, name := range wrt {
		g := pr.inGrads[i]
		v := make([]float32, max(1, g.Shape().TotalSize()))
		if err := pr.p.Read(g, v); err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

// LossBuffers are the device buffers of the last TrainStep's batch loss
// (1 value) and per-example terms (N x (loss, mse, vb)); valid until the
// next call.
func (n *Net[B]) LossBuffers() (loss, terms B, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.last == nil {
		return loss, terms, fmt.Errorf("nn: LossBuffers before any TrainStep")
	}
	if loss, err = n.last.p.Buffer(n.last.loss); err != nil {
		return loss, terms, err
	}
	terms, ok := n.last.p.Saved(n.last.loss, "terms")
	if !ok {
		return loss, terms, fmt.Errorf("nn: the loss has not run")
	}
	return loss, terms, nil
}

// Close frees the device memory. The Net must not be used afterwards.
func (n *Net[B]) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.progs {
		p.p.Close()
	}
	n.progs = nil
	n.ops.Free(n.params)
	if n.hasG {
		n.ops.Free(n.grads)
	}
	n.last = nil
}

// OutputSize is the number of values of the output for shape k (building
// the graph if needed).
func (n *Net[B]) OutputSize(k Key) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	pr, err := n.program(progKey{Key: k})
	if err != nil {
		return 0, err
	}
	return max(1, pr.out.Shape().TotalSize()), nil
}

// Info describes a network to the code that trains or serves it, without
// that code knowing the architecture.
type Info struct {
	// Config is the network's configuration as JSON (for diffusers models
	// the UNet2DModel config.json), stored with checkpoints.
	Config []byte
	// InChannels and OutChannels are the image and output channels
	// (OutChannels is 2*InChannels for a learned variance).
	InChannels, OutChannels int
	// Size is the image height and width the network was made for.
	Size int
	// Classes is the number of class embeddings (0: unconditional);
	// NullClass is the index meaning "no label" (classifier-free
	// guidance), or -1 when there is none.
	Classes, NullClass int
}

// ProfileForward runs the forward pass of shape k once on the named inputs,
// waiting for the device after every op, and returns the time per kind of
// op (see gexec.Program.Profile).
func (n *Net[B]) ProfileForward(ctx context.Context, k Key, in map[string][]float32) ([]gexec.OpTime, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	pr, err := n.program(progKey{Key: k})
	if err != nil {
		return nil, err
	}
	if err := pr.setInputs(in); err != nil {
		return nil, err
	}
	return pr.p.Profile(ctx)
}
