// Package kernels defines the backend interface Ops (every numeric
// operation the UNet, its gradients, the optimiser and the sampler update
// need) and CPU, its host implementation; package cuda implements it on
// the GPU.
//
// Contracts shared by every implementation:
//
//   - Layouts are row-major. Images are (N, C, H, W); conv weights are
//     (K, C, R, S); Linear weights are (Out, In) as in PyTorch's nn.Linear;
//     attention tensors are (B, T, Heads*HeadDim) with head h in columns
//     h*HeadDim..(h+1)*HeadDim-1.
//   - Arguments go outputs first, then inputs, then dimensions.
//   - Inputs are never modified. Outputs are overwritten, never accumulated
//     into (their old contents, even NaN, are ignored), except for the
//     in-place ops AdamW, EMA and Axpby (with beta != 0), which say so.
//   - Outputs do not alias inputs unless the method's doc allows it
//     (Add, Mul, Clamp, SiLU, SiLUBackward, AddChannelBias allow y == x).
//   - Optional buffers (a bias, a gradient nobody needs) are nil on the CPU.
//   - Errors (bad dimensions, short buffers, ids outside a table) are not
//     panics: the op does nothing and Sync returns the first error.
//
// CPU runs convolutions as im2col + GEMM per image (1x1 convolutions as a
// direct GEMM), attention as GEMMs around a row softmax, and GroupNorm
// fused with SiLU, with the work split over a fixed number of goroutines
// and the GEMM in the BLAS that package blas loads at run time (oneDNN,
// OpenBLAS or pure-Go gonum) running one thread per goroutine. Scratch
// memory is pooled inside the CPU value, so steady-state calls do not
// allocate large buffers. The reference twins of every op, plain float64
// loops with their formulas, live in ref_test.go.
package kernels
