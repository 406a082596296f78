// ops.cu: the CUDA kernels behind cuda.Device's kernels.Ops[Ptr] methods.
//
// Compiled to PTX without a CUDA SDK by Debian's clang-16 (see gen.go):
//   clang-16 -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc
//            -nocudalib -O3 -S ops.cu -o ops.ptx
// so there are no CUDA headers and no libdevice: the qualifiers are defined
// as attributes below and exp/sqrt come from NVVM intrinsics. Every kernel
// is extern "C" (unmangled names for cuModuleGetFunction), uses 32-bit
// sizes (all tensors here hold fewer than 2^31 values) and grid-stride
// loops where the grid is capped. The names and argument order follow the
// kernels.CPU methods: outputs first, then inputs, then dims.

#ifndef DDPM_EMU  // cuda/emu/emu.cpp compiles this file for the host
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#include <__clang_cuda_builtin_vars.h>
#endif

#define BLOCK 256

// Dynamically sized shared memory (the launch's sharedMem bytes).
#ifdef DDPM_EMU
#define DYNAMIC_SHARED(T, name) static T name[1 << 14]
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif
#define LOG2E 1.4426950408889634f

typedef unsigned long long u64;

// exp(x) = 2^(x log2 e) through ex2.approx (relative error about 2^-22).
static __device__ __attribute__((always_inline)) float exp_f(float x) {
  return __nvvm_ex2_approx_f(x * LOG2E);
}

static __device__ __attribute__((always_inline)) float sigmoid_f(float x) {
  return 1.0f / (1.0f + exp_f(-x));
}

#define GRID_STRIDE(i, n) \
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

// block_sum reduces v over a block of BLOCK threads through shared memory
// (fixed tree order, so results are deterministic); every thread gets it.
static __device__ float block_sum(float v, float* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = BLOCK / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}

static __device__ double block_sum_d(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = BLOCK / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  double r = sh[0];
  __syncthreads();
  return r;
}

static __device__ float block_max(float v, float* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = BLOCK / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] = __builtin_fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  float r = sh[0];
  __syncthreads();
  return r;
}

// ---- elementwise -----------------------------------------------------------

// y = x * sigmoid(x)
extern "C" __global__ void silu_fwd(float* y, const float* x, int n) {
  GRID_STRIDE(i, n) { float v = x[i]; y[i] = v * sigmoid_f(v); }
}

// dx = dy * s * (1 + x (1 - s)), s = sigmoid(x)
extern "C" __global__ void silu_bwd(float* dx, const float* dy, const float* x, int n) {
  GRID_STRIDE(i, n) {
    float v = x[i], s = sigmoid_f(v);
    dx[i] = dy[i] * s * (1.0f + v * (1.0f - s));
  }
}

extern "C" __global__ void add_f(float* y, const float* a, const float* b, int n) {
  GRID_STRIDE(i, n) { y[i] = a[i] + b[i]; }
}

extern "C" __global__ void mul_f(float* y, const float* a, const float* b, int n) {
  GRID_STRIDE(i, n) { y[i] = a[i] * b[i]; }
}

// y = alpha x + beta y; beta == 0 overwrites (NaN in y ignored).
extern "C" __global__ void axpby_f(float* y, float alpha, const float* x, float beta, int n) {
  if (beta == 0.0f) {
    GRID_STRIDE(i, n) { y[i] = alpha * x[i]; }
  } else {
    GRID_STRIDE(i, n) { y[i] = alpha * x[i] + beta * y[i]; }
  }
}

// y = min(max(x, lo), hi); NaN stays NaN.
extern "C" __global__ void clamp_f(float* y, const float* x, float lo, float hi, int n) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    if (v < lo) v = lo; else if (v > hi) v = hi;
    y[i] = v;
  }
}

