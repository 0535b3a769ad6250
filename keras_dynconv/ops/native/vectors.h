/* The vectors the native kernels compute in: VL floats, the widest the build's target
 * has (-march=native: AVX-512, AVX2 or SSE2), through GCC's vector types. */
#ifndef KERAS_DYNCONV_VECTORS_H
#define KERAS_DYNCONV_VECTORS_H

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif

typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vf_unaligned __attribute__((vector_size(VL * 4), aligned(4)));
#define LOAD(p) (*(const vf_unaligned*)(p))
#define STORE(p, v) (*(vf_unaligned*)(p) = (v))

#endif
