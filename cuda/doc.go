// Package cuda is the NVIDIA GPU backend: *Device implements
// kernels.Ops[Ptr], the same ops as kernels.CPU with device buffers.
//
// # No cgo, no CUDA at build time
//
// The driver API (libcuda.so.1) and cuBLAS (libcublas.so.13, .12 or .11)
// are opened at run time with github.com/ebitengine/purego, so
// `CGO_ENABLED=0 go build ./...` works on any machine. Open returns an
// error wrapping ErrNoDriver, ErrNoDevice or ErrNoCUBLAS, naming every
// path tried, when the stack is missing; Select turns a --device flag
// (auto|cpu|cuda|cuda:N) into a Backend and falls back to kernels.CPU under
// "auto", logging one line that says which device runs. cuBLAS is searched
// in $DDPM_LIBCUBLAS, LD_LIBRARY_PATH, $CUDA_HOME/lib64, /usr/local/cuda,
// Debian's multiarch directory and the nvidia-cublas pip wheels that a
// PyTorch install brings; $DDPM_LIBCUDA and $DDPM_LIBCUDNN override the
// driver and cuDNN libraries.
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
//     shape, deterministic algorithms preferred), else, and for asymmetric
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
// GEMMs) and keeps the fastest, like cudnn.benchmark; the cuda/dev lab
// compares the fixed and tuned settings on the whole UNet.
//
// GEMMs use TF32 tensor cores by default (Options.Precision "tf32", about
// 1e-3 relative error); "fp32" is strict IEEE float32 (CUBLAS_DEFAULT_MATH).
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
// inside NaN guard bands (relative error under 1e-5 in fp32, 3e-3 with
// TF32). Without a GPU, TestMain builds cuda/emu/emu.cpp with clang-16: a
// CPU emulator of the driver, cuBLAS and cuDNN functions used here (TF32
// rounding included) that compiles
// kernels/ops.cu itself for the host, so CI runs the real kernel source and
// every Device code path (only PTX JIT and real parallelism are left to
// the GPU). bench/gpu-check.sh runs the same tests, the GPU benchmarks and
// the PyTorch peer (bench/torch_gpu.py) on a GPU machine in one call.
//
// The ops follow kernels.Ops: outputs first, then inputs, then dims; the
// zero Ptr is an absent optional buffer; inputs are never modified.
package cuda
