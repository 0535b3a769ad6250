/* Depthwise convolution with a kernel of its own for every example: channels-last
 * float32, depth multiplier 1. keras_dynconv/ops/native_depthwise.py builds this file,
 * says why it exists, and tests it against the generic path.
 *
 * x [B, H, W, C], w [B, kh, kw, C] (example b's kernel at w + b * kernel_stride: a
 * stride of 0 shares one kernel), bias [C] or NULL, y [B, OH, OW, C]; ph, pw: the
 * padding before the first row and column (TensorFlow's "same" or "valid" amounts).
 *
 * A task is a band of consecutive output rows of one example (handed out dynamically:
 * on TensorFlow other ops' threads may hold a core for a while), so the input rows that
 * neighbouring output rows share are read from memory once; each output row prefetches
 * the next one's new input row. Within a row, PB output pixels by 2 vectors of channels
 * are summed in registers over the kernel taps, so each weight vector loaded serves PB
 * pixels. For the common kernels (3 or 5 wide, column stride 1 or 2, no column
 * dilation) each input vector loaded also serves every pixel of the block whose window
 * holds it (`sliding_block`). Taps that fall on the padding read zeros instead of
 * branching. On CondConv-EfficientNet-B0's per-example layers at batch 32, bands and
 * sliding blocks took 0.5-0.8x the time of row tasks with the general block.
 */
#include <stdlib.h>

#include "vectors.h"

#define PB 7 /* output pixels per block: a 7x7 row in one block */
#define NV 2 /* vectors of VL channels per block */
#define TASKS_PER_THREAD 8
/* Vectors per sliding block (at most NV): its PB x n sums, KW x n weights and n input
 * vectors must fit the registers (32 with AVX-512, 16 otherwise). */
#define SLIDING_NV (VL == 16 ? 2 : 1)

struct shape {
  long H, W, C, kh, kw, sh, sw, ph, pw, dh, OH, OW, padded_OW;
};

/* A block's sums before the first tap: the bias, or zeros. */
static inline __attribute__((always_inline)) void start_sums(vf sums[PB][NV], const float* bias,
                                                              long c0, const int vectors) {
#pragma GCC unroll 16
  for (int p = 0; p < PB; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < vectors; ++v) sums[p][v] = bias ? LOAD(bias + c0 + v * VL) : (vf){0};
}

/* A block's sums into the output row, the pixels past its end left out. */
static inline __attribute__((always_inline)) void store_sums(
    const struct shape* s, vf sums[PB][NV], float* yrow, long ow0, long c0, const int vectors) {
#pragma GCC unroll 16
  for (int p = 0; p < PB; ++p)
    if (ow0 + p < s->OW)
#pragma GCC unroll 4
      for (int v = 0; v < vectors; ++v) STORE(yrow + (ow0 + p) * s->C + c0 + v * VL, sums[p][v]);
}

/* Output pixels [ow0, ow0 + PB) of one row, channels [c0, c0 + vectors * VL). */
static inline __attribute__((always_inline)) void block(
    const struct shape* s, const float* xb, const float* wb, const float* bias, float* yrow,
    const long* column, const float* zeros, long oh, long ow0, long c0, const int vectors) {
  vf sums[PB][NV];
  start_sums(sums, bias, c0, vectors);
  for (long i = 0; i < s->kh; ++i) {
    long ih = oh * s->sh - s->ph + i * s->dh;
    if (ih < 0 || ih >= s->H) continue;
    const float* x_row = xb + ih * s->W * s->C + c0;
    for (long j = 0; j < s->kw; ++j) {
      const float* w_tap = wb + (i * s->kw + j) * s->C + c0;
      const long* offsets = column + j * s->padded_OW + ow0;
      vf weights[NV];
#pragma GCC unroll 4
      for (int v = 0; v < vectors; ++v) weights[v] = LOAD(w_tap + v * VL);
#pragma GCC unroll 16
      for (int p = 0; p < PB; ++p) {
        const float* x_tap = offsets[p] >= 0 ? x_row + offsets[p] : zeros;
#pragma GCC unroll 4
        for (int v = 0; v < vectors; ++v) sums[p][v] += LOAD(x_tap + v * VL) * weights[v];
      }
    }
  }
  store_sums(s, sums, yrow, ow0, c0, vectors);
}

/* The same block where the kernel's width KW and the column stride S are compile-time
 * constants (and the column dilation 1): each input column's vectors are loaded once and
 * serve every output pixel of the block whose window holds it, instead of once per
 * (pixel, tap); the row's KW weight vectors stay in registers. That makes the block
 * bound by its multiply-adds instead of its loads (5x5, stride 1: 32 loads per 70
 * multiply-adds of two vectors, against 80). */