// Stage 1 of sum of squares: partial[blockIdx.x] = sum over this block's
// grid-stride share of x^2, accumulated in double.
extern "C" __global__ void sumsq_partial(double* partial, const float* x, int n) {
  __shared__ double sh[BLOCK];
  double acc = 0.0;
  GRID_STRIDE(i, n) { double v = x[i]; acc += v * v; }
  double s = block_sum_d(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Stage 2: out[0] = (float) sum of m partials (one block).
extern "C" __global__ void sum_partials(float* out, const double* partial, int m) {
  __shared__ double sh[BLOCK];
  double acc = 0.0;
  for (int i = threadIdx.x; i < m; i += BLOCK) acc += partial[i];
  double s = block_sum_d(acc, sh);
  if (threadIdx.x == 0) out[0] = (float)s;
}

// ---- per-channel bias ------------------------------------------------------

// y[r, p] = x[r, p] + bias[r] for r < rows (= N*C), p < hw.
extern "C" __global__ void add_channel_bias(float* y, const float* x, const float* bias, int rows, int hw) {
  int n = rows * hw;
  GRID_STRIDE(i, n) { y[i] = x[i] + bias[i / hw]; }
}

// dbias[r] = sum_p dy[r, p]; one block per row r.
extern "C" __global__ void row_sum(float* dbias, const float* dy, int hw) {
  __shared__ float sh[BLOCK];
  const float* row = dy + (long long)blockIdx.x * hw;
  float acc = 0.0f;
  for (int p = threadIdx.x; p < hw; p += BLOCK) acc += row[p];
  float s = block_sum(acc, sh);
  if (threadIdx.x == 0) dbias[blockIdx.x] = s;
}

// y[m, o] += b[o] for a row-major (rows, cols) matrix (Linear's bias).
extern "C" __global__ void add_row_bias(float* y, const float* b, int rows, int cols) {
  int n = rows * cols;
  GRID_STRIDE(i, n) { y[i] += b[i % cols]; }
}

// db[o] = sum_m dy[m, o]; one thread per column (coalesced over o).
extern "C" __global__ void col_sum(float* db, const float* dy, int rows, int cols) {
  GRID_STRIDE(o, cols) {
    float acc = 0.0f;
    for (int m = 0; m < rows; m++) acc += dy[(long long)m * cols + o];
    db[o] = acc;
  }
}

// Stage 1 of a column sum over many rows: partial[blockIdx.y, o] = sum of
// dy[m, o] over rows m in chunk blockIdx.y (rows_per_chunk rows).
// Grid (ceil(cols/BLOCK), chunks); col_sum then adds the partials.
extern "C" __global__ void col_sum_partial(float* partial, const float* dy, int rows, int cols, int rows_per_chunk) {
  int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= cols) return;
  int m0 = blockIdx.y * rows_per_chunk, m1 = m0 + rows_per_chunk;
  if (m1 > rows) m1 = rows;
  float acc = 0.0f;
  for (int m = m0; m < m1; m++) acc += dy[(long long)m * cols + o];
  partial[(long long)blockIdx.y * cols + o] = acc;
}

// db[k] = sum_{n,p} dy[n, k, p]; one block per k.
extern "C" __global__ void conv_bias_grad(float* db, const float* dy, int n, int k, int p) {
  __shared__ float sh[BLOCK];
  int kk = blockIdx.x;
  float acc = 0.0f;
  for (int b = 0; b < n; b++) {
    const float* row = dy + ((long long)b * k + kk) * p;
    for (int j = threadIdx.x; j < p; j += BLOCK) acc += row[j];
  }
  float s = block_sum(acc, sh);
  if (threadIdx.x == 0) db[kk] = s;
}

// ---- layout ----------------------------------------------------------------

// (K, N, P) -> (N, K, P), adding bias[k] when bias is not null.
// Row kernels: grid (ceil(p/BLOCK), min(rows, 65535)); each block walks
// rows blockIdx.y, + gridDim.y, ... and covers p positions of each, so the
// row decoding (divisions) happens once per row, not once per element, and
// both sides of the copy are contiguous in p.
#define ROW_LOOP(row, rows) for (int row = blockIdx.y; row < (rows); row += gridDim.y)

extern "C" __global__ void knp_to_nkp(float* y, const float* t, const float* bias, int n, int k, int p) {
  int pp = blockIdx.x * blockDim.x + threadIdx.x;
  if (pp >= p) return;
  ROW_LOOP(row, n * k) {
    int kk = row % k, b = row / k;
    float v = t[((long long)kk * n + b) * p + pp];
    if (bias) v += bias[kk];
    y[(long long)row * p + pp] = v;
  }
}

// (N, K, P) -> (K, N, P).
// y[b, k, p] += bias[k] for y (N, K, P); rows are (b, k), rows = N*K.
extern "C" __global__ void add_bias_nkp(float* y, const float* bias, int rows, int k, int p) {
  int pp = blockIdx.x * blockDim.x + threadIdx.x;
  if (pp >= p) return;
  ROW_LOOP(row, rows) { y[(long long)row * p + pp] += bias[row % k]; }
}

extern "C" __global__ void nkp_to_knp(float* t, const float* y, int n, int k, int p) {
  int pp = blockIdx.x * blockDim.x + threadIdx.x;
  if (pp >= p) return;
  ROW_LOOP(row, n * k) {
    int b = row % n, kk = row / n;
    t[(long long)row * p + pp] = y[((long long)b * k + kk) * p + pp];
  }
}

// y[b, j, i] = x[b, i, j] for x (B, I, J); 32x32 tiles through shared memory.
// Grid (ceil(J/32), ceil(I/32), B), block (32, 8).
extern "C" __global__ void transpose12(float* y, const float* x, int ni, int nj) {
  __shared__ float tile[32][33];
  long long base = (long long)blockIdx.z * ni * nj;
  int j0 = blockIdx.x * 32, i0 = blockIdx.y * 32;
  for (int r = threadIdx.y; r < 32; r += 8) {
    int i = i0 + r, j = j0 + threadIdx.x;
    if (i < ni && j < nj) tile[r][threadIdx.x] = x[base + (long long)i * nj + j];
  }
  __syncthreads();
  for (int r = threadIdx.y; r < 32; r += 8) {
    int j = j0 + r, i = i0 + threadIdx.x;
    if (i < ni && j < nj) y[base + (long long)j * ni + i] = tile[threadIdx.x][r];
  }
}

// y (N, Ca+Cb, HW) = [a (N, Ca, HW), b (N, Cb, HW)].
extern "C" __global__ void concat_ch(float* y, const float* a, const float* b, int n, int ca, int cb, int hw) {
  int c = ca + cb, total = n * c * hw;
  GRID_STRIDE(i, total) {
    int p = i % hw, r = i / hw, ch = r % c, bb = r / c;
    y[i] = ch < ca ? a[((long long)bb * ca + ch) * hw + p] : b[((long long)bb * cb + (ch - ca)) * hw + p];
  }
}

// da, db (either may be null) from dy (N, Ca+Cb, HW).
extern "C" __global__ void split_ch(float* da, float* db, const float* dy, int n, int ca, int cb, int hw) {
  int c = ca + cb, total = n * c * hw;
  GRID_STRIDE(i, total) {
    int p = i % hw, r = i / hw, ch = r % c, bb = r / c;
    if (ch < ca) {
      if (da) da[((long long)bb * ca + ch) * hw + p] = dy[i];
    } else if (db) {
      db[((long long)bb * cb + (ch - ca)) * hw + p] = dy[i];
    }
  }
}

// Nearest 2x: y (NC, 2H, 2W) from x (NC, H, W).
extern "C" __global__ void upsample2x(float* y, const float* x, int nc, int h, int w) {
  int oh = 2 * h, ow = 2 * w, total = nc * oh * ow;
  GRID_STRIDE(i, total) {
    int xx = i % ow, r = i / ow, yy = r % oh, c = r / oh;
    y[i] = x[((long long)c * h + yy / 2) * w + xx / 2];
  }
}

// dx (NC, H, W) = sum of the 2x2 block of dy (NC, 2H, 2W).
extern "C" __global__ void upsample2x_bwd(float* dx, const float* dy, int nc, int h, int w) {
  int total = nc * h * w, ow = 2 * w;
  GRID_STRIDE(i, total) {
    int xx = i % w, r = i / w, yy = r % h, c = r / h;
    const float* d = dy + ((long long)c * 2 * h + 2 * yy) * ow + 2 * xx;
    dx[i] = (d[0] + d[1]) + (d[ow] + d[ow + 1]);
  }
}

// ---- convolution through im2col --------------------------------------------

// col (C*R*S, nb, OH*OW) for images n0..n0+nb-1 of x (N, C, H, W):
// col[(c,r,s), b, (oh,ow)] = x[n0+b, c, oh*sh - pt + r, ow*sw - pl + s] or 0.
extern "C" __global__ void im2col(float* col, const float* x, int n0, int nb, int c, int h, int w,
                                  int r, int s, int sh, int sw, int pt, int pl, int oh, int ow) {
  int p = oh * ow;
  int pp = blockIdx.x * blockDim.x + threadIdx.x;
  if (pp >= p) return;
  int oy = pp / ow, ox = pp - oy * ow;
  ROW_LOOP(row, c * r * s * nb) {  // row = (c, r, s) * nb + b, a grid-row launch
    int b = row % nb, crs = row / nb;
    int ss = crs % s, rr = (crs / s) % r, cc = crs / (r * s);
    int iy = oy * sh - pt + rr, ix = ox * sw - pl + ss;
    float v = 0.0f;
    if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[(((long long)(n0 + b) * c + cc) * h + iy) * w + ix];
    col[(long long)row * p + pp] = v;
  }
}

// dx[n0+b, c, y, x] = sum over (r, s) whose output position lands on (y, x)
// of dcol[(c,r,s), b, (oh,ow)] (a gather: no atomics, deterministic).
extern "C" __global__ void col2im(float* dx, const float* dcol, int n0, int nb, int c, int h, int w,
                                  int r, int s, int sh, int sw, int pt, int pl, int oh, int ow) {
  int p = oh * ow, total = nb * c * h * w;
  GRID_STRIDE(i, total) {
    int ix = i % w, t = i / w, iy = t % h; t /= h;
    int cc = t % c, b = t / c;
    float acc = 0.0f;
    for (int rr = 0; rr < r; rr++) {
      int ty = iy + pt - rr;
      if (ty < 0 || ty % sh != 0) continue;
      int oy = ty / sh;
      if (oy >= oh) continue;
      for (int ss = 0; ss < s; ss++) {
        int tx = ix + pl - ss;
        if (tx < 0 || tx % sw != 0) continue;
        int ox = tx / sw;
        if (ox >= ow) continue;
        int crs = (cc * r + rr) * s + ss;
        acc += dcol[((long long)crs * nb + b) * p + oy * ow + ox];
      }
    }
    dx[(long long)n0 * c * h * w + i] = acc;
  }
}

// ---- group normalisation (+ SiLU) -------------------------------------------

// gamma and beta may be null (meaning 1 and 0) here and in the backward.
// One block per (n, g): two passes (mean, then centred variance) over the
// group's cpg*hw values, then z = (x - mu) rstd gamma[c] + beta[c] and
// y = z or z sigmoid(z).
extern "C" __global__ void groupnorm_fwd(float* y, float* mean, float* rstd, const float* x,
                                         const float* gamma, const float* beta, int c, int hw,
                                         int groups, float eps, int silu) {
  __shared__ float sh[BLOCK];
  int ng = blockIdx.x, g = ng % groups, cpg = c / groups, cnt = cpg * hw;
  long long off = (long long)ng * cnt;  // (n, g) groups are contiguous in NCHW
  const float* xg = x + off;
  float acc = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) acc += xg[i];
  float mu = block_sum(acc, sh) / (float)cnt;
  acc = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) { float d = xg[i] - mu; acc += d * d; }
  float var = block_sum(acc, sh) / (float)cnt;
  float rs = 1.0f / __nvvm_sqrt_rn_f(var + eps);
  if (threadIdx.x == 0) { mean[ng] = mu; rstd[ng] = rs; }
  float* yg = y + off;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) {
    int ch = g * cpg + i / hw;
    float z = (xg[i] - mu) * rs * (gamma ? gamma[ch] : 1.0f) + (beta ? beta[ch] : 0.0f);
    if (silu) z = z * sigmoid_f(z);
    yg[i] = z;
  }
}

