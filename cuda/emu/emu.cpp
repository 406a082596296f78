// emu.cpp: a CPU emulator of the parts of libcuda.so.1 and libcublas that
// package cuda uses, for testing the Go side without a GPU.
//
// It compiles kernels/ops.cu itself as C++ for the host (DDPM_EMU), so the
// tests run the real kernel source: grid-stride kernels run their threads
// one after another; kernels that call __syncthreads run each block's
// threads as ucontext fibers that switch at every barrier. "Device" memory is host
// memory. cuBLAS's sgemm is a plain column-major triple loop that checks
// the leading dimensions as cuBLAS does. Nothing here is used in
// production: cuda's TestMain builds it with clang-16 when no real driver
// is present and points DDPM_LIBCUDA / DDPM_LIBCUBLAS at it.
//
//   clang-16 -x c++ -std=c++17 -O2 -shared -fPIC emu.cpp -o libddpmemu.so -lm
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>
#include <utility>

struct EmuDim3 {
  unsigned x, y, z;
};
// All emulated threads run on the calling OS thread: grid-stride kernels
// one thread after another, barrier kernels as ucontext fibers.
static EmuDim3 threadIdx, blockIdx, blockDim, gridDim;
static void emu_syncthreads();

#define DDPM_EMU 1
#define __global__
#define __device__
#define __shared__ static
#define __syncthreads() emu_syncthreads()
#define __nvvm_ex2_approx_f exp2f
#define __nvvm_sqrt_rn_f sqrtf
#define __nvvm_lg2_approx_f log2f
#include "../kernels/ops.cu"