static inline __attribute__((always_inline)) void sliding_block(
    const struct shape* s, const float* xb, const float* wb, const float* bias, float* yrow,
    const float* zeros, long oh, long ow0, long c0, const int vectors, const int KW,
    const int S) {
  vf sums[PB][NV];
  start_sums(sums, bias, c0, vectors);
  long iw0 = ow0 * S - s->pw;
  for (long i = 0; i < s->kh; ++i) {
    long ih = oh * s->sh - s->ph + i * s->dh;
    if (ih < 0 || ih >= s->H) continue;
    const float* x_row = xb + ih * s->W * s->C + c0;
    const float* w_row = wb + i * KW * s->C + c0;
    vf weights[KW][SLIDING_NV];
#pragma GCC unroll 8
    for (int j = 0; j < KW; ++j)
#pragma GCC unroll 4
      for (int v = 0; v < vectors; ++v) weights[j][v] = LOAD(w_row + j * s->C + v * VL);
#pragma GCC unroll 32
    for (int q = 0; q < (PB - 1) * S + KW; ++q) {
      long iw = iw0 + q;
      const float* x_col = iw >= 0 && iw < s->W ? x_row + iw * s->C : zeros;
      vf column[SLIDING_NV];
#pragma GCC unroll 4
      for (int v = 0; v < vectors; ++v) column[v] = LOAD(x_col + v * VL);
#pragma GCC unroll 16
      for (int p = 0; p < PB; ++p) {
        const int j = q - p * S;
        if (j >= 0 && j < KW)
#pragma GCC unroll 4
          for (int v = 0; v < vectors; ++v) sums[p][v] += column[v] * weights[j][v];
      }
    }
  }
  store_sums(s, sums, yrow, ow0, c0, vectors);
}

/* One output row's sliding blocks, every channel a whole vector covers; returns where
 * the channels left over start. */
static inline __attribute__((always_inline)) long sliding_row(
    const struct shape* s, const float* xb, const float* wb, const float* bias, float* yrow,
    const float* zeros, long oh, const int KW, const int S) {
  long c0 = 0;
  for (; c0 + SLIDING_NV * VL <= s->C; c0 += SLIDING_NV * VL)
    for (long ow0 = 0; ow0 < s->OW; ow0 += PB)
      sliding_block(s, xb, wb, bias, yrow, zeros, oh, ow0, c0, SLIDING_NV, KW, S);
  for (; c0 + VL <= s->C; c0 += VL)
    for (long ow0 = 0; ow0 < s->OW; ow0 += PB)
      sliding_block(s, xb, wb, bias, yrow, zeros, oh, ow0, c0, 1, KW, S);
  return c0;
}

typedef long (*sliding_row_fn)(const struct shape*, const float*, const float*, const float*,
                               float*, const float*, long);
#define SLIDING_ROW(KW, S)                                                                  \
  static long sliding_row_##KW##_##S(const struct shape* s, const float* xb, const float* wb, \
                                     const float* bias, float* yrow, const float* zeros,    \
                                     long oh) {                                            \
    return sliding_row(s, xb, wb, bias, yrow, zeros, oh, KW, S);                           \
  }
SLIDING_ROW(3, 1)
SLIDING_ROW(3, 2)
SLIDING_ROW(5, 1)
SLIDING_ROW(5, 2)

/* The sliding rows for this geometry, or NULL where only the general block applies. */
static sliding_row_fn sliding_row_for(long kw, long sw, long dw) {
  if (dw != 1) return NULL;
  if (kw == 3) return sw == 1 ? sliding_row_3_1 : sw == 2 ? sliding_row_3_2 : NULL;
  if (kw == 5) return sw == 1 ? sliding_row_5_1 : sw == 2 ? sliding_row_5_2 : NULL;
  return NULL;
}

/* Whether this kernel width, column stride and column dilation run in sliding blocks
 * (native_depthwise.static_applies asks: only those beat oneDNN at any batch size). */
int depthwise_slides(long kw, long sw, long dw) { return sliding_row_for(kw, sw, dw) != NULL; }

/* Output row oh of one example: sliding blocks where they apply, the general blocks
 * for the other whole vectors of channels, scalar sums for the channels left over. */
static void output_row(const struct shape* s, const float* xb, const float* wb,
                       const float* bias, float* yrow, const long* column, const float* zeros,
                       long oh, sliding_row_fn sliding) {
  long H = s->H, W = s->W, C = s->C, kh = s->kh, kw = s->kw, sh = s->sh, ph = s->ph,
       dh = s->dh, OW = s->OW;
  long c0 = sliding ? sliding(s, xb, wb, bias, yrow, zeros, oh) : 0;
  for (; c0 + NV * VL <= C; c0 += NV * VL)
    for (long ow0 = 0; ow0 < OW; ow0 += PB)
      block(s, xb, wb, bias, yrow, column, zeros, oh, ow0, c0, NV);
  for (; c0 + VL <= C; c0 += VL)
    for (long ow0 = 0; ow0 < OW; ow0 += PB)
      block(s, xb, wb, bias, yrow, column, zeros, oh, ow0, c0, 1);
  for (; c0 < C; ++c0) /* fewer channels left than a vector holds */
    for (long ow = 0; ow < OW; ++ow) {
      float sum = bias ? bias[c0] : 0.f;
      for (long i = 0; i < kh; ++i) {
        long ih = oh * sh - ph + i * dh;
        if (ih < 0 || ih >= H) continue;
        for (long j = 0; j < kw; ++j) {
          long offset = column[j * s->padded_OW + ow];
          if (offset >= 0) sum += xb[ih * W * C + offset + c0] * wb[(i * kw + j) * C + c0];
        }
      }
      yrow[ow * C + c0] = sum;
    }
}

