// emu.cpp: a CPU emulator of the parts of libcuda.so.1, libcublas and
// libcudnn that package cuda uses, for testing the Go side without a GPU.
//
// It compiles kernels/ops.cu itself as C++ for the host (DDPM_EMU), so the
// tests run the real kernel source: grid-stride kernels run their threads
// one after another; kernels that call __syncthreads run each block's
// threads as ucontext fibers that switch at every barrier. "Device" memory is host
// memory. cuBLAS's sgemm is a plain column-major triple loop that checks
// the leading dimensions as cuBLAS does, rounding its inputs as each
// precision's tensor cores do (TF32, bfloat16, half). Stream capture
// records the captured calls (their arguments copied) and a graph launch
// replays them; calls that a real capture refuses (synchronisation,
// allocation, host copies, cuDNN's Find) fail it. Nothing here is used in
// production: cuda's TestMain builds it with clang-16 when no real driver
// is present and points DDPM_LIBCUDA / DDPM_LIBCUBLAS at it.
//
//   clang-16 -x c++ -std=c++17 -O2 -shared -fPIC emu.cpp -o libddpmemu.so -lstdc++ -lm
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <ucontext.h>
#include <utility>
#include <vector>

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
template <typename... A>
constexpr int arity(void (*)(A...)) {
  return sizeof...(A);
}

struct Kernel {
  const char* name;
  void (*call)(void**);
  bool sync;  // uses __syncthreads: run a block's threads concurrently
  int nargs;  // parameters (each passed in an 8-byte slot by package cuda)
};

#define K(n, s) {#n, [](void** p) { invoke(n, p); }, s, arity(n)}
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
    K(gelu_f, false), K(gelu_bwd, false),
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

// ---- stream capture ------------------------------------------------------------
// While the stream captures, the calls a real capture records are stored
// as closures over copies of their arguments; cuGraphLaunch replays them.
// The calls a real capture (CU_STREAM_CAPTURE_MODE_GLOBAL) refuses fail
// with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidate it.
namespace {
struct EmuGraph {
  std::vector<std::function<void()>> ops;
};
bool capturing = false, capture_bad = false;
EmuGraph* capture_graph = nullptr;
const int kCaptureUnsupported = 900, kCaptureInvalidated = 901;

// capture_refuse is called by every call that a capture refuses: outside
// a capture it returns 0 (go on).
int capture_refuse() {
  if (!capturing) return 0;
  capture_bad = true;
  return kCaptureUnsupported;
}

// record queues f in the capture; it returns false (run it now) outside one.
bool record(std::function<void()> f) {
  if (!capturing) return false;
  if (!capture_bad) capture_graph->ops.push_back(std::move(f));
  return true;
}
}  // namespace

static void run_kernel(const Kernel* k, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       void** params) {
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
    return;
  }
  fib_kernel = k;
  fib_params = params;
  for (unsigned z = 0; z < gz; z++)
    for (unsigned y = 0; y < gy; y++)
      for (unsigned x = 0; x < gx; x++) {
        blockIdx = {x, y, z};
        run_block_fibers(nt);
      }
}

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
// The current context is per OS thread, as in CUDA: calls that need one
// fail with CUDA_ERROR_INVALID_CONTEXT (201) on a thread without it.
static thread_local void* cur_ctx = nullptr;
int cuCtxSetCurrent(void* c) {
  if (c != (void*)0x1 && c != nullptr) return 201;
  cur_ctx = c;
  return 0;
}
int cuCtxGetCurrent(void** c) { *c = cur_ctx; return 0; }
#define NEED_CTX() \
  if (cur_ctx != (void*)0x1) return 201

// Work queued since the last cuStreamSynchronize (the emulator runs it at
// once, but a GPU would not have): cuMemFree of any block then fails with
// CUDA_ERROR_ILLEGAL_STATE (401), stricter than CUDA, so the tests check
// that package cuda waits for the stream before it frees memory that
// queued work may use.
static bool pending = false;

