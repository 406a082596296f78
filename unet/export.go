package unet

import (
	"fmt"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/diffusion"
)

// Graph exposes one of the model's built Gorgonia graphs to an external
// executor such as package gexec, which runs the same ops on a GPU. The
// parameter nodes' values share the model's memory (Model.Params order).
type Graph struct {
	// G is the expression graph.
	G *G.ExprGraph
	// X (N, in_channels, H, W), TEmb (N, block_out_channels[0]) and
	// ClassOneHot (N, num_class_embeds; nil for an unconditional model)
	// are the data inputs; Model.EncodeInputs fills them.
	X, TEmb, ClassOneHot *G.Node
	// Out is the network output (N, out_channels, H, W).
	Out *G.Node
	// Params are the parameter leaves, in Model.Params order.
	Params []*G.Node
	// Loss (a training graph's scalar loss, computed by the function
	// given to SetLoss through the ExternalLoss op) and Grads (dLoss /
	// dParams[i]) are nil for an inference graph.
	Loss  *G.Node
	Grads []*G.Node
	// DropoutMasks are input leaves of 0 and 1/(1-dropout) values, one per
	// ResNet block of a training graph with dropout > 0; fill them with
	// Model.FillDropoutMasks before each step.
	DropoutMasks []*G.Node

	gr *graph
}

// SetLoss sets the function a training graph's ExternalLoss node calls with
// the network output; it must write dL/dout into dout and return L.
func (g *Graph) SetLoss(fn func(out, dout []float32) (float64, error)) {
	if g.gr != nil {
		g.gr.lossFn = fn
	}
}

// Graph returns the model's graph for batch n at h x w (a training graph,
// with loss, gradients and dropout masks, when train), building it on
// first use. Model.Predict and Model.Step use the same graphs, so do not
// call them while an executor runs this graph's nodes through their Do.
func (m *Model) Graph(n, h, w int, train bool) (*Graph, error) {
	levels := len(m.cfg.BlockOutChannels)
	if f := 1 << (levels - 1); n < 1 || h < f || w < f || h%f != 0 || w%f != 0 {
		return nil, fmt.Errorf("unet: Graph(%d, %d, %d): need n >= 1 and h, w positive multiples of %d", n, h, w, f)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	gr, err := m.graphFor(graphKey{n, h, w, train})
	if err != nil {
		return nil, err
	}
	return &Graph{G: gr.g, X: gr.xNode, TEmb: gr.tembNode, ClassOneHot: gr.ohNode, Out: gr.out,
		Params: gr.paramNodes, Loss: gr.lossNode, Grads: gr.gradNodes, DropoutMasks: gr.dropNodes, gr: gr}, nil
}

// Inputs are the host values of a Graph's data inputs.
type Inputs struct {
	X, TEmb, ClassOneHot []float32 // ClassOneHot is nil for an unconditional model
}

// EncodeInputs validates (x, t, y) as Predict does and returns the values
// of the graph inputs X, TEmb and ClassOneHot.
func (m *Model) EncodeInputs(x diffusion.Batch, t, y []int) (Inputs, error) {
	if err := m.checkInput(x, t, y); err != nil {
		return Inputs{}, err
	}
	in := Inputs{X: make([]float32, len(x.Data)), TEmb: make([]float32, x.N*m.cfg.BlockOutChannels[0])}
	if k := m.cfg.numClasses(); k > 0 {
		in.ClassOneHot = make([]float32, x.N*k)
	}
	m.encode(in.X, in.TEmb, in.ClassOneHot, x, t, y)
	return in, nil
}

// FillDropoutMasks draws the dropout masks of one training step from seed
// (0 with probability dropout, else 1/(1-dropout)), in Graph.DropoutMasks
// order; Step draws the same masks for the same seed.
func (m *Model) FillDropoutMasks(seed uint64, masks [][]float32) {
	r := rand.New(rand.NewPCG(seed, 0x64726f70))
	p := m.cfg.Dropout
	keep := float32(1 / (1 - p))
	for _, mask := range masks {
		for i := range mask {
			if r.Float64() < p {
				mask[i] = 0
			} else {
				mask[i] = keep
			}
		}
	}
}