namespace {

template <typename... A, size_t... I>
void invoke_impl(void (*f)(A...), void** p, std::index_sequence<I...>) {
  f(*static_cast<A*>(p[I])...);
}
template <typename... A>
void invoke(void (*f)(A...), void** p) {
  invoke_impl(f, p, std::index_sequence_for<A...>{});
}

struct Kernel {
  const char* name;
  void (*call)(void**);
  bool sync;  // uses __syncthreads: run a block's threads concurrently
};

#define K(n, s) {#n, [](void** p) { invoke(n, p); }, s}
const Kernel kernels[] = {
    K(silu_fwd, false), K(silu_bwd, false), K(add_f, false), K(mul_f, false), K(axpby_f, false),
    K(clamp_f, false), K(sumsq_partial, true), K(sum_partials, true), K(add_channel_bias, false),
    K(row_sum, true), K(add_row_bias, false), K(col_sum, false), K(conv_bias_grad, true),
    K(knp_to_nkp, false), K(nkp_to_knp, false), K(transpose12, true), K(concat_ch, false),
    K(split_ch, false), K(upsample2x, false), K(upsample2x_bwd, false), K(im2col, false),
    K(col2im, false), K(groupnorm_fwd, true), K(groupnorm_bwd_dx, true), K(groupnorm_fwd_smem, true),
    K(groupnorm_bwd_dx_smem, true), K(col_sum_partial, false), K(add_bias_nkp, false), K(groupnorm_bwd_affine, true),
    K(fill_ptrs, false), K(softmax_rows, true), K(softmax_bwd_rows, true), K(embedding_fwd, false),
    K(embedding_bwd, false), K(adamw, false), K(ema_f, false), K(dropout_f, false),
    K(sqrt_sum_partials, true), K(clip_to_norm, false), K(diffusion_loss, true), K(loss_sum, true),
    K(groupnorm_ss_fwd, true), K(groupnorm_ss_bwd_dx, true), K(groupnorm_ss_bwd_stats, true),
    K(groupnorm_ss_bwd_params, false), K(avgpool2x, false), K(avgpool2x_bwd, false), K(attnpool_tokens, true),
    K(attnpool_tokens_bwd_dx, false), K(attnpool_tokens_bwd_dpos, false), K(row_mean, true),
    K(row_mean_bwd, false), K(relu_f, false), K(relu_bwd, false),
};
const int nkernels = sizeof(kernels) / sizeof(kernels[0]);

// Fibers for kernels with __syncthreads: a block's threads run in rounds;
// each round resumes every fiber until its next barrier (or its end), so
// no thread passes barrier k before all have reached it. On x86-64 a
// fiber switch is a few instructions (fast_swap saves the callee-saved
// registers and the stack pointer); swapcontext also saves the signal
// mask with two system calls per switch, which made barrier-heavy kernels
// (reductions, GroupNorm, softmax) take minutes. Other CPUs use ucontext.
const unsigned kStack = 64 * 1024;
char* fib_stack[1024];
bool fib_done[1024];
unsigned fib_cur;
const Kernel* fib_kernel;
void** fib_params;

#if defined(__x86_64__)
extern "C" void emu_fast_swap(void** save_sp, void* load_sp);
asm(R"(
.text
.globl emu_fast_swap
.type emu_fast_swap, @function
emu_fast_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_fast_swap, .-emu_fast_swap
)");
void* main_sp;
void* fib_sp[1024];

[[noreturn]] void fiber_entry() {
  fib_kernel->call(fib_params);
  fib_done[fib_cur] = true;
  void* dead;
  emu_fast_swap(&dead, main_sp);
  __builtin_unreachable();
}

void fiber_start(unsigned t) {
  // A fresh stack that "returns" into fiber_entry with the alignment of a
  // call (rsp = 8 mod 16 at entry), below six zeroed callee-saved slots.
  uintptr_t top = ((uintptr_t)fib_stack[t] + kStack) & ~(uintptr_t)15;
  void** sp = (void**)top;
  *--sp = nullptr;                    // fiber_entry's return address (never used)
  *--sp = (void*)&fiber_entry;        // popped by emu_fast_swap's ret
  for (int i = 0; i < 6; i++) *--sp = nullptr;
  fib_sp[t] = sp;
}
void fiber_resume(unsigned t) { emu_fast_swap(&main_sp, fib_sp[t]); }
void fiber_yield() { emu_fast_swap(&fib_sp[fib_cur], main_sp); }
#else
ucontext_t main_ctx, fib_ctx[1024];

void fiber_entry() {
  fib_kernel->call(fib_params);
  fib_done[fib_cur] = true;
}  // returns to uc_link = main_ctx

void fiber_start(unsigned t) {
  getcontext(&fib_ctx[t]);
  fib_ctx[t].uc_stack.ss_sp = fib_stack[t];
  fib_ctx[t].uc_stack.ss_size = kStack;
  fib_ctx[t].uc_link = &main_ctx;
  makecontext(&fib_ctx[t], fiber_entry, 0);
}
void fiber_resume(unsigned t) { swapcontext(&main_ctx, &fib_ctx[t]); }
void fiber_yield() { swapcontext(&fib_ctx[fib_cur], &main_ctx); }
#endif

void run_block_fibers(unsigned nt) {
  for (unsigned t = 0; t < nt; t++) {
    if (!fib_stack[t]) fib_stack[t] = (char*)malloc(kStack);
    fiber_start(t);
    fib_done[t] = false;
  }
  for (bool any = true; any;) {
    any = false;
    for (unsigned t = 0; t < nt; t++) {
      if (fib_done[t]) continue;
      any = true;
      fib_cur = t;
      threadIdx = {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
      fiber_resume(t);
    }
  }
}

}  // namespace

static void emu_syncthreads() { fiber_yield(); }

extern "C" {

int cuInit(unsigned) { return 0; }
int cuDriverGetVersion(int* v) { *v = 13000; return 0; }
int cuDeviceGetCount(int* n) { *n = 1; return 0; }
int cuDeviceGet(int* d, int i) { if (i != 0) return 101; *d = 0; return 0; }
int cuDeviceGetName(char* s, int len, int) { snprintf(s, len, "ddpm CPU emulator"); return 0; }
int cuDeviceGetAttribute(int* v, int attr, int) {
  *v = attr == 75 ? 8 : attr == 76 ? 0 : attr == 16 ? 1 : 0;
  return 0;
}
int cuDeviceTotalMem_v2(size_t* b, int) { *b = size_t(1) << 32; return 0; }
int cuDevicePrimaryCtxRetain(void** c, int) { *c = (void*)0x1; return 0; }
int cuDevicePrimaryCtxRelease_v2(int) { return 0; }
int cuCtxSetCurrent(void* c) { return c == (void*)0x1 ? 0 : 201; }
int cuCtxGetCurrent(void** c) { *c = (void*)0x1; return 0; }
int cuMemAlloc_v2(uint64_t* p, size_t n) {
  if (n == 0) return 1;
  void* m = aligned_alloc(256, (n + 255) / 256 * 256);
  if (!m) return 2;
  memset(m, 0xff, n);  // garbage, like real device memory: callers must not assume zeroes
  *p = (uint64_t)m;
  return 0;
}
int cuMemFree_v2(uint64_t p) { free((void*)p); return 0; }
int cuMemGetInfo_v2(size_t* f, size_t* t) { *f = *t = size_t(1) << 32; return 0; }
int cuMemcpyHtoDAsync_v2(uint64_t d, const void* s, size_t n, void*) { memcpy((void*)d, s, n); return 0; }
int cuMemcpyDtoHAsync_v2(void* d, uint64_t s, size_t n, void*) { memcpy(d, (void*)s, n); return 0; }
int cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t s, size_t n, void*) { memmove((void*)d, (void*)s, n); return 0; }
int cuMemsetD32Async(uint64_t d, unsigned v, size_t n, void*) {
  unsigned* p = (unsigned*)d;
  for (size_t i = 0; i < n; i++) p[i] = v;
  return 0;
}
int cuStreamCreate(void** s, unsigned) { *s = (void*)0x2; return 0; }
int cuStreamDestroy_v2(void*) { return 0; }
int cuStreamSynchronize(void* s) { return s == (void*)0x2 ? 0 : 400; }
int cuModuleLoadDataEx(void** m, const void* img, unsigned, int*, void**) {
  if (!img || !strstr((const char*)img, ".target sm_80")) return 218;  // CUDA_ERROR_INVALID_PTX
  *m = (void*)0x3;
  return 0;
}
int cuModuleGetFunction(void** f, void*, const char* name) {
  for (int i = 0; i < nkernels; i++)
    if (strcmp(kernels[i].name, name) == 0) { *f = (void*)(intptr_t)(i + 1); return 0; }
  return 500;  // CUDA_ERROR_NOT_FOUND
}
int cuModuleUnload(void*) { return 0; }

int cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shmem, void* stream, void** params, void** extra) {
  intptr_t id = (intptr_t)f - 1;
  if (id < 0 || id >= nkernels || stream != (void*)0x2 || extra) return 1;
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 || bx * by * bz > 1024 || gy > 65535 ||
      gz > 65535 || bz > 64 || shmem > 48 * 1024 || shmem > sizeof(float) * (1 << 14))
    return 1;  // CUDA_ERROR_INVALID_VALUE
  const Kernel* k = &kernels[id];
  gridDim = {gx, gy, gz};
  blockDim = {bx, by, bz};
  unsigned nt = bx * by * bz;
  if (!k->sync) {
    for (unsigned z = 0; z < gz; z++)
      for (unsigned y = 0; y < gy; y++)
        for (unsigned x = 0; x < gx; x++)
          for (unsigned t = 0; t < nt; t++) {
            blockIdx = {x, y, z};
            threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
            k->call(params);
          }
    return 0;
  }
  fib_kernel = k;
  fib_params = params;
  for (unsigned z = 0; z < gz; z++)
    for (unsigned y = 0; y < gy; y++)
      for (unsigned x = 0; x < gx; x++) {
        blockIdx = {x, y, z};
        run_block_fibers(nt);
      }
  return 0;
}