// A test may cap the device memory (ddpm_emu_set_mem_limit) to reach the
// out-of-memory paths.
static size_t mem_limit = 0, mem_used = 0;
struct BlockHead {
  size_t n;
};
extern "C" void ddpm_emu_set_mem_limit(size_t n) { mem_limit = n; }
extern "C" size_t ddpm_emu_mem_used() { return mem_used; }

int cuMemAlloc_v2(uint64_t* p, size_t n) {
  NEED_CTX();
  if (int r = capture_refuse()) return r;
  if (n == 0) return 1;
  size_t rounded = (n + 255) / 256 * 256;
  if (mem_limit && mem_used + rounded > mem_limit) return 2;  // CUDA_ERROR_OUT_OF_MEMORY
  char* base = (char*)aligned_alloc(256, rounded + 256);
  if (!base) return 2;
  ((BlockHead*)base)->n = rounded;
  mem_used += rounded;
  void* m = base + 256;
  memset(m, 0xff, n);  // garbage, like real device memory: callers must not assume zeroes
  *p = (uint64_t)m;
  return 0;
}
int cuMemFree_v2(uint64_t p) {
  NEED_CTX();
  if (int r = capture_refuse()) return r;
  if (pending) return 401;
  char* base = (char*)p - 256;
  mem_used -= ((BlockHead*)base)->n;
  free(base);
  return 0;
}
int cuMemGetInfo_v2(size_t* f, size_t* t) { *f = *t = size_t(1) << 32; return 0; }
// Host copies from pageable memory are refused in a capture (as are the
// real ones' synchronous parts); device copies and memsets are recorded.
int cuMemcpyHtoDAsync_v2(uint64_t d, const void* s, size_t n, void*) {
  NEED_CTX();
  if (int r = capture_refuse()) return r;
  pending = true;
  memcpy((void*)d, s, n);
  return 0;
}
int cuMemcpyDtoHAsync_v2(void* d, uint64_t s, size_t n, void*) {
  NEED_CTX();
  if (int r = capture_refuse()) return r;
  pending = true;
  memcpy(d, (void*)s, n);
  return 0;
}
int cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t s, size_t n, void*) {
  NEED_CTX();
  if (capture_bad && capturing) return kCaptureInvalidated;
  pending = true;
  auto f = [=]() { memmove((void*)d, (void*)s, n); };
  if (!record(f)) f();
  return 0;
}
int cuMemsetD32Async(uint64_t d, unsigned v, size_t n, void*) {
  NEED_CTX();
  if (capture_bad && capturing) return kCaptureInvalidated;
  pending = true;
  auto f = [=]() {
    unsigned* p = (unsigned*)d;
    for (size_t i = 0; i < n; i++) p[i] = v;
  };
  if (!record(f)) f();
  return 0;
}
int cuStreamCreate(void** s, unsigned) {
  NEED_CTX();
  *s = (void*)0x2;
  return 0;
}
int cuStreamDestroy_v2(void*) { return 0; }
int cuStreamSynchronize(void* s) {
  NEED_CTX();
  if (int r = capture_refuse()) return r;
  if (s != (void*)0x2) return 400;
  pending = false;
  return 0;
}
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
  NEED_CTX();
  intptr_t id = (intptr_t)f - 1;
  if (id < 0 || id >= nkernels || stream != (void*)0x2 || extra) return 1;
  pending = true;
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 || bx * by * bz > 1024 || gy > 65535 ||
      gz > 65535 || bz > 64 || shmem > 48 * 1024 || shmem > sizeof(float) * (1 << 14))
    return 1;  // CUDA_ERROR_INVALID_VALUE
  const Kernel* k = &kernels[id];
  if (capturing) {
    if (capture_bad) return kCaptureInvalidated;
    // The kernel's parameters are copied now, as cuLaunchKernel does.
    std::vector<uint64_t> vals(k->nargs);
    for (int i = 0; i < k->nargs; i++) memcpy(&vals[i], params[i], 8);
    record([=]() mutable {
      std::vector<void*> ptrs(vals.size());
      for (size_t i = 0; i < vals.size(); i++) ptrs[i] = &vals[i];
      run_kernel(k, gx, gy, gz, bx, by, bz, ptrs.data());
    });
    return 0;
  }
  run_kernel(k, gx, gy, gz, bx, by, bz, params);
  return 0;
}