// dz = dL/dz given dy, undoing the SiLU when present.
static __device__ __attribute__((always_inline)) float gn_dz(float dy, float xhat, float gm, float bt, int silu) {
  if (!silu) return dy;
  float z = xhat * gm + bt, s = sigmoid_f(z);
  return dy * s * (1.0f + z * (1.0f - s));
}

// dx for one (n, g) per block:
// dx = rstd (gd - mean(gd) - xhat mean(gd xhat)), gd = dz gamma[c].
extern "C" __global__ void groupnorm_bwd_dx(float* dx, const float* dy, const float* x, const float* mean,
                                            const float* rstd, const float* gamma, const float* beta,
                                            int c, int hw, int groups, int silu) {
  __shared__ float sh[BLOCK];
  int ng = blockIdx.x, g = ng % groups, cpg = c / groups, cnt = cpg * hw;
  long long off = (long long)ng * cnt;
  float mu = mean[ng], rs = rstd[ng];
  float a1 = 0.0f, a2 = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) {
    int ch = g * cpg + i / hw;
    float xh = (x[off + i] - mu) * rs;
    float gm = gamma ? gamma[ch] : 1.0f, bt = beta ? beta[ch] : 0.0f;
    float gd = gn_dz(dy[off + i], xh, gm, bt, silu) * gm;
    a1 += gd;
    a2 += gd * xh;
  }
  float m1 = block_sum(a1, sh) / (float)cnt;
  float m2 = block_sum(a2, sh) / (float)cnt;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) {
    int ch = g * cpg + i / hw;
    float xh = (x[off + i] - mu) * rs;
    float gm = gamma ? gamma[ch] : 1.0f, bt = beta ? beta[ch] : 0.0f;
    float gd = gn_dz(dy[off + i], xh, gm, bt, silu) * gm;
    dx[off + i] = rs * (gd - m1 - xh * m2);
  }
}