int per_example_depthwise(
    const float* x, const float* w, long kernel_stride, const float* bias, float* y, long B,
    long H, long W, long C, long kh, long kw, long sh, long sw, long ph, long pw, long dh,
    long dw, long OH, long OW, int threads) {
  if (B <= 0 || OH <= 0 || OW <= 0 || C <= 0) return 0; /* no output */
  struct shape s = {H, W, C, kh, kw, sh, sw, ph, pw, dh, OH, OW, (OW + PB - 1) / PB * PB};
  sliding_row_fn sliding = sliding_row_for(kw, sw, dw);
  /* column[j * padded_OW + ow]: where tap column j of output column ow starts in an
   * input row (in floats), or -1 on the padding. */
  long* column = malloc(sizeof(long) * kw * s.padded_OW);
  float* zeros = calloc(NV * VL, sizeof(float));
  if (!column || !zeros) {
    free(column);
    free(zeros);
    return 1;
  }
  for (long j = 0; j < kw; ++j)
    for (long ow = 0; ow < s.padded_OW; ++ow) {
      long iw = ow * sw - pw + j * dw;
      column[j * s.padded_OW + ow] = (ow < OW && iw >= 0 && iw < W) ? iw * C : -1;
    }
  /* A task is a band of consecutive output rows of one example, so the input rows that
   * neighbouring output rows share stay in this core's cache; bands are made short enough
   * for TASKS_PER_THREAD tasks per thread. */
  long bands = (TASKS_PER_THREAD * threads + B - 1) / B;
  if (bands > OH) bands = OH;
  if (bands < 1) bands = 1;
  long band = (OH + bands - 1) / bands;
  bands = (OH + band - 1) / band;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (long task = 0; task < B * bands; ++task) {
    long b = task / bands, first = task % bands * band;
    long last = first + band < OH ? first + band : OH;
    const float* xb = x + b * H * W * C;
    const float* wb = w + b * kernel_stride;
    for (long oh = first; oh < last; ++oh) {
      /* The next row's newest input row, read from memory while this row is computed. */
      long ahead = (oh + 1) * sh - ph + (kh - 1) * dh;
      if (oh + 1 < last && ahead >= 0 && ahead < H)
        for (long offset = 0; offset < W * C; offset += 64 / sizeof(float))
          __builtin_prefetch(xb + ahead * W * C + offset);
      output_row(&s, xb, wb, bias, y + (b * OH + oh) * OW * C, column, zeros, oh, sliding);
    }
  }
  free(column);
  free(zeros);
  return 0;
}

/* The same convolution with example b's kernel sum_e routing[b, e] * experts[e]
 * (experts [E, kh, kw, C], routing [B, E]), the kernels combined into a buffer first.
 * On TensorFlow that combination was a matrix product with E = 8 rows, 1-2.5 ms per
 * 5x5 layer of CondConv-EfficientNet-B0 at batch 32: more than the convolution. */
#define COMBINED 512 /* floats of a kernel combined at a time: E x 2 KB of experts in L1 */

int depthwise_of_experts(
    const float* x, const float* experts, const float* routing, long E, const float* bias,
    float* y, long B, long H, long W, long C, long kh, long kw, long sh, long sw, long ph,
    long pw, long dh, long dw, long OH, long OW, int threads) {
  long n = kh * kw * C;
  float* kernels = malloc(sizeof(float) * (B * n > 0 ? B * n : 1));
  if (!kernels) return 1;
  /* A stretch of the experts is read from memory once and stays in L1 while every
   * example's stretch of its kernel is combined from it (example by example, the
   * experts were read B times: a third of the layer's time at 7x7). */
#pragma omp parallel for schedule(static) num_threads(threads)
  for (long i0 = 0; i0 < n; i0 += COMBINED) {
    long m = n - i0 < COMBINED ? n - i0 : COMBINED;
    for (long b = 0; b < B; ++b) {
      float* out = kernels + b * n + i0;
      const float* r = routing + b * E;
      for (long i = 0; i < m; ++i) out[i] = E ? r[0] * experts[i0 + i] : 0.f;
      for (long e = 1; e < E; ++e) {
        const float* source = experts + e * n + i0;
        for (long i = 0; i < m; ++i) out[i] += r[e] * source[i];
      }
    }
  }
  int failed = per_example_depthwise(x, kernels, n, bias, y, B, H, W, C, kh, kw, sh, sw, ph, pw,
                                     dh, dw, OH, OW, threads);
  free(kernels);
  return failed;
}