int cuStreamBeginCapture_v2(void* s, int mode) {
  if (s != (void*)0x2 || capturing || mode < 0 || mode > 2) return 1;
  capturing = true;
  capture_bad = false;
  capture_graph = new EmuGraph;
  return 0;
}
int cuStreamEndCapture(void* s, void** graph) {
  if (s != (void*)0x2 || !capturing) return 1;
  capturing = false;
  if (capture_bad) {
    delete capture_graph;
    capture_graph = nullptr;
    *graph = nullptr;
    return kCaptureInvalidated;
  }
  *graph = capture_graph;
  capture_graph = nullptr;
  return 0;
}
int cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
  if (!graph || capturing) return 1;
  *exec = new EmuGraph(*(EmuGraph*)graph);
  return 0;
}
int cuGraphLaunch(void* exec, void* s) {
  NEED_CTX();
  if (!exec || s != (void*)0x2) return 1;
  pending = true;
  if (capturing) return kCaptureUnsupported;
  for (auto& f : ((EmuGraph*)exec)->ops) f();
  return 0;
}
int cuGraphExecDestroy(void* exec) { delete (EmuGraph*)exec; return 0; }
int cuGraphDestroy(void* graph) { delete (EmuGraph*)graph; return 0; }

int cuGetErrorName(int r, const char** s) {
  switch (r) {
    case 1: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case 2: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case 201: *s = "CUDA_ERROR_INVALID_CONTEXT"; break;
    case 401: *s = "CUDA_ERROR_ILLEGAL_STATE"; break;
    case 900: *s = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"; break;
    case 901: *s = "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"; break;
    default: *s = "CUDA_ERROR_EMULATED";
  }
  return 0;
}
int cuGetErrorString(int, const char** s) { *s = "emulated error"; return 0; }

// ---- cuBLAS -------------------------------------------------------------------

// The handle is a small struct; math mode 3 (CUBLAS_TF32_TENSOR_OP_MATH)
// rounds the Sgemm inputs to TF32, and cublasGemmEx's compute types round
// them to TF32, bfloat16 or half, as the tensor cores do, so each
// precision's tolerance is checked here too. Accumulation is in double.
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
int cublasSetWorkspace_v2(void*, void* ws, size_t n) { return ws && n ? 0 : 7; }

// Input roundings of the tensor cores.
enum Round { kNone, kTF32, kBF16, kFP16 };

static float tf32(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return v;  // inf, nan
  u += 0x1000u;                                     // round to nearest on the 13 dropped bits
  u &= 0xffffe000u;
  memcpy(&v, &u, 4);
  return v;
}

// bf16 rounds to bfloat16 (8 exponent bits, 7 mantissa bits), nearest even.
static float bf16(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return v;
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  memcpy(&v, &u, 4);
  return v;
}

// fp16 rounds to IEEE half (5 exponent bits, 10 mantissa bits), nearest
// even: at least 65520 in magnitude overflows to infinity, and below 2^-14
// the spacing is 2^-24 (subnormals).
static float fp16(float v) {
  float a = fabsf(v);
  if (!(a == a) || a == INFINITY) return v;
  if (a >= 65520.0f) return v > 0 ? INFINITY : -INFINITY;
  if (a < 0x1p-14f) return nearbyintf(v * 0x1p24f) * 0x1p-24f;
  uint32_t u;
  memcpy(&u, &v, 4);
  u += 0xfffu + ((u >> 13) & 1u);
  u &= 0xffffe000u;
  memcpy(&v, &u, 4);
  return v;
}

static float rnd_mode(Round r, float v) {
  switch (r) {
    case kTF32: return tf32(v);
    case kBF16: return bf16(v);
    case kFP16: return fp16(v);
    default: return v;
  }
}

int cublasGetVersion_v2(void*, int* v) { *v = 0; return 0; }