int cuGetErrorName(int r, const char** s) {
  *s = r == 1 ? "CUDA_ERROR_INVALID_VALUE" : r == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : "CUDA_ERROR_EMULATED";
  return 0;
}
int cuGetErrorString(int, const char** s) { *s = "emulated error"; return 0; }

// ---- cuBLAS -------------------------------------------------------------------

// The handle is a small struct; math mode 3 (CUBLAS_TF32_TENSOR_OP_MATH)
// rounds the GEMM inputs to TF32 (10 mantissa bits, round to nearest) as
// the tensor cores do, so TF32 tolerances are checked here too.
struct EmuBlas {
  int math;
};
int cublasCreate_v2(void** h) { *h = calloc(1, sizeof(EmuBlas)); return 0; }
int cublasDestroy_v2(void* h) { free(h); return 0; }
int cublasSetStream_v2(void*, void* s) { return s == (void*)0x2 ? 0 : 7; }
int cublasSetMathMode(void* h, int m) {
  if (m != 0 && m != 2 && m != 3) return 7;
  ((EmuBlas*)h)->math = m;
  return 0;
}

static float tf32(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return v;  // inf, nan
  u += 0x1000u;                                     // round to nearest on the 13 dropped bits
  u &= 0xffffe000u;
  memcpy(&v, &u, 4);
  return v;
}
int cublasGetVersion_v2(void*, int* v) { *v = 0; return 0; }