// Variant 2 of groupnorm_fwd: the group's cnt values are loaded once into
// dynamic shared memory (cnt*4 bytes, at most 48 KiB), so global memory is
// read once instead of three times. Same results as variant 1 (same
// reduction order).
extern "C" __global__ void groupnorm_fwd_smem(float* y, float* mean, float* rstd, const float* x,
                                              const float* gamma, const float* beta, int c, int hw,
                                              int groups, float eps, int silu) {
  __shared__ float sh[BLOCK];
  DYNAMIC_SHARED(float, xs);
  int ng = blockIdx.x, g = ng % groups, cpg = c / groups, cnt = cpg * hw;
  long long off = (long long)ng * cnt;
  const float* xg = x + off;
  float acc = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) { float v = xg[i]; xs[i] = v; acc += v; }
  float mu = block_sum(acc, sh) / (float)cnt;
  acc = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) { float d = xs[i] - mu; acc += d * d; }
  float var = block_sum(acc, sh) / (float)cnt;
  float rs = 1.0f / __nvvm_sqrt_rn_f(var + eps);
  if (threadIdx.x == 0) { mean[ng] = mu; rstd[ng] = rs; }
  float* yg = y + off;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) {
    int ch = g * cpg + i / hw;
    float z = (xs[i] - mu) * rs * (gamma ? gamma[ch] : 1.0f) + (beta ? beta[ch] : 0.0f);
    if (silu) z = z * sigmoid_f(z);
    yg[i] = z;
  }
}

// Variant 2 of groupnorm_bwd_dx: gd = dz gamma and xhat are computed once
// and kept in dynamic shared memory (2*cnt*4 bytes, at most 48 KiB).
extern "C" __global__ void groupnorm_bwd_dx_smem(float* dx, const float* dy, const float* x, const float* mean,
                                                 const float* rstd, const float* gamma, const float* beta,
                                                 int c, int hw, int groups, int silu) {
  __shared__ float sh[BLOCK];
  DYNAMIC_SHARED(float, buf);
  int ng = blockIdx.x, g = ng % groups, cpg = c / groups, cnt = cpg * hw;
  float* gds = buf;
  float* xhs = buf + cnt;
  long long off = (long long)ng * cnt;
  float mu = mean[ng], rs = rstd[ng];
  float a1 = 0.0f, a2 = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) {
    int ch = g * cpg + i / hw;
    float xh = (x[off + i] - mu) * rs;
    float gm = gamma ? gamma[ch] : 1.0f, bt = beta ? beta[ch] : 0.0f;
    float gd = gn_dz(dy[off + i], xh, gm, bt, silu) * gm;
    gds[i] = gd;
    xhs[i] = xh;
    a1 += gd;
    a2 += gd * xh;
  }
  float m1 = block_sum(a1, sh) / (float)cnt;
  float m2 = block_sum(a2, sh) / (float)cnt;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) dx[off + i] = rs * (gds[i] - m1 - xhs[i] * m2);
}

// dgamma[c] = sum_{n,p} dz xhat, dbeta[c] = sum_{n,p} dz; one block per c.
extern "C" __global__ void groupnorm_bwd_affine(float* dgamma, float* dbeta, const float* dy, const float* x,
                                                const float* mean, const float* rstd, const float* gamma,
                                                const float* beta, int n, int c, int hw, int groups, int silu) {
  __shared__ float sh[BLOCK];
  int ch = blockIdx.x, g = ch / (c / groups);
  float gm = gamma ? gamma[ch] : 1.0f, bt = beta ? beta[ch] : 0.0f;
  float ag = 0.0f, ab = 0.0f;
  for (int b = 0; b < n; b++) {
    int ng = b * groups + g;
    float mu = mean[ng], rs = rstd[ng];
    long long off = ((long long)b * c + ch) * hw;
    for (int p = threadIdx.x; p < hw; p += BLOCK) {
      float xh = (x[off + p] - mu) * rs;
      float dz = gn_dz(dy[off + p], xh, gm, bt, silu);
      ag += dz * xh;
      ab += dz;
    }
  }
  float sg = block_sum(ag, sh);
  float sb = block_sum(ab, sh);
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[ch] = sg;
    if (dbeta) dbeta[ch] = sb;
  }
}

// ---- attention ---------------------------------------------------------------

// ptrs[i] = base + (i / inner) * outer_stride + (i % inner) * inner_stride
// (byte addresses), the operand tables for cublasSgemmBatched.
extern "C" __global__ void fill_ptrs(u64* ptrs, u64 base, u64 outer_stride, u64 inner_stride, int inner, int count) {
  GRID_STRIDE(i, count) {
    ptrs[i] = base + (u64)(i / inner) * outer_stride + (u64)(i % inner) * inner_stride;
  }
}

// In place row softmax over cols of p = softmax(s * scale); one block per row.
extern "C" __global__ void softmax_rows(float* p, const float* s, int cols, float scale) {
  __shared__ float sh[BLOCK];
  long long off = (long long)blockIdx.x * cols;
  float m = -__builtin_inff();
  for (int j = threadIdx.x; j < cols; j += BLOCK) m = __builtin_fmaxf(m, s[off + j] * scale);
  m = block_max(m, sh);
  float acc = 0.0f;
  for (int j = threadIdx.x; j < cols; j += BLOCK) {
    float e = exp_f(s[off + j] * scale - m);
    p[off + j] = e;
    acc += e;
  }
  float inv = 1.0f / block_sum(acc, sh);
  for (int j = threadIdx.x; j < cols; j += BLOCK) p[off + j] *= inv;
}