static bool gemm_dims_ok(int ta, int tb, int m, int n, int k, int lda, int ldb, int ldc) {
  return !(m < 0 || n < 0 || k < 0 || lda < (ta ? (k > 1 ? k : 1) : (m > 1 ? m : 1)) ||
           ldb < (tb ? (n > 1 ? n : 1) : (k > 1 ? k : 1)) || ldc < (m > 1 ? m : 1));
}

static int sgemm1(Round rm, int ta, int tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
                  int ldb, float beta, float* C, int ldc) {
  if (!gemm_dims_ok(ta, tb, m, n, k, lda, ldb, ldc)) return 7;  // CUBLAS_STATUS_INVALID_VALUE
  for (int j = 0; j < n; j++)
    for (int i = 0; i < m; i++) {
      double acc = 0;
      for (int l = 0; l < k; l++) {
        float a = ta ? A[l + (size_t)i * lda] : A[i + (size_t)l * lda];
        float b = tb ? B[j + (size_t)l * ldb] : B[l + (size_t)j * ldb];
        acc += (double)rnd_mode(rm, a) * rnd_mode(rm, b);
      }
      float* c = &C[i + (size_t)j * ldc];
      *c = beta == 0 ? alpha * (float)acc : alpha * (float)acc + beta * *c;
    }
  return 0;
}

