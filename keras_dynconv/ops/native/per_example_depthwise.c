/* Depthwise convolution with a kernel of its own for every example: channels-last
 * float32, depth multiplier 1. keras_dynconv/ops/native_depthwise.py builds this file,
 * says why it exists, and tests it against the generic path.
 *
 * x [B, H, W, C], w [B, kh, kw, C] (example b's kernel at w + b * kernel_stride: a
 * stride of 0 shares one kernel), bias [C] or NULL, y [B, OH, OW, C]; ph, pw: the
 * padding before the first row and column (TensorFlow's "same" or "valid" amounts).
 *
 * Each output row is a task (handed out dynamically: on TensorFlow other ops' threads
 * may hold a core for a while). Within it, PB output pixels by 2 vectors of channels are
 * summed in registers over the kernel taps, so each weight vector loaded serves PB
 * pixels. Taps that fall on the padding read a row of zeros instead of branching.
 */
#include <stdlib.h>

#include "vectors.h"

#define PB 7 /* output pixels per block: a 7x7 row in one block */
#define NV 2 /* vectors of VL channels per block */

struct shape {
  long H, W, C, kh, kw, sh, ph, dh, OH, OW, padded_OW;
};

/* Output pixels [ow0, ow0 + PB) of one row, channels [c0, c0 + vectors * VL). */
static inline __attribute__((always_inline)) void block(
    const struct shape* s, const float* xb, const float* wb, const float* bias, float* yrow,
    const long* column, const float* zeros, long oh, long ow0, long c0, const int vectors) {
  vf start[NV], sums[PB][NV];
#pragma GCC unroll 4
  for (int v = 0; v < vectors; ++v) start[v] = bias ? LOAD(bias + c0 + v * VL) : (vf){0};
#pragma GCC unroll 16
  for (int p = 0; p < PB; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < vectors; ++v) sums[p][v] = start[v];
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
#pragma GCC unroll 16
  for (int p = 0; p < PB; ++p)
    if (ow0 + p < s->OW)
#pragma GCC unroll 4
      for (int v = 0; v < vectors; ++v) STORE(yrow + (ow0 + p) * s->C + c0 + v * VL, sums[p][v]);
}

int per_example_depthwise(
    const float* x, const float* w, long kernel_stride, const float* bias, float* y, long B,
    long H, long W, long C, long kh, long kw, long sh, long sw, long ph, long pw, long dh,
    long dw, long OH, long OW, int threads) {
  struct shape s = {H, W, C, kh, kw, sh, ph, dh, OH, OW, (OW + PB - 1) / PB * PB};
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
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (long row = 0; row < B * OH; ++row) {
    long b = row / OH, oh = row % OH;
    const float* xb = x + b * H * W * C;
    const float* wb = w + b * kernel_stride;
    float* yrow = y + row * OW * C;
    long c0 = 0;
    for (; c0 + NV * VL <= C; c0 += NV * VL)
      for (long ow0 = 0; ow0 < OW; ow0 += PB) block(&s, xb, wb, bias, yrow, column, zeros, oh, ow0, c0, NV);
    for (; c0 + VL <= C; c0 += VL)
      for (long ow0 = 0; ow0 < OW; ow0 += PB) block(&s, xb, wb, bias, yrow, column, zeros, oh, ow0, c0, 1);
    for (; c0 < C; ++c0) /* fewer channels left than a vector holds */
      for (long ow = 0; ow < OW; ++ow) {
        float sum = bias ? bias[c0] : 0.f;
        for (long i = 0; i < kh; ++i) {
          long ih = oh * sh - ph + i * dh;
          if (ih < 0 || ih >= H) continue;
          for (long j = 0; j < kw; ++j) {
            long offset = column[j * s.padded_OW + ow];
            if (offset >= 0) sum += xb[ih * W * C + offset + c0] * wb[(i * kw + j) * C + c0];
          }
        }
        yrow[ow * C + c0] = sum;
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