// ds = scale * p * (dp - sum_j p dp) per row (ds may alias dp); one block per row.
extern "C" __global__ void softmax_bwd_rows(float* ds, const float* p, const float* dp, int cols, float scale) {
  __shared__ float sh[BLOCK];
  long long off = (long long)blockIdx.x * cols;
  float acc = 0.0f;
  for (int j = threadIdx.x; j < cols; j += BLOCK) acc += p[off + j] * dp[off + j];
  float dot = block_sum(acc, sh);
  for (int j = threadIdx.x; j < cols; j += BLOCK) ds[off + j] = scale * p[off + j] * (dp[off + j] - dot);
}

// ---- embedding, optimiser ------------------------------------------------------

// y[i, :] = table[ids[i], :].
extern "C" __global__ void embedding_fwd(float* y, const float* table, const int* ids, int count, int dim) {
  int total = count * dim;
  GRID_STRIDE(i, total) { y[i] = table[(long long)ids[i / dim] * dim + i % dim]; }
}

// dtable[v, j] = sum_{i: ids[i] = v} dy[i, j] (a gather over ids: deterministic).
extern "C" __global__ void embedding_bwd(float* dtable, const float* dy, const int* ids, int count, int vocab, int dim) {
  int total = vocab * dim;
  GRID_STRIDE(t, total) {
    int v = t / dim, j = t % dim;
    float acc = 0.0f;
    for (int i = 0; i < count; i++)
      if (ids[i] == v) acc += dy[(long long)i * dim + j];
    dtable[t] = acc;
  }
}

// AdamW (Loshchilov & Hutter 2019) with bias corrections bc1 = 1/(1-b1^t),
// bc2 = 1/(1-b2^t) computed on the host.
extern "C" __global__ void adamw(float* p, float* m, float* v, const float* g, float lr, float b1, float b2,
                                 float eps, float wd, float bc1, float bc2, int n) {
  GRID_STRIDE(i, n) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float upd = mi * bc1 / (__nvvm_sqrt_rn_f(vi * bc2) + eps) + wd * p[i];
    p[i] -= lr * upd;
  }
}

// ema = decay ema + (1 - decay) p.
extern "C" __global__ void ema_f(float* e, const float* p, float decay, int n) {
  GRID_STRIDE(i, n) { e[i] = decay * e[i] + (1.0f - decay) * p[i]; }
}

// ---- training ----------------------------------------------------------------

// log(x) through lg2.approx.
static __device__ __attribute__((always_inline)) float log_f(float x) {
  return __nvvm_lg2_approx_f(x) * 0.6931471805599453f;
}

// kernels.DropoutKeep: a SplitMix64 hash of seed + (i+1)*golden, top 24 bits
// as u in [0, 1); keep when u >= p.
static __device__ __attribute__((always_inline)) bool dropout_keep(u64 seed, u64 i, float p) {
  u64 z = seed + (i + 1ULL) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  float u = (float)(z >> 40) * (1.0f / 16777216.0f);
  return u >= p;
}

// y[i] = keep(seed, offset+i) ? x[i] * scale : 0, scale = 1/(1-p).
extern "C" __global__ void dropout_f(float* y, const float* x, float p, float scale, u64 seed, long long offset, int n) {
  GRID_STRIDE(i, n) { y[i] = dropout_keep(seed, (u64)(offset + i), p) ? x[i] * scale : 0.0f; }
}

// out[0] = sqrt(sum of m double partials) (one block): the norm for Norm.
extern "C" __global__ void sqrt_sum_partials(float* out, const double* partial, int m) {
  __shared__ double sh[BLOCK];
  double acc = 0.0;
  for (int i = threadIdx.x; i < m; i += BLOCK) acc += partial[i];
  double s = block_sum_d(acc, sh);
  if (threadIdx.x == 0) out[0] = (float)__builtin_sqrt(s);
}

// x *= maxNorm / norm[0] when norm[0] > maxNorm.
extern "C" __global__ void clip_to_norm(float* x, const float* norm, float maxNorm, int n) {
  float nv = norm[0];
  if (!(nv > maxNorm)) return;
  float s = maxNorm / nv;
  GRID_STRIDE(i, n) { x[i] *= s; }
}

// erfc(z), fractional error below 1.2e-7 (the Chebyshev fit of Numerical
// Recipes' erfcc), from exp alone: there is no libdevice here.
static __device__ float erfc_f(float z) {
  float a = __builtin_fabsf(z);
  float t = 1.0f / (1.0f + 0.5f * a);
  float r = t * exp_f(-a * a - 1.26551223f +
                      t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f +
                      t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f)))))))));
  return z >= 0.0f ? r : 2.0f - r;
}

static __device__ float std_cdf(float z) { return 0.5f * erfc_f(-z * 0.70710678118654752f); }
static __device__ float std_pdf(float z) { return exp_f(-0.5f * z * z) * 0.3989422804014327f; }

// Indices of a DiffusionLoss coefficient row (kernels.Coef*).
enum { kTX0, kTN, kSA, kSB, kCX, kCO, kC1, kC2, kQLV, kMinLV, kMaxLV, kWMSE, kWVB, kDec, kStop, kW, kNCoef };

