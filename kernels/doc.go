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
//     (Add, Mul, Clamp, SiLU, SiLUBackward, GELU, GELUBackward,
//     AddChannelBias allow y == x).
//   - Optional buffers (a bias, a gradient nobody needs) are nil on the CPU.
//   - Errors (bad dimensions, short buffers, ids outside a table) are not
//     panics: the op does nothing and Sync returns the first error.
//
// # CPU
//
// NewCPU(CPUOptions{BLAS, Threads, Conv}) builds the host backend. Work is
// split over Threads goroutines (default GOMAXPROCS): the caller's and a
// team of helpers that spin briefly for their next piece of work instead
// of parking (team.go). Every BLAS or oneDNN call inside runs one thread
// (OpenMP teams only where a convolution has fewer pieces than threads),
// so goroutines and library threads never oversubscribe the cores:
//
//   - Convolutions: with oneDNN (libdnnl.so.2, chosen by BLAS "auto" or
//     "dnnl", or Conv "dnnl") through its convolution primitives (JIT
//     direct kernels, the ones PyTorch uses here), the batch split into one
//     chunk per thread (chunks of two images taken in turn for forward
//     convolutions with small weights), each goroutine on its own
//     primitives with one OpenMP thread;
//     NCHW/OIHW buffers are reordered to the primitives' blocked layouts
//     and back inside the call (see conv_dnnl.go for the split rules).
//     Otherwise im2col + GEMM per image (1x1 convolutions as a direct
//     GEMM), images split over the threads.
//   - Linear and attention: GEMMs (attention as q k^T, a row softmax and
//     P v per batch item and head), split over the threads.
//   - GroupNorm: two-pass statistics per (n, group), normalisation, affine
//     and SiLU fused in one pass; the backward in two passes.
//   - SiLU, softmax and the GroupNorm loops use AVX-512 (vec512_amd64.s)
//     or AVX2+FMA (vec_amd64.s) assembly when the CPU has it, with
//     plain-Go twins otherwise; the exponential is a float32 polynomial
//     (expf), about 1 ulp.
//
// For sampling and serving, CPUOptions{ConstWeights: true} keeps oneDNN's
// reordered copy of every conv weight buffer instead of redoing it per
// call (up to 2x on one-image convs at 8x8 and 4x4), one copy shared by
// the threads, and runs 3x3 convolutions on oneDNN's Winograd kernels
// where they measured faster (winogradFaster; about 1.5x on the DDPM
// CIFAR-10 UNet's convolutions); never when training. CPUOptions{BF16:
// true} (with ConstWeights, on CPUs with AVX512_BF16 or AMX) runs the
// forward convolutions in bf16 with fp32 accumulation: oneDNN's direct
// bf16 kernels, or, for 3x3 convolutions with at least 128 channels in
// and out (winoFaster), this package's own Winograd F(2x2, 3x3) kernels
// (winograd.go): AVX-512 transforms around oneDNN's bf16 GEMM, since
// oneDNN 2.6 has no bf16 Winograd. Linear layers with at least 64 rows
// (attention's projections) then also multiply in bf16 (bf16.go).
//
// # Fused inference kernels
//
// Fused is the optional interface of fused forward-only kernels; the CPU
// implements it, and package nn's forward-only graphs call it where a
// backend has it and the unfused Ops sequence otherwise:
//
//   - GroupNormTokens and LinearToChannels: an attention block's norm
//     written in token order for its projections (the same tiles and
//     transposes as below, rows C apart), and its output projection
//     straight back to the feature map, a GEMM that reads the tokens
//     transposed, the residual added: no transposed copies.
//   - GroupNormConv2D: a resnet block's GroupNorm (with the time-embedding
//     bias), SiLU, convolution and skip connection. With oneDNN the norm
//     writes the convolution's nChw16c source itself (float32, or bf16 in
//     bf16 mode) through a 16x16 AVX-512 transpose (block512_amd64.s), and
//     the output is transposed back with the residual added, each chunk of
//     images just before and after its convolution on the same thread;
//     no oneDNN reorder and no separate norm, add or bias pass remain.
//
// A CPU is safe for concurrent use. Scratch memory (im2col columns,
// attention scores, partial gradients) comes from a pool inside the CPU
// that grows to the largest request and is then reused; oneDNN primitives
// and their internal buffers are created once per shape and kept for the
// life of the CPU. Keep one CPU per process rather than one per call.
// What still allocates per call is small: goroutine closures and the
// argument slices of purego's reflection-based calls into oneDNN (about
// ten small objects per library call).
//
// The reference twins of every op, plain float64 loops with their
// formulas, live in ref_test.go; the tests compare CPU with them on seeded
// random inputs in NaN guard bands and check every backward against finite
// differences of the forward twin. bench/kernels compares the speed with
// PyTorch.
package kernels
