/* 1x1 convolution with a kernel of its own for every example, combined from experts:
 * y[b] = x[b] @ (sum_e routing[b, e] * experts[e]) + bias, channels-last float32.
 * keras_dynconv/ops/native_pointwise.py says why it exists, tests/test_native_pointwise.py
 * checks it against the generic path, keras_dynconv/ops/native_depthwise.py builds it.
 *
 * x [B, P, I], routing [B, E], bias [O] or NULL, y [B, P, O]; O a multiple of the
 * vector length (the caller checks a multiple of 16). Expert e's weight (k, j0 + c), for
 * the block of COLS output channels that starts at j0 = jb * COLS, is at
 * experts[jb * block_stride + k * row_stride + e * expert_stride + c]: [E, I, O] experts
 * have strides (COLS, O, I * O); packed ones, [O / COLS, I, E, COLS], (I * E * COLS,
 * E * COLS, COLS), which the combination reads in order (torch keeps a packed copy per
 * weight value; TensorFlow's op passes them in place and each task packs the slices it
 * reads more than once).
 *
 * The combined kernels are never written to memory. A task is a block of COLS output
 * channels for a chunk of the examples (all of them unless there are few blocks); for
 * a block and KC input channels at a time, the experts' slice (KC x COLS x E floats)
 * stays in the cache while every example combines its KC x COLS tile from it (into T,
 * in L1; G examples per read of each expert vector) and multiplies its pixels by the
 * tile, R pixels by COLS channels summed in registers, adding onto the previous input
 * channels' sums. Tasks are handed out dynamically: on TensorFlow other ops' threads
 * may hold a core for a while.
 */
#include <stdlib.h>
#include "vectors.h"

#define NB 2   /* vectors of output channels per block */
#define R 8    /* pixels summed in registers at once: R x NB accumulators */
#define G 2    /* examples whose tiles are combined from one read of the experts' slice */
#define KC 128 /* input channels per slice: T is KC x COLS floats (16 KB with AVX-512) */
#define COLS (NB * VL)
#define TASKS_PER_THREAD 4

/* `rows` pixels by `nb` vectors of y: `start` (the bias, or zeros) for the first slice,
 * else y itself, plus the pixels' kc input channels times T. */