static int sgemm1(bool t32, int ta, int tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
                  int ldb, float beta, float* C, int ldc) {
  if (m < 0 || n < 0 || k < 0 || lda < (ta ? (k > 1 ? k : 1) : (m > 1 ? m : 1)) ||
      ldb < (tb ? (n > 1 ? n : 1) : (k > 1 ? k : 1)) || ldc < (m > 1 ? m : 1))
    return 7;  // CUBLAS_STATUS_INVALID_VALUE
  for (int j = 0; j < n; j++)
    for (int i = 0; i < m; i++) {
      double acc = 0;
      for (int l = 0; l < k; l++) {
        float a = ta ? A[l + (size_t)i * lda] : A[i + (size_t)l * lda];
        float b = tb ? B[j + (size_t)l * ldb] : B[l + (size_t)j * ldb];
        if (t32) a = tf32(a), b = tf32(b);
        acc += (double)a * b;
      }
      float* c = &C[i + (size_t)j * ldc];
      *c = beta == 0 ? alpha * (float)acc : alpha * (float)acc + beta * *c;
    }
  return 0;
}

int cublasSgemm_v2(void* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
  return sgemm1(((EmuBlas*)h)->math == 3, ta, tb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
}

int cublasSgemmBatched(void* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* const A[],
                       int lda, const float* const B[], int ldb, const float* beta, float* const C[], int ldc,
                       int count) {
  for (int i = 0; i < count; i++) {
    int r = sgemm1(((EmuBlas*)h)->math == 3, ta, tb, m, n, k, *alpha, A[i], lda, B[i], ldb, *beta, C[i], ldc);
    if (r) return r;
  }
  return 0;
}

// ---- cuDNN (legacy convolution API) --------------------------------------------
// Descriptors are small structs; Find returns one algorithm (0) asking for
// 1 KiB of workspace; the convolutions are direct loops (TF32 rounding in
// CUDNN_TENSOR_OP_MATH), honouring alpha and beta.

struct EmuTensor { int n, c, h, w; };
struct EmuFilter { int k, c, h, w; };
struct EmuConv { int ph, pw, sh, sw, math; };
struct EmuPerf {
  int algo, status;
  float time;
  size_t memory;
  int determinism, mathType, reserved[3];
};

int cudnnCreate(void** h) { *h = calloc(1, 16); return 0; }
int cudnnDestroy(void* h) { free(h); return 0; }
int cudnnSetStream(void*, void* s) { return s == (void*)0x2 ? 0 : 3; }
size_t cudnnGetVersion() { return 90000; }
const char* cudnnGetErrorString(int) { return "CUDNN_STATUS_EMULATED_ERROR"; }
int cudnnCreateTensorDescriptor(void** d) { *d = calloc(1, sizeof(EmuTensor)); return 0; }
int cudnnDestroyTensorDescriptor(void* d) { free(d); return 0; }
int cudnnSetTensor4dDescriptor(EmuTensor* d, int format, int dtype, int n, int c, int h, int w) {
  if (format != 0 || dtype != 0 || n < 1 || c < 1 || h < 1 || w < 1) return 3;  // BAD_PARAM
  *d = {n, c, h, w};
  return 0;
}
int cudnnCreateFilterDescriptor(void** d) { *d = calloc(1, sizeof(EmuFilter)); return 0; }
int cudnnDestroyFilterDescriptor(void* d) { free(d); return 0; }
int cudnnSetFilter4dDescriptor(EmuFilter* d, int dtype, int format, int k, int c, int h, int w) {
  if (format != 0 || dtype != 0 || k < 1 || c < 1 || h < 1 || w < 1) return 3;
  *d = {k, c, h, w};
  return 0;
}
int cudnnCreateConvolutionDescriptor(void** d) { *d = calloc(1, sizeof(EmuConv)); return 0; }
int cudnnDestroyConvolutionDescriptor(void* d) { free(d); return 0; }
int cudnnSetConvolution2dDescriptor(EmuConv* d, int ph, int pw, int u, int v, int dh, int dw, int mode, int ctype) {
  if (ph < 0 || pw < 0 || u < 1 || v < 1 || dh != 1 || dw != 1 || mode != 1 || ctype != 0) return 3;
  d->ph = ph, d->pw = pw, d->sh = u, d->sw = v;
  return 0;
}
int cudnnSetConvolutionMathType(EmuConv* d, int m) {
  if (m != 0 && m != 1 && m != 2 && m != 3) return 3;
  d->math = m;
  return 0;
}

// shapes_ok checks x, w, y descriptors against the convolution.
static bool shapes_ok(const EmuTensor* x, const EmuFilter* w, const EmuConv* c, const EmuTensor* y) {
  int oh = (x->h + 2 * c->ph - w->h) / c->sh + 1, ow = (x->w + 2 * c->pw - w->w) / c->sw + 1;
  return x->c == w->c && y->c == w->k && x->n == y->n && y->h == oh && y->w == ow;
}

// find1 fails (CUDNN_STATUS_NOT_SUPPORTED) for 13 output channels, so
// tests can check the per-shape fallback to im2col.
static int find1(int req, int* ret, EmuPerf* perf, const EmuConv* c, int k) {
  if (k == 13) return 9;
  if (req < 1) return 3;
  *ret = 1;
  perf[0] = EmuPerf{0, 0, 0.0f, 1024, 1, c->math, {0, 0, 0}};
  return 0;
}
int cudnnFindConvolutionForwardAlgorithm(void*, EmuTensor* x, EmuFilter* w, EmuConv* c, EmuTensor* y, int req, int* ret,
                                         EmuPerf* perf) {
  return shapes_ok(x, w, c, y) ? find1(req, ret, perf, c, w->k) : 3;
}
int cudnnFindConvolutionBackwardDataAlgorithm(void*, EmuFilter* w, EmuTensor* dy, EmuConv* c, EmuTensor* dx, int req,
                                              int* ret, EmuPerf* perf) {
  return shapes_ok(dx, w, c, dy) ? find1(req, ret, perf, c, w->k) : 3;
}
int cudnnFindConvolutionBackwardFilterAlgorithm(void*, EmuTensor* x, EmuTensor* dy, EmuConv* c, EmuFilter* dw, int req,
                                                int* ret, EmuPerf* perf) {
  return shapes_ok(x, dw, c, dy) ? find1(req, ret, perf, c, dw->k) : 3;
}

}  // extern "C"

