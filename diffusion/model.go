package diffusion

import (
	"context"
	"fmt"
	"math"
)

// Batch is a batch of images or model outputs, float32 in (N, C, H, W)
// order, row-major. Images are in [-1, 1].
type Batch struct {
	N, C, H, W int
	Data       []float32 // len N*C*H*W
}

// NewBatch returns a zeroed batch of the given shape.
func NewBatch(n, c, h, w int) Batch {
	return Batch{N: n, C: c, H: h, W: w, Data: make([]float32, n*c*h*w)}
}

// Len is N*C*H*W.
func (b Batch) Len() int { return b.N * b.C * b.H * b.W }

// Check reports a batch with a size below 1, a shape whose N*C*H*W
// overflows int, or a Data length that does not match its shape.
func (b Batch) Check() error {
	if b.N < 1 || b.C < 1 || b.H < 1 || b.W < 1 {
		return fmt.Errorf("diffusion: batch shape (%d,%d,%d,%d): every size must be >= 1", b.N, b.C, b.H, b.W)
	}
	n := 1
	for _, d := range [...]int{b.N, b.C, b.H, b.W} {
		if d > math.MaxInt/n {
			return fmt.Errorf("diffusion: batch shape (%d,%d,%d,%d): N*C*H*W overflows int", b.N, b.C, b.H, b.W)
		}
		n *= d
	}
	if len(b.Data) != b.Len() {
		return fmt.Errorf("diffusion: batch shape (%d,%d,%d,%d) needs %d values, have %d", b.N, b.C, b.H, b.W, b.Len(), len(b.Data))
	}
	return nil
}

// Model is the network seen by the diffusion math, as improved-diffusion's
// model(x, t, **kwargs): it maps x_t (N, C, H, W) at 0-indexed timesteps t
// (len N) with optional class labels y (len N, or nil for an unconditional
// model) to its raw output (N, C or 2C, H, W): epsilon, x_0 or v, followed
// by the variance channels when the variance is learned. A label of -1 asks
// a class-conditional model for its unconditional ("null class") output,
// used by classifier-free guidance. Timesteps are those of the model's
// training schedule (not respaced indices), 0-indexed, and real-valued:
// the samplers of this package call the model at integer timesteps, the
// Euler-family solvers (Karras et al. 2022) at fractional ones, where the
// sinusoidal embedding of the network is evaluated at the real t.
type Model interface {
	Predict(ctx context.Context, x Batch, t []float64, y []int) (Batch, error)
}