// One block per example: dout of the example and terms[3i..3i+2] = (loss,
// mse, vb) (kernels.CPU.DiffusionLoss in float32).
extern "C" __global__ void diffusion_loss(float* terms, float* dout, const float* out, const float* x0,
                                          const float* noise, const float* coef, int D, int learned, int range) {
  __shared__ float sh[BLOCK];
  int i = blockIdx.x;
  const float* k = coef + (long long)i * kNCoef;
  int per = learned ? 2 * D : D;
  const float* o = out + (long long)i * per;
  float* g = dout + (long long)i * per;
  const float* a0 = x0 + (long long)i * D;
  const float* nz = noise + (long long)i * D;
  float w = k[kW], wmse = k[kWMSE], wvb = k[kWVB];
  float norm = w * wvb / ((float)D * 0.6931471805599453f);
  float mse = 0.0f, vb = 0.0f;
  for (int j = threadIdx.x; j < D; j += BLOCK) {
    float a = a0[j], n = nz[j], oj = o[j];
    float r = oj - (k[kTX0] * a + k[kTN] * n);
    mse += r * r;
    float gm = w * wmse * 2.0f * r / (float)D, gv = 0.0f;
    if (wvb != 0.0f) {
      float xt = k[kSA] * a + k[kSB] * n;
      float mu = k[kC1] * (k[kCX] * xt + k[kCO] * oj) + k[kC2] * xt;
      float lv = k[kMinLV], dlv = 0.0f;
      if (learned) {
        float v = o[D + j];
        if (range) {
          float f = 0.5f * (v + 1.0f);
          lv = f * k[kMaxLV] + (1.0f - f) * k[kMinLV];
          dlv = 0.5f * (k[kMaxLV] - k[kMinLV]);
        } else {
          lv = v;
          dlv = 1.0f;
        }
      }
      float term, dmu, dlogvar;
      if (k[kDec] != 0.0f) {
        // -log of the discretised Gaussian's mass on a's 8-bit bin.
        float inv = exp_f(-0.5f * lv), h = 1.0f / 255.0f;
        float ua = inv * (a - mu + h), ub = inv * (a - mu - h), p, dm, dls;
        if (a < -0.999f) {
          p = std_cdf(ua);
          float rr = p < 1e-12f ? 0.0f : std_pdf(ua) / p;
          dm = -inv * rr;
          dls = -ua * rr;
        } else if (a > 0.999f) {
          p = std_cdf(-ub);
          float rr = p < 1e-12f ? 0.0f : std_pdf(ub) / p;
          dm = inv * rr;
          dls = ub * rr;
        } else {
          if (ub > 0.0f) p = std_cdf(-ub) - std_cdf(-ua);
          else if (ua < 0.0f) p = std_cdf(ua) - std_cdf(ub);
          else p = 1.0f - std_cdf(-ua) - std_cdf(ub);
          float pa = std_pdf(ua), pb = std_pdf(ub);
          dm = p < 1e-12f ? 0.0f : -inv * (pa - pb) / p;
          dls = p < 1e-12f ? 0.0f : -(ua * pa - ub * pb) / p;
        }
        if (p < 1e-12f) p = 1e-12f;
        term = -log_f(p);
        dmu = -dm;
        dlogvar = -0.5f * dls;  // d/dlv of -lp with logScale = lv/2
      } else {
        float dq = (k[kC1] * a + k[kC2] * xt) - mu, iv = exp_f(-lv), rr = exp_f(k[kQLV] - lv);
        term = 0.5f * (-1.0f + lv - k[kQLV] + rr + dq * dq * iv);
        dmu = -dq * iv;
        dlogvar = 0.5f * (1.0f - rr - dq * dq * iv);
      }
      vb += term;
      if (k[kStop] == 0.0f) gm += norm * dmu * k[kC1] * k[kCO];
      gv = norm * dlogvar * dlv;
    }
    g[j] = gm;
    if (learned) g[D + j] = gv;
  }
  mse = block_sum(mse, sh) / (float)D;
  vb = block_sum(vb, sh) / ((float)D * 0.6931471805599453f);
  if (threadIdx.x == 0) {
    terms[3 * i] = wmse * mse + (wvb != 0.0f ? wvb * vb : 0.0f);
    terms[3 * i + 1] = mse;
    terms[3 * i + 2] = wvb != 0.0f ? vb : 0.0f;
  }
}

// loss[0] = sum_i coef[i][W] * terms[3i] (one block, fixed order).
extern "C" __global__ void loss_sum(float* loss, const float* terms, const float* coef, int n) {
  __shared__ float sh[BLOCK];
  float acc = 0.0f;
  for (int i = threadIdx.x; i < n; i += BLOCK) acc += coef[(long long)i * kNCoef + kW] * terms[3 * i];
  float s = block_sum(acc, sh);
  if (threadIdx.x == 0) loss[0] = s;
}

// ---- ADM (guided-diffusion) layers -------------------------------------------
// Dhariwal & Nichol 2021, openai/guided-diffusion guided_diffusion/unet.py;
// the CPU twins are in kernels/adm.go.

// Effective affine of channel ch of example n after the scale-shift step:
// z' = (xhat gamma + beta)(1 + s) + shift = xhat gm + bt.
static __device__ __attribute__((always_inline)) void gn_ss_affine(float* gm, float* bt, const float* gamma,
                                                                    const float* beta, const float* ss,
                                                                    int n, int ch, int c) {
  float s1 = 1.0f + ss[(long long)n * 2 * c + ch];
  *gm = (gamma ? gamma[ch] : 1.0f) * s1;
  *bt = (beta ? beta[ch] : 0.0f) * s1 + ss[(long long)n * 2 * c + c + ch];
}