// conv_loop visits every (n, k, oy, ox, c, r, s) with an in-bounds input.
template <typename F>
static void conv_loop(const EmuTensor* x, const EmuFilter* w, const EmuConv* cv, const EmuTensor* y, F f) {
  for (int n = 0; n < x->n; n++)
    for (int k = 0; k < w->k; k++)
      for (int oy = 0; oy < y->h; oy++)
        for (int ox = 0; ox < y->w; ox++)
          for (int c = 0; c < x->c; c++)
            for (int r = 0; r < w->h; r++)
              for (int s = 0; s < w->w; s++) {
                int iy = oy * cv->sh - cv->ph + r, ix = ox * cv->sw - cv->pw + s;
                if (iy < 0 || iy >= x->h || ix < 0 || ix >= x->w) continue;
                size_t xi = (((size_t)n * x->c + c) * x->h + iy) * x->w + ix;
                size_t wi = (((size_t)k * w->c + c) * w->h + r) * w->w + s;
                size_t yi = (((size_t)n * y->c + k) * y->h + oy) * y->w + ox;
                f(xi, wi, yi);
              }
}

static float rnd(const EmuConv* c, float v) { return c->math == 1 ? tf32(v) : v; }

extern "C" {

static void blend(float* out, const double* acc, size_t n, float alpha, float beta) {
  for (size_t i = 0; i < n; i++) out[i] = beta == 0 ? alpha * (float)acc[i] : alpha * (float)acc[i] + beta * out[i];
}

int cudnnConvolutionForward(void*, const float* alpha, EmuTensor* xd, const float* x, EmuFilter* wd, const float* w,
                            EmuConv* cd, int algo, void* ws, size_t wss, const float* beta, EmuTensor* yd, float* y) {
  if (!shapes_ok(xd, wd, cd, yd) || algo != 0 || !ws || wss < 1024) return 3;
  size_t ny = (size_t)yd->n * yd->c * yd->h * yd->w;
  double* acc = (double*)calloc(ny, sizeof(double));
  conv_loop(xd, wd, cd, yd, [&](size_t xi, size_t wi, size_t yi) { acc[yi] += (double)rnd(cd, x[xi]) * rnd(cd, w[wi]); });
  blend(y, acc, ny, *alpha, *beta);
  free(acc);
  return 0;
}

int cudnnConvolutionBackwardData(void*, const float* alpha, EmuFilter* wd, const float* w, EmuTensor* dyd,
                                 const float* dy, EmuConv* cd, int algo, void* ws, size_t wss, const float* beta,
                                 EmuTensor* dxd, float* dx) {
  if (!shapes_ok(dxd, wd, cd, dyd) || algo != 0 || !ws || wss < 1024) return 3;
  size_t nx = (size_t)dxd->n * dxd->c * dxd->h * dxd->w;
  double* acc = (double*)calloc(nx, sizeof(double));
  conv_loop(dxd, wd, cd, dyd, [&](size_t xi, size_t wi, size_t yi) { acc[xi] += (double)rnd(cd, w[wi]) * rnd(cd, dy[yi]); });
  blend(dx, acc, nx, *alpha, *beta);
  free(acc);
  return 0;
}

int cudnnConvolutionBackwardFilter(void*, const float* alpha, EmuTensor* xd, const float* x, EmuTensor* dyd,
                                   const float* dy, EmuConv* cd, int algo, void* ws, size_t wss, const float* beta,
                                   EmuFilter* dwd, float* dw) {
  if (!shapes_ok(xd, dwd, cd, dyd) || algo != 0 || !ws || wss < 1024) return 3;
  size_t nw = (size_t)dwd->k * dwd->c * dwd->h * dwd->w;
  double* acc = (double*)calloc(nw, sizeof(double));
  conv_loop(xd, dwd, cd, dyd, [&](size_t xi, size_t wi, size_t yi) { acc[wi] += (double)rnd(cd, x[xi]) * rnd(cd, dy[yi]); });
  blend(dw, acc, nw, *alpha, *beta);
  free(acc);
  return 0;
}

}  // extern "C"