// gemm_call runs (or, in a capture, records) one GEMM or a batch of them;
// the pointer tables of a batch are read when it runs, as on a GPU.
static int gemm_call(Round rm, int ta, int tb, int m, int n, int k, float alpha, const float* A, const float* const* Aa,
                     int lda, const float* B, const float* const* Ba, int ldb, float beta, float* C, float* const* Ca,
                     int ldc, int count) {
  if (capturing && capture_bad) return 14;  // CUBLAS_STATUS_INTERNAL_ERROR
  if (!gemm_dims_ok(ta, tb, m, n, k, lda, ldb, ldc) || count < 0) return 7;
  pending = true;
  auto f = [=]() {
    if (!Aa) return sgemm1(rm, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    for (int i = 0; i < count; i++)
      if (int r = sgemm1(rm, ta, tb, m, n, k, alpha, Aa[i], lda, Ba[i], ldb, beta, Ca[i], ldc)) return r;
    return 0;
  };
  if (record([=]() { f(); })) return 0;
  return f();
}

static Round blas_round(void* h) { return ((EmuBlas*)h)->math == 3 ? kTF32 : kNone; }

int cublasSgemm_v2(void* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
  return gemm_call(blas_round(h), ta, tb, m, n, k, *alpha, A, nullptr, lda, B, nullptr, ldb, *beta, C, nullptr, ldc, 1);
}

int cublasSgemmBatched(void* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* const A[],
                       int lda, const float* const B[], int ldb, const float* beta, float* const C[], int ldc,
                       int count) {
  return gemm_call(blas_round(h), ta, tb, m, n, k, *alpha, nullptr, A, lda, nullptr, B, ldb, *beta, nullptr, C, ldc,
                   count);
}

// ex_round maps cublasGemmEx's compute type on float32 matrices (CUDA_R_32F
// = 0) to the input rounding; -1 for combinations the emulator lacks.
static int ex_round(int atype, int btype, int ctype, int compute, int algo) {
  if (atype != 0 || btype != 0 || ctype != 0 || (algo != -1 && algo != 99)) return -1;
  switch (compute) {
    case 68: case 69: return kNone;  // CUBLAS_COMPUTE_32F(_PEDANTIC)
    case 77: return kTF32;           // _FAST_TF32
    case 75: return kBF16;           // _FAST_16BF
    case 74: return kFP16;           // _FAST_16F
  }
  return -1;
}

int cublasGemmEx(void*, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int atype, int lda,
                 const float* B, int btype, int ldb, const float* beta, float* C, int ctype, int ldc, int compute,
                 int algo) {
  int r = ex_round(atype, btype, ctype, compute, algo);
  if (r < 0) return 15;  // CUBLAS_STATUS_NOT_SUPPORTED
  return gemm_call(Round(r), ta, tb, m, n, k, *alpha, A, nullptr, lda, B, nullptr, ldb, *beta, C, nullptr, ldc, 1);
}

int cublasGemmBatchedEx(void*, int ta, int tb, int m, int n, int k, const float* alpha, const float* const A[],
                        int atype, int lda, const float* const B[], int btype, int ldb, const float* beta,
                        float* const C[], int ctype, int ldc, int count, int compute, int algo) {
  int r = ex_round(atype, btype, ctype, compute, algo);
  if (r < 0) return 15;
  return gemm_call(Round(r), ta, tb, m, n, k, *alpha, nullptr, A, lda, nullptr, B, ldb, *beta, nullptr, C, ldc, count);
}

// ---- cuDNN (legacy convolution API) --------------------------------------------
// Descriptors are small structs; the convolutions are direct loops,
// honouring alpha and beta and rounding their inputs as the descriptor's
// math type says at run time (TENSOR_OP: TF32; ALLOW_CONVERSION: half).
//
// Find returns three algorithms, fastest first: a Winograd one
// (deterministic), algorithm 0 (not deterministic) and algorithm 1
// (deterministic), each with the math type it "ran" with; Winograd reports
// another math type than the descriptor's in the backward directions. A
// convolution run with a math type other than the one Find reported for
// its algorithm fails (CUDNN_STATUS_BAD_PARAM), so the tests check that
// package cuda sets it, as a real cuDNN would silently run another kernel.

struct EmuTensor { int n, c, h, w; };
struct EmuFilter { int k, c, h, w; };
struct EmuConv { int ph, pw, sh, sw, math, find_math[3]; };
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

// The Winograd algorithm of each direction (forward 6, backward data 4,
// backward filter 5 = WINOGRAD_NONFUSED).
static const int kWinograd[3] = {6, 4, 5};

// reported_math is the math type Find reports for algo in direction dir
// when the descriptor allowed find_math.
static int reported_math(int dir, int find_math, int algo) {
  if (algo != kWinograd[dir] || dir == 0) return find_math;
  return find_math == 1 ? 0 : find_math == 2 ? 1 : find_math;
}

// find1 fails (CUDNN_STATUS_NOT_SUPPORTED) for 13 output channels, so
// tests can check the per-shape fallback to im2col; in a capture it fails
// (it synchronises, like the real one).
static int find1(int dir, int req, int* ret, EmuPerf* perf, EmuConv* c, int k) {
  if (capturing) {
    capture_bad = true;
    return 8;  // CUDNN_STATUS_EXECUTION_FAILED
  }
  if (k == 13) return 9;
  if (req < 1) return 3;
  c->find_math[dir] = c->math;
  const int algos[3] = {kWinograd[dir], 0, 1}, det[3] = {1, 0, 1};
  *ret = req < 3 ? req : 3;
  for (int i = 0; i < *ret; i++)
    perf[i] = EmuPerf{algos[i], 0, 0.1f * (i + 1), 1024, det[i], reported_math(dir, c->math, algos[i]), {0, 0, 0}};
  return 0;
}
int cudnnFindConvolutionForwardAlgorithm(void*, EmuTensor* x, EmuFilter* w, EmuConv* c, EmuTensor* y, int req, int* ret,
                                         EmuPerf* perf) {
  return shapes_ok(x, w, c, y) ? find1(0, req, ret, perf, c, w->k) : 3;
}
int cudnnFindConvolutionBackwardDataAlgorithm(void*, EmuFilter* w, EmuTensor* dy, EmuConv* c, EmuTensor* dx, int req,
                                              int* ret, EmuPerf* perf) {
  return shapes_ok(dx, w, c, dy) ? find1(1, req, ret, perf, c, w->k) : 3;
}
int cudnnFindConvolutionBackwardFilterAlgorithm(void*, EmuTensor* x, EmuTensor* dy, EmuConv* c, EmuFilter* dw, int req,
                                                int* ret, EmuPerf* perf) {
  return shapes_ok(x, dw, c, dy) ? find1(2, req, ret, perf, c, dw->k) : 3;
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

static Round conv_round(int math) { return math == 1 ? kTF32 : math == 2 ? kFP16 : kNone; }

// conv_ok checks a run's arguments: the shapes, the workspace, an algorithm
// Find offered, with the math type Find reported for it.
static bool conv_ok(int dir, const EmuTensor* x, const EmuFilter* w, const EmuConv* c, const EmuTensor* y, int algo,
                    void* ws, size_t wss) {
  if (!shapes_ok(x, w, c, y) || !ws || wss < 1024) return false;
  if (algo != 0 && algo != 1 && algo != kWinograd[dir]) return false;
  return c->math == reported_math(dir, c->find_math[dir], algo);
}

extern "C" {

static void blend(float* out, const double* acc, size_t n, float alpha, float beta) {
  for (size_t i = 0; i < n; i++) out[i] = beta == 0 ? alpha * (float)acc[i] : alpha * (float)acc[i] + beta * out[i];
}

// conv_call runs or records one convolution direction with copies of its
// descriptors (a graph keeps the values of its capture).
static int conv_call(int dir, const float* alpha, EmuTensor* xd, EmuFilter* wd, EmuConv* cd, EmuTensor* yd,
                     const float* beta, const float* in1, const float* in2, float* out) {
  if (capturing && capture_bad) return 8;
  pending = true;
  EmuTensor x = *xd, y = *yd;
  EmuFilter w = *wd;
  EmuConv c = *cd;
  float a = *alpha, b = *beta;
  auto f = [=]() {
    Round rm = conv_round(c.math);
    size_t n = dir == 0 ? (size_t)y.n * y.c * y.h * y.w : dir == 1 ? (size_t)x.n * x.c * x.h * x.w
                                                                  : (size_t)w.k * w.c * w.h * w.w;
    double* acc = (double*)calloc(n, sizeof(double));
    // in1, in2: forward (x, w), backward data (w, dy), backward filter (x, dy).
    conv_loop(&x, &w, &c, &y, [&](size_t xi, size_t wi, size_t yi) {
      switch (dir) {
        case 0: acc[yi] += (double)rnd_mode(rm, in1[xi]) * rnd_mode(rm, in2[wi]); break;
        case 1: acc[xi] += (double)rnd_mode(rm, in1[wi]) * rnd_mode(rm, in2[yi]); break;
        default: acc[wi] += (double)rnd_mode(rm, in1[xi]) * rnd_mode(rm, in2[yi]); break;
      }
    });
    blend(out, acc, n, a, b);
    free(acc);
  };
  if (!record(f)) f();
  return 0;
}

int cudnnConvolutionForward(void*, const float* alpha, EmuTensor* xd, const float* x, EmuFilter* wd, const float* w,
                            EmuConv* cd, int algo, void* ws, size_t wss, const float* beta, EmuTensor* yd, float* y) {
  if (!conv_ok(0, xd, wd, cd, yd, algo, ws, wss)) return 3;
  return conv_call(0, alpha, xd, wd, cd, yd, beta, x, w, y);
}

int cudnnConvolutionBackwardData(void*, const float* alpha, EmuFilter* wd, const float* w, EmuTensor* dyd,
                                 const float* dy, EmuConv* cd, int algo, void* ws, size_t wss, const float* beta,
                                 EmuTensor* dxd, float* dx) {
  if (!conv_ok(1, dxd, wd, cd, dyd, algo, ws, wss)) return 3;
  return conv_call(1, alpha, dxd, wd, cd, dyd, beta, w, dy, dx);
}

int cudnnConvolutionBackwardFilter(void*, const float* alpha, EmuTensor* xd, const float* x, EmuTensor* dyd,
                                   const float* dy, EmuConv* cd, int algo, void* ws, size_t wss, const float* beta,
                                   EmuFilter* dwd, float* dw) {
  if (!conv_ok(2, xd, dwd, cd, dyd, algo, ws, wss)) return 3;
  return conv_call(2, alpha, xd, dwd, cd, dyd, beta, x, dy, dw);
}

}  // extern "C"
