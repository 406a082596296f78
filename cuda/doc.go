// Package cuda is the NVIDIA GPU backend: *Device implements
// kernels.Ops[Ptr], the same ops as kernels.CPU with device buffers.
//
// # No cgo, no CUDA at build time
//
// The driver API (libcuda.so.1) and cuBLAS (libcublas.so.13, .12 or .11)
// are opened at run time with github.com/ebitengine/purego, so
// `CGO_ENABLED=0 go build ./...` works on any machine. Open returns an
// error wrapping ErrNoDriver, ErrNoDevice or ErrNoCUBLAS when the stack
// is missing: one short sentence (what is missing, what to set), then
// every path tried on its own line; Select turns a --device flag
// (auto|cpu|cuda|cuda:N) into a Backend and falls back to kernels.CPU under
// "auto", logging one line that says which device runs. cuBLAS is searched
// in $DDPM_LIBCUBLAS, LD_LIBRARY_PATH, $CUDA_HOME/lib64, /usr/local/cuda,
// Debian's multiarch directory and the nvidia-cublas pip wheels that a
// PyTorch install brings; a libcublas whose cublasCreate fails (one newer
// than the driver) gives way to the next candidate. $DDPM_LIBCUDA and
// $DDPM_LIBCUDNN override the driver and cuDNN libraries. cuDNN 9 opens
// its sub-libraries (libcudnn_cnn.so.9, ...) by name: they are preloaded
// from libcudnn.so.9's directory, and cuDNN errors say to put that
// directory on LD_LIBRARY_PATH when it is not.
//
// # Kernels
//
// kernels/ops.cu is CUDA C compiled to PTX (sm_80, JIT-compiled by the
// driver for newer GPUs such as sm_90 H100/H200) by Debian's clang-16 via
// `go generate ./cuda`, without a CUDA SDK; the PTX is embedded.
// TestPTXUpToDate fails when the committed PTX is stale. The ops:
//
//   - Conv2D and its backward passes: through cuDNN when libcudnn.so.9/.8
//     loads (Options.Conv "auto"; legacy API, cudnnFind*Algorithm once per
//     shape and direction: the fastest algorithm, or the first
//     deterministic one after it, run with the math type Find reported
//     for it; strict fp32 never picks FFT or Winograd; ConvChoices says
//     which and why), else, and for asymmetric
//     padding or any shape cuDNN fails on, im2col over chunks of images
//     into a (C*R*S, n*P) column matrix, one cuBLAS GEMM per chunk and a
//     permute that adds the bias; col2im is a deterministic gather.
//   - Linear: cuBLAS GEMMs on row-major data (C^T = B^T A^T column-major).
//   - GroupNorm (+ fused SiLU): one block per (n, group), two-pass mean and
//     variance in shared memory; backward in two kernels (dx per group,
//     dgamma/dbeta per channel).
//   - Attention: q k^T and P v through cublasSgemmBatched over (batch,
//     head) with device-built pointer tables, a row softmax kernel; the
//     backward recomputes P.
//   - Elementwise ops, channel bias and sums, nearest 2x upsampling,
//     concat/split, tiled transpose, embedding gather/scatter (a
//     deterministic gather), AdamW, EMA, a float64 sum of squares.
//
// Options.ConvAutotune times each convolution shape once with several
// column-chunk sizes (small chunks stay in L2, large ones give bigger
// GEMMs) and keeps the fastest, like cudnn.benchmark; the GPU benchmarks
// compare the engines (cudnn, im2col, im2col-autotune).
//
// # Precision
//
// Options.Precision (the --precision flag of every command, parsed once by
// ParsePrecision) sets the arithmetic of the GEMMs and convolutions only:
// "tf32" (the default: TF32 tensor cores), "fp32" (strict IEEE float32:
// CUBLAS_PEDANTIC_MATH, CUDNN_FMA_MATH, no FFT/Winograd), "bf16" and
// "fp16" (cublasGemmEx on float32 matrices with
// CUBLAS_COMPUTE_32F_FAST_16BF / _16F: inputs rounded to 16 bits on the
// tensor cores, float32 accumulation; fp16 convolutions through cuDNN with
// CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, bf16 ones as im2col + those GEMMs,
// since cuDNN's convolution API cannot down-convert to bfloat16). Every
// other op and every buffer stays float32: activations, gradients and
// weights (the fp32 master weights) take fp32 memory in all modes, so the
// 16-bit modes save compute time, not memory. fp16 training needs dynamic
// loss scaling (train.Options.LossScale; ddpm train turns it on). The CPU
// computes in fp32 and refuses bf16 and fp16 (CPUPrecision).
//
// # CUDA graphs
//
// GraphOps wraps a Device for repeated work such as a sampling loop: the
// ops that only queue device work are recorded until the next
// synchronising call; a sequence seen before is captured once (stream
// capture, cuGraphInstantiate) and then replayed with one cuGraphLaunch,
// bit-identical to queuing it op by op, and captured again when the
// shape changes (a new sequence) or a scratch buffer it refers to grew.
// package pipeline runs GPU models through it by default.
//
// # Execution model
//
// All work is queued on one non-blocking stream of the device's primary
// context; ops return before the GPU finishes, and Download, SumSquares and
// Sync wait. Argument errors and CUDA failures are sticky, like CUDA's: the
// first is kept, later ops are skipped, and Sync returns (and clears) it.
// Each call locks the Device and binds the context to its OS thread, so a
// Device may be used from any goroutine. Buffers come from a caching
// allocator with size-class free lists (no cuMemAlloc, which synchronises,
// in steady state); scratch space (im2col columns, attention scores) is a
// few grow-only slots.
//
// # Testing without a GPU
//
// The op tests compare every op with kernels.CPU on seeded random inputs
// inside NaN guard bands, elementwise: |got - want| <= eps (rms(want) +
// |want|) with eps 1e-5 for the float32 ops, and for the GEMM and
// convolution ops 8 unit roundoffs of the precision (fp32 1e-5, tf32 and
// fp16 8 * 2^-11, bf16 8 * 2^-8). Without a GPU, TestMain builds
// cuda/emu/emu.cpp with clang-16: a CPU emulator of the driver, cuBLAS and
// cuDNN functions used here that compiles kernels/ops.cu itself for the
// host, rounds GEMM and convolution inputs as each precision's tensor
// cores do (TF32, bfloat16, half with its overflow), records and replays
// stream captures, keeps the current context per thread, and refuses what
// a real GPU would punish silently (cuMemFree with unsynchronised work,
// a convolution run with another math type than Find reported, unsafe
// calls inside a capture); so CI runs the real kernel source and every
// Device code path (only PTX JIT and real parallelism are left to the
// GPU; cuda/ptxcheck.sh assembles the PTX with NVIDIA's ptxas for sm_80
// and sm_90 without a GPU). bench/gpu-check.sh runs the same tests, the
// whole-model checks, the GPU benchmarks and the PyTorch peer
// (pytorch/bench_gpu.py) on a GPU machine in one call.
//
// The ops follow kernels.Ops: outputs first, then inputs, then dims; the
// zero Ptr is an absent optional buffer; inputs are never modified.
package cuda