// GroupNorm + scale-shift (+ SiLU): one block per (n, g), two-pass
// statistics as groupnorm_fwd, then z' = xhat gm + bt and y = z' or
// z' sigmoid(z'); ss (N, 2C) holds the scales then the shifts.
extern "C" __global__ void groupnorm_ss_fwd(float* y, float* mean, float* rstd, const float* x,
                                            const float* gamma, const float* beta, const float* ss,
                                            int c, int hw, int groups, float eps, int silu) {
  __shared__ float sh[BLOCK];
  int ng = blockIdx.x, n = ng / groups, g = ng % groups, cpg = c / groups, cnt = cpg * hw;
  long long off = (long long)ng * cnt;
  const float* xg = x + off;
  float acc = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) acc += xg[i];
  float mu = block_sum(acc, sh) / (float)cnt;
  acc = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) { float d = xg[i] - mu; acc += d * d; }
  float var = block_sum(acc, sh) / (float)cnt;
  float rs = 1.0f / __nvvm_sqrt_rn_f(var + eps);
  if (threadIdx.x == 0) { mean[ng] = mu; rstd[ng] = rs; }
  float* yg = y + off;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) {
    float gm, bt;
    gn_ss_affine(&gm, &bt, gamma, beta, ss, n, g * cpg + i / hw, c);
    float z = (xg[i] - mu) * rs * gm + bt;
    if (silu) z = z * sigmoid_f(z);
    yg[i] = z;
  }
}

// dx of groupnorm_ss_fwd, one block per (n, g):
// dx = rstd (gd - mean(gd) - xhat mean(gd xhat)), gd = dz gm.
extern "C" __global__ void groupnorm_ss_bwd_dx(float* dx, const float* dy, const float* x, const float* mean,
                                               const float* rstd, const float* gamma, const float* beta,
                                               const float* ss, int c, int hw, int groups, int silu) {
  __shared__ float sh[BLOCK];
  int ng = blockIdx.x, n = ng / groups, g = ng % groups, cpg = c / groups, cnt = cpg * hw;
  long long off = (long long)ng * cnt;
  float mu = mean[ng], rs = rstd[ng];
  float a1 = 0.0f, a2 = 0.0f;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) {
    float gm, bt;
    gn_ss_affine(&gm, &bt, gamma, beta, ss, n, g * cpg + i / hw, c);
    float xh = (x[off + i] - mu) * rs;
    float gd = gn_dz(dy[off + i], xh, gm, bt, silu) * gm;
    a1 += gd;
    a2 += gd * xh;
  }
  float m1 = block_sum(a1, sh) / (float)cnt;
  float m2 = block_sum(a2, sh) / (float)cnt;
  for (int i = threadIdx.x; i < cnt; i += BLOCK) {
    float gm, bt;
    gn_ss_affine(&gm, &bt, gamma, beta, ss, n, g * cpg + i / hw, c);
    float xh = (x[off + i] - mu) * rs;
    float gd = gn_dz(dy[off + i], xh, gm, bt, silu) * gm;
    dx[off + i] = rs * (gd - m1 - xh * m2);
  }
}

// stats[2 (n C + c) + {0, 1}] = sum_p dz and sum_p dz xhat of one (n, c)
// row of groupnorm_ss_fwd; one block per row.
extern "C" __global__ void groupnorm_ss_bwd_stats(float* stats, const float* dy, const float* x, const float* mean,
                                                  const float* rstd, const float* gamma, const float* beta,
                                                  const float* ss, int c, int hw, int groups, int silu) {
  __shared__ float sh[BLOCK];
  int row = blockIdx.x, n = row / c, ch = row % c, ng = n * groups + ch / (c / groups);
  long long off = (long long)row * hw;
  float mu = mean[ng], rs = rstd[ng], gm, bt;
  gn_ss_affine(&gm, &bt, gamma, beta, ss, n, ch, c);
  float a1 = 0.0f, a2 = 0.0f;
  for (int p = threadIdx.x; p < hw; p += BLOCK) {
    float xh = (x[off + p] - mu) * rs;
    float dz = gn_dz(dy[off + p], xh, gm, bt, silu);
    a1 += dz;
    a2 += dz * xh;
  }
  float s1 = block_sum(a1, sh);
  float s2 = block_sum(a2, sh);
  if (threadIdx.x == 0) { stats[2 * row] = s1; stats[2 * row + 1] = s2; }
}

// From the row sums: dss[n, c] = gamma sdzx + beta sdz, dss[n, C+c] = sdz,
// dgamma[c] = sum_n (1+s) sdzx, dbeta[c] = sum_n (1+s) sdz (each may be null).
extern "C" __global__ void groupnorm_ss_bwd_params(float* dgamma, float* dbeta, float* dss, const float* stats,
                                                   const float* ss, const float* gamma, const float* beta,
                                                   int n, int c) {
  if (dss) {
    GRID_STRIDE(i, n * c) {
      int b = i / c, ch = i % c;
      float sdz = stats[2 * i], sdzx = stats[2 * i + 1];
      dss[(long long)b * 2 * c + ch] = (gamma ? gamma[ch] : 1.0f) * sdzx + (beta ? beta[ch] : 0.0f) * sdz;
      dss[(long long)b * 2 * c + c + ch] = sdz;
    }
  }
  GRID_STRIDE(ch, c) {
    float sg = 0.0f, sb = 0.0f;
    for (int b = 0; b < n; b++) {
      float s1 = 1.0f + ss[(long long)b * 2 * c + ch];
      sb += s1 * stats[2 * (b * c + ch)];
      sg += s1 * stats[2 * (b * c + ch) + 1];
    }
    if (dgamma) dgamma[ch] = sg;
    if (dbeta) dbeta[ch] = sb;
  }
}

// 2x2 average pooling: y (NC, H, W) from x (NC, 2H, 2W).
extern "C" __global__ void avgpool2x(float* y, const float* x, int nc, int h, int w) {
  int total = nc * h * w, iw = 2 * w;
  GRID_STRIDE(i, total) {
    int xx = i % w, r = i / w, yy = r % h, ch = r / h;
    const float* s = x + ((long long)ch * 2 * h + 2 * yy) * iw + 2 * xx;
    y[i] = ((s[0] + s[1]) + (s[iw] + s[iw + 1])) * 0.25f;
  }
}