static inline __attribute__((always_inline)) void tile(
    const float* xr, const float* T, float* yr, long I, long O, long kc, const float* start,
    const int rows, const int nb) {
  vf acc[R][NB];
#pragma GCC unroll 12
  for (int r = 0; r < rows; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < nb; ++v) acc[r][v] = start ? LOAD(start + v * VL) : LOAD(yr + r * O + v * VL);
  for (long k = 0; k < kc; ++k) {
    vf t[NB];
#pragma GCC unroll 2
    for (int v = 0; v < nb; ++v) t[v] = *(const vf*)(T + k * COLS + v * VL);
#pragma GCC unroll 12
    for (int r = 0; r < rows; ++r) {
      vf xv = (vf){0} + xr[r * I + k];
#pragma GCC unroll 2
      for (int v = 0; v < nb; ++v) acc[r][v] += xv * t[v];
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < rows; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < nb; ++v) STORE(yr + r * O + v * VL, acc[r][v]);
}

static void rows_of(const float* xb, const float* T, float* yb, long P, long I, long O, long kc,
                    const float* start, int nb) {
  long p = 0;
  if (nb == NB) {
    for (; p + R <= P; p += R) tile(xb + p * I, T, yb + p * O, I, O, kc, start, R, NB);
    for (; p < P; ++p) tile(xb + p * I, T, yb + p * O, I, O, kc, start, 1, NB);
  } else {
    for (; p + R <= P; p += R) tile(xb + p * I, T, yb + p * O, I, O, kc, start, R, 1);
    for (; p < P; ++p) tile(xb + p * I, T, yb + p * O, I, O, kc, start, 1, 1);
  }
}

int pointwise_block_columns(void) { return COLS; }

int pointwise_of_experts(const float* x, const float* experts, long block_stride,
                         long row_stride, long expert_stride, const float* routing,
                         const float* bias, float* y, long B, long P, long I, long O, long E,
                         int threads) {
  if (O % VL) return -2;
  long nblocks = (O + COLS - 1) / COLS;
  float* zeros = calloc(COLS, sizeof(float));
  if (!zeros) return -1;
  int failed = 0;
  /* With few blocks of output channels (80 or 112 at 14x14), blocks alone leave threads
   * idle: the examples are split into chunks until there are TASKS_PER_THREAD tasks per
   * thread, each chunk a multiple of G examples. */
  long groups = (B + G - 1) / G, chunks = 1;
  while (nblocks * chunks < TASKS_PER_THREAD * threads && chunks < groups) ++chunks;
  long chunk = (groups + chunks - 1) / chunks * G;
  chunks = (B + chunk - 1) / chunk;
  /* Experts read in place are copied a slice at a time into the packed order where a
   * task reads the slice more than once: in place, its rows lie KC * E pages apart and
   * the combination misses the TLB (a quarter slower at batch 32). */
  int pack = !(expert_stride == COLS && row_stride == E * COLS) && chunk > G;
#pragma omp parallel num_threads(threads)
  {
    float* T = aligned_alloc(64, G * KC * COLS * 4);
    float* slice = pack ? aligned_alloc(64, KC * E * COLS * 4) : NULL;
    if (!T || (pack && !slice)) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(dynamic)
    for (long task = 0; task < nblocks * chunks; ++task) {
      if (!T || (pack && !slice)) continue;
      long jb = task / chunks, first = task % chunks * chunk, last = first + chunk;
      if (last > B) last = B;
      long j0 = jb * COLS;
      int nb = O - j0 >= COLS ? NB : 1;
      for (long k0 = 0; k0 < I; k0 += KC) {
        long kc = I - k0 < KC ? I - k0 : KC;
        const float* start = k0 ? NULL : (bias ? bias + j0 : zeros);
        const float* source = experts + jb * block_stride + k0 * row_stride;
        long rows = row_stride, columns = expert_stride;
        if (pack) {
          for (long k = 0; k < kc; ++k)
            for (long e = 0; e < E; ++e) {
              const float* src = source + k * row_stride + e * expert_stride;
              float* dst = slice + (k * E + e) * COLS;
              STORE(dst, LOAD(src));
              if (nb == NB) STORE(dst + VL, LOAD(src + VL));
            }
          source = slice;
          rows = E * COLS;
          columns = COLS;
        }
        for (long b0 = first; b0 < last; b0 += G) {
          long g_count = last - b0 < G ? last - b0 : G;
          for (long k = 0; k < kc; ++k) {
            vf t[G][NB];
            for (int g = 0; g < G; ++g) t[g][0] = t[g][1] = (vf){0};
            for (long e = 0; e < E; ++e) {
              const float* src = source + k * rows + e * columns;
              vf w0 = LOAD(src), w1 = nb == NB ? LOAD(src + VL) : (vf){0};
#pragma GCC unroll 4
              for (int g = 0; g < G; ++g) {
                vf re = (vf){0} + routing[(b0 + (g < g_count ? g : 0)) * E + e];
                t[g][0] += re * w0;
                t[g][1] += re * w1;
              }
            }
#pragma GCC unroll 4
            for (int g = 0; g < G; ++g) {
              *(vf*)(T + (g * KC + k) * COLS) = t[g][0];
              *(vf*)(T + (g * KC + k) * COLS + VL) = t[g][1];
            }
          }
          for (long g = 0; g < g_count; ++g)
            rows_of(x + (b0 + g) * P * I + k0, T + g * KC * COLS, y + (b0 + g) * P * O + j0, P,
                    I, O, kc, start, nb);
        }
      }
    }
    free(T);
    free(slice);
  }
  free(zeros);
  return failed ? -1 : 0;
}
