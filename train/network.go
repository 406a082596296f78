package train

import (
	"context"

	"github.com/ddpm-go/ddpm/diffusion"
)

// Param is one trainable tensor, named by its diffusers state_dict key.
// Value and Grad share the network's memory: an optimiser updates Value in
// place, and Grad holds the gradient of the last Step.
type Param struct {
	Name  string
	Shape []int
	Value []float32
	Grad  []float32
}

// LossFunc computes a training loss from the network output out (N, C', H, W)
// and writes dL/dout into dout (same length as out.Data). It returns the
// scalar loss (the mean over the batch).
type LossFunc func(out diffusion.Batch, dout []float32) (float64, error)

// Network is a model that can be trained: Step runs the forward pass on x_t
// at timesteps t with labels y (nil when unconditional, -1 for the null
// class), calls loss on the output, then runs the backward pass so that
// every Param.Grad holds dL/dparam (overwritten, not accumulated).
// dropoutSeed seeds the dropout masks of this step.
type Network interface {
	diffusion.Model
	Step(ctx context.Context, x diffusion.Batch, t []int, y []int, dropoutSeed uint64, loss LossFunc) (float64, error)
	Params() []Param
}