// dx (NC, 2H, 2W) = dy (NC, H, W) / 4 spread over each 2x2 block.
extern "C" __global__ void avgpool2x_bwd(float* dx, const float* dy, int nc, int h, int w) {
  int oh = 2 * h, ow = 2 * w, total = nc * oh * ow;
  GRID_STRIDE(i, total) {
    int xx = i % ow, r = i / ow, yy = r % oh, ch = r / oh;
    dx[i] = dy[((long long)ch * h + yy / 2) * w + xx / 2] * 0.25f;
  }
}

// Attention-pool tokens: y[r, 0] = mean_p x[r, p] + pos[c, 0],
// y[r, 1+p] = x[r, p] + pos[c, 1+p] for rows r = (n, c); one block per row.
extern "C" __global__ void attnpool_tokens(float* y, const float* x, const float* pos, int c, int hw) {
  __shared__ float sh[BLOCK];
  int row = blockIdx.x, t = hw + 1;
  const float* xr = x + (long long)row * hw;
  const float* pr = pos + (long long)(row % c) * t;
  float* yr = y + (long long)row * t;
  float acc = 0.0f;
  for (int p = threadIdx.x; p < hw; p += BLOCK) {
    acc += xr[p];
    yr[1 + p] = xr[p] + pr[1 + p];
  }
  float s = block_sum(acc, sh);
  if (threadIdx.x == 0) yr[0] = s / (float)hw + pr[0];
}

// dx[r, p] = dy[r, 1+p] + dy[r, 0] / hw.
extern "C" __global__ void attnpool_tokens_bwd_dx(float* dx, const float* dy, int rows, int hw) {
  int total = rows * hw, t = hw + 1;
  GRID_STRIDE(i, total) {
    int r = i / hw, p = i % hw;
    dx[i] = dy[(long long)r * t + 1 + p] + dy[(long long)r * t] / (float)hw;
  }
}

// dpos[i] = sum_b dy[b, i] for i < ct (= C (HW+1)).
extern "C" __global__ void attnpool_tokens_bwd_dpos(float* dpos, const float* dy, int n, int ct) {
  GRID_STRIDE(i, ct) {
    float acc = 0.0f;
    for (int b = 0; b < n; b++) acc += dy[(long long)b * ct + i];
    dpos[i] = acc;
  }
}

// y[r] = mean_p x[r, p]; one block per row r = (n, c).
extern "C" __global__ void row_mean(float* y, const float* x, int hw) {
  __shared__ float sh[BLOCK];
  const float* xr = x + (long long)blockIdx.x * hw;
  float acc = 0.0f;
  for (int p = threadIdx.x; p < hw; p += BLOCK) acc += xr[p];
  float s = block_sum(acc, sh);
  if (threadIdx.x == 0) y[blockIdx.x] = s / (float)hw;
}

// dx[r, p] = dy[r] / hw.
extern "C" __global__ void row_mean_bwd(float* dx, const float* dy, int rows, int hw) {
  int total = rows * hw;
  GRID_STRIDE(i, total) { dx[i] = dy[i / hw] / (float)hw; }
}

// y = max(x, 0) (NaN stays NaN).
extern "C" __global__ void relu_f(float* y, const float* x, int n) {
  GRID_STRIDE(i, n) { float v = x[i]; y[i] = v < 0.0f ? 0.0f : v; }
}

// dx = dy where x > 0, else 0.
extern "C" __global__ void relu_bwd(float* dx, const float* dy, const float* x, int n) {
  GRID_STRIDE(i, n) { dx[i] = x[i] > 0.0f ? dy[i] : 0.0f; }
}

// ---- GELU (GLIDE's text transformer) ---------------------------------------

// erfc(z) for z >= 0: Numerical Recipes' erfcc, t exp(-z^2 + P(t)) with
// t = 1/(1 + z/2), fractional error below 1.2e-7 in exact arithmetic and
// about 1e-6 here in float32 with exp_f (libdevice's erff is not linked:
// -nocudalib). The relative accuracy holds in the tail, where 1 - erf(z)
// would cancel.
static __device__ __attribute__((always_inline)) float erfc_pos(float z) {
  float t = 1.0f / __builtin_fmaf(0.5f, z, 1.0f);
  float p = 0.17087277f;
  p = __builtin_fmaf(p, t, -0.82215223f);
  p = __builtin_fmaf(p, t, 1.48851587f);
  p = __builtin_fmaf(p, t, -1.13520398f);
  p = __builtin_fmaf(p, t, 0.27886807f);
  p = __builtin_fmaf(p, t, -0.18628806f);
  p = __builtin_fmaf(p, t, 0.09678418f);
  p = __builtin_fmaf(p, t, 0.37409196f);
  p = __builtin_fmaf(p, t, 1.00002368f);
  p = __builtin_fmaf(p, t, -1.26551223f);
  return t * exp_f(__builtin_fmaf(-z, z, p));
}

// Phi(x), the standard normal CDF: erfc(-x/sqrt 2) / 2, from the tail on
// either side (so Phi of a very negative x keeps its relative accuracy).
static __device__ __attribute__((always_inline)) float norm_cdf(float x) {
  float u = x * 0.70710678118654752f;
  float c = 0.5f * erfc_pos(__builtin_fabsf(u));
  return u < 0.0f ? c : 1.0f - c;
}

// y = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, the exact GELU.
extern "C" __global__ void gelu_f(float* y, const float* x, int n) {
  GRID_STRIDE(i, n) { float v = x[i]; y[i] = v * norm_cdf(v); }
}

// dx = dy (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
extern "C" __global__ void gelu_bwd(float* dx, const float* dy, const float* x, int n) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    float pdf = 0.39894228040143268f * exp_f(-0.5f * v * v);
    dx[i] = dy[i] * __builtin_fmaf(v, pdf, norm_cdf(v));
  }
}
