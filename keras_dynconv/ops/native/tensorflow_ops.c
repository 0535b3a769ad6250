/* The native kernels as TensorFlow CPU ops, through TensorFlow's C API for kernels
 * (tensorflow/c/kernels.h, ops.h), so no C++ build against TensorFlow's headers is
 * needed. keras_dynconv/ops/native_tensorflow.py builds this file with the kernels'
 * sources, loads it with tf.load_op_library, registers the ops' gradients and says
 * when the ops are used; tests/test_native_tensorflow.py checks them.
 *
 * KerasDynconvPerExampleDepthwise(inputs [B, H, W, C], kernels [B, kh, kw, C, 1],
 *   output_size [0, OH, OW]): per_example_depthwise.c; the attributes give the strides,
 *   dilations and the padding before the first row and column (`padding`, "SAME" or
 *   "VALID", is for the gradient, which is TensorFlow's own ops), the empty
 *   `output_size` the output's height and width by its shape.
 * KerasDynconvDepthwiseOfExperts(inputs [B, H, W, C], experts [E, kh, kw, C, 1],
 *   routing [B, E], output_size [0, OH, OW]): the same, example b's kernel
 *   sum_e routing[b, e] * experts[e] (depthwise_of_experts).
 * KerasDynconvPointwiseOfExperts(inputs [B, H, W, I], experts [E, 1, 1, I, O],
 *   routing [B, E]): pointwise_of_experts.c, the experts read in place.
 * Both take the number of OpenMP threads as the attribute `threads`.
 */
#include <stdint.h>
#include <stdlib.h>

#include "tensorflow/c/kernels.h"
/* ops.h declares these structs the C++ way, without typedefs. */
typedef struct TF_OpDefinitionBuilder TF_OpDefinitionBuilder;
typedef struct TF_ShapeInferenceContext TF_ShapeInferenceContext;
typedef struct TF_ShapeHandle TF_ShapeHandle;
typedef struct TF_DimensionHandle TF_DimensionHandle;
#include "tensorflow/c/ops.h"
#include "tensorflow/c/tf_status.h"
#include "tensorflow/c/tf_tensor.h"

int per_example_depthwise(const float* x, const float* w, long kernel_stride,
                          const float* bias, float* y, long B, long H, long W, long C, long kh,
                          long kw, long sh, long sw, long ph, long pw, long dh, long dw, long OH,
                          long OW, int threads);
int depthwise_of_experts(const float* x, const float* experts, const float* routing, long E,
                         const float* bias, float* y, long B, long H, long W, long C, long kh,
                         long kw, long sh, long sw, long ph, long pw, long dh, long dw, long OH,
                         long OW, int threads);
int pointwise_of_experts(const float* x, const float* experts, long block_stride,
                         long row_stride, long expert_stride, const float* routing,
                         const float* bias, float* y, long B, long P, long I, long O, long E,
                         int threads);
int pointwise_block_columns(void);

#define DEPTHWISE "KerasDynconvPerExampleDepthwise"
#define DEPTHWISE_OF_EXPERTS "KerasDynconvDepthwiseOfExperts"
#define POINTWISE "KerasDynconvPointwiseOfExperts"

static int ok(TF_Status* status) { return TF_GetCode(status) == TF_OK; }

/* The output's shape: the dimensions [start, end) of input `input`, for each part in
 * turn. Grappler's rewrites (such as fusing a sigmoid and a product into one swish)
 * need the shapes of what the ops feed. */
struct part {
  int input, start, end;
};

static void shape_of_parts(TF_ShapeInferenceContext* ctx, TF_Status* status,
                           const struct part* parts, int num_parts) {
  TF_ShapeHandle* shape = NULL;
  for (int i = 0; i < num_parts && ok(status); ++i) {
    TF_ShapeHandle* input = TF_NewShapeHandle();
    TF_ShapeHandle* piece = TF_NewShapeHandle();
    TF_ShapeInferenceContextGetInput(ctx, parts[i].input, input, status);
    if (ok(status))
      TF_ShapeInferenceContextSubshape(ctx, input, parts[i].start, parts[i].end, piece, status);
    if (ok(status) && shape) {
      TF_ShapeHandle* joined = TF_NewShapeHandle();
      TF_ShapeInferenceContextConcatenateShapes(ctx, shape, piece, joined, status);
      TF_DeleteShapeHandle(shape);
      TF_DeleteShapeHandle(piece);
      shape = joined;
    } else if (ok(status)) {
      shape = piece;
    } else {
      TF_DeleteShapeHandle(piece);
    }
    TF_DeleteShapeHandle(input);
  }
  if (ok(status)) TF_ShapeInferenceContextSetOutput(ctx, 0, shape, status);
  if (shape) TF_DeleteShapeHandle(shape);
}

/* [B] + output_size's [OH, OW] + [C]: the C API's shape functions cannot read integer
 * attributes, so the output's size comes as the shape of an empty input. */
static void depthwise_shape(TF_ShapeInferenceContext* ctx, TF_Status* status) {
  const struct part parts[] = {{0, 0, 1}, {2, 1, 3}, {0, 3, 4}};
  shape_of_parts(ctx, status, parts, 3);
}

static void depthwise_of_experts_shape(TF_ShapeInferenceContext* ctx, TF_Status* status) {
  const struct part parts[] = {{0, 0, 1}, {3, 1, 3}, {0, 3, 4}};
  shape_of_parts(ctx, status, parts, 3);
}

/* [B, H, W] + [O]. */
static void pointwise_shape(TF_ShapeInferenceContext* ctx, TF_Status* status) {
  const struct part parts[] = {{0, 0, 3}, {1, 4, 5}};
  shape_of_parts(ctx, status, parts, 2);
}

/* --- KerasDynconvPerExampleDepthwise ------------------------------------------------ */

struct depthwise_attrs {
  int64_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, threads;
};

static void* depthwise_create(TF_OpKernelConstruction* ctx) {
  struct depthwise_attrs* a = calloc(1, sizeof(*a));
  TF_Status* status = TF_NewStatus();
  const char* names[] = {"stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top",
                         "pad_left", "threads"};
  int64_t* values[] = {&a->stride_h, &a->stride_w, &a->dilation_h, &a->dilation_w,
                       &a->pad_top, &a->pad_left, &a->threads};
  for (int i = 0; a && i < 7 && ok(status); ++i)
    TF_OpKernelConstruction_GetAttrInt64(ctx, names[i], values[i], status);
  if (!a) TF_SetStatus(status, TF_RESOURCE_EXHAUSTED, DEPTHWISE ": out of memory");
  if (!ok(status)) {
    TF_OpKernelConstruction_Failure(ctx, status);
    free(a);
    a = NULL;
  }
  TF_DeleteStatus(status);
  return a;
}

/* Both depthwise ops: (inputs, kernels, output_size) or (inputs, experts, routing,
 * output_size). */
static void depthwise_compute(void* kernel, TF_OpKernelContext* ctx) {
  const struct depthwise_attrs* a = kernel;
  int of_experts = TF_NumInputs(ctx) == 4;
  TF_Status* status = TF_NewStatus();
  TF_Tensor *x = NULL, *w = NULL, *routing = NULL, *size = NULL, *y = NULL;
  TF_GetInput(ctx, 0, &x, status);
  if (ok(status)) TF_GetInput(ctx, 1, &w, status);
  if (ok(status) && of_experts) TF_GetInput(ctx, 2, &routing, status);
  if (ok(status)) TF_GetInput(ctx, of_experts ? 3 : 2, &size, status);
  if (ok(status)) {
    int shapes_fit = TF_NumDims(x) == 4 && TF_NumDims(w) == 5 && TF_NumDims(size) == 3 &&
                     TF_Dim(w, 3) == TF_Dim(x, 3) && TF_Dim(w, 4) == 1;
    if (of_experts)
      shapes_fit = shapes_fit && TF_NumDims(routing) == 2 && TF_Dim(routing, 0) == TF_Dim(x, 0) &&
                   TF_Dim(routing, 1) == TF_Dim(w, 0);
    else
      shapes_fit = shapes_fit && TF_Dim(w, 0) == TF_Dim(x, 0);
    if (!shapes_fit)
      TF_SetStatus(status, TF_INVALID_ARGUMENT,
                   of_experts ? DEPTHWISE_OF_EXPERTS ": inputs must be [B, H, W, C], experts "
                                "[E, kh, kw, C, 1], routing [B, E] and output_size [0, OH, OW]"
                              : DEPTHWISE ": inputs must be [B, H, W, C], kernels "
                                "[B, kh, kw, C, 1] and output_size [0, OH, OW]");
  }
  if (ok(status)) {
    long B = TF_Dim(x, 0), H = TF_Dim(x, 1), W = TF_Dim(x, 2), C = TF_Dim(x, 3);
    long kh = TF_Dim(w, 1), kw = TF_Dim(w, 2), OH = TF_Dim(size, 1), OW = TF_Dim(size, 2);
    int64_t dims[4] = {B, OH, OW, C};
    size_t bytes = sizeof(float) * B * OH * OW * C;
    y = TF_AllocateOutput(ctx, 0, TF_FLOAT, dims, 4, bytes, status);
    int failed = 0;
    if (ok(status) && bytes && of_experts)
      failed = depthwise_of_experts(TF_TensorData(x), TF_TensorData(w), TF_TensorData(routing),
                                    TF_Dim(w, 0), NULL, TF_TensorData(y), B, H, W, C, kh, kw,
                                    a->stride_h, a->stride_w, a->pad_top, a->pad_left,
                                    a->dilation_h, a->dilation_w, OH, OW, (int)a->threads);
    else if (ok(status) && bytes)
      failed = per_example_depthwise(TF_TensorData(x), TF_TensorData(w), kh * kw * C, NULL,
                                     TF_TensorData(y), B, H, W, C, kh, kw, a->stride_h,
                                     a->stride_w, a->pad_top, a->pad_left, a->dilation_h,
                                     a->dilation_w, OH, OW, (int)a->threads);
    if (failed) TF_SetStatus(status, TF_RESOURCE_EXHAUSTED, DEPTHWISE ": out of memory");
  }
  if (!ok(status)) TF_OpKernelContext_Failure(ctx, status);
  TF_DeleteTensor(x);
  TF_DeleteTensor(w);
  TF_DeleteTensor(routing);
  TF_DeleteTensor(size);
  TF_DeleteTensor(y);
  TF_DeleteStatus(status);
}

/* --- KerasDynconvPointwiseOfExperts ------------------------------------------------- */

static void* pointwise_create(TF_OpKernelConstruction* ctx) {
  int64_t* threads = malloc(sizeof(int64_t));
  TF_Status* status = TF_NewStatus();
  if (threads) TF_OpKernelConstruction_GetAttrInt64(ctx, "threads", threads, status);
  else TF_SetStatus(status, TF_RESOURCE_EXHAUSTED, POINTWISE ": out of memory");
  if (!ok(status)) {
    TF_OpKernelConstruction_Failure(ctx, status);
    free(threads);
    threads = NULL;
  }
  TF_DeleteStatus(status);
  return threads;
}

static void pointwise_compute(void* kernel, TF_OpKernelContext* ctx) {
  int threads = (int)*(const int64_t*)kernel;
  TF_Status* status = TF_NewStatus();
  TF_Tensor *x = NULL, *experts = NULL, *routing = NULL, *y = NULL;
  TF_GetInput(ctx, 0, &x, status);
  if (ok(status)) TF_GetInput(ctx, 1, &experts, status);
  if (ok(status)) TF_GetInput(ctx, 2, &routing, status);
  if (ok(status)) {
    if (TF_NumDims(x) != 4 || TF_NumDims(experts) != 5 || TF_NumDims(routing) != 2 ||
        TF_Dim(experts, 1) != 1 || TF_Dim(experts, 2) != 1 ||
        TF_Dim(experts, 3) != TF_Dim(x, 3) || TF_Dim(routing, 0) != TF_Dim(x, 0) ||
        TF_Dim(routing, 1) != TF_Dim(experts, 0)) {
      TF_SetStatus(status, TF_INVALID_ARGUMENT,
                   POINTWISE ": inputs must be [B, H, W, I], experts [E, 1, 1, I, O] and "
                   "routing [B, E]");
    }
  }
  if (ok(status)) {
    long B = TF_Dim(x, 0), P = TF_Dim(x, 1) * TF_Dim(x, 2), I = TF_Dim(x, 3);
    long E = TF_Dim(experts, 0), O = TF_Dim(experts, 4);
    long columns = pointwise_block_columns();
    int64_t dims[4] = {B, TF_Dim(x, 1), TF_Dim(x, 2), O};
    size_t bytes = sizeof(float) * B * P * O;
    y = TF_AllocateOutput(ctx, 0, TF_FLOAT, dims, 4, bytes, status);
    if (ok(status) && bytes) {
      int failed = pointwise_of_experts(TF_TensorData(x), TF_TensorData(experts), columns, O,
                                        I * O, TF_TensorData(routing), NULL, TF_TensorData(y),
                                        B, P, I, O, E, threads);
      if (failed == -2)
        TF_SetStatus(status, TF_INVALID_ARGUMENT,
                     POINTWISE ": output channels must be whole vectors (a multiple of 16)");
      else if (failed)
        TF_SetStatus(status, TF_RESOURCE_EXHAUSTED, POINTWISE ": could not allocate buffers");
    }
  }
  if (!ok(status)) TF_OpKernelContext_Failure(ctx, status);
  TF_DeleteTensor(x);
  TF_DeleteTensor(experts);
  TF_DeleteTensor(routing);
  TF_DeleteTensor(y);
  TF_DeleteStatus(status);
}

static void delete_attrs(void* kernel) { free(kernel); }

/* --- registration, when tf.load_op_library loads the library ------------------------ */

static void define(const char* name, const char** inputs, int num_inputs, const char** attrs,
                   int num_attrs, void (*shape)(TF_ShapeInferenceContext*, TF_Status*),
                   void* (*create)(TF_OpKernelConstruction*),
                   void (*compute)(void*, TF_OpKernelContext*)) {
  TF_Status* status = TF_NewStatus();
  TF_OpDefinitionBuilder* op = TF_NewOpDefinitionBuilder(name);
  for (int i = 0; i < num_inputs; ++i) TF_OpDefinitionBuilderAddInput(op, inputs[i]);
  TF_OpDefinitionBuilderAddOutput(op, "outputs: float");
  for (int i = 0; i < num_attrs; ++i) TF_OpDefinitionBuilderAddAttr(op, attrs[i]);
  TF_OpDefinitionBuilderSetShapeInferenceFunction(op, shape);
  TF_RegisterOpDefinition(op, status);
  /* Registered once per process: a second library defining the same op is refused. */
  if (ok(status)) {
    TF_KernelBuilder* builder = TF_NewKernelBuilder(name, "CPU", create, compute, delete_attrs);
    TF_RegisterKernelBuilder(name, builder, status);
  }
  TF_DeleteStatus(status);
}

__attribute__((constructor)) static void register_ops(void) {
  const char* depthwise_inputs[] = {"inputs: float", "kernels: float", "output_size: float"};
  const char* depthwise_attrs[] = {"stride_h: int", "stride_w: int", "dilation_h: int",
                                   "dilation_w: int", "pad_top: int", "pad_left: int",
                                   "threads: int", "padding: {'SAME', 'VALID'}"};
  define(DEPTHWISE, depthwise_inputs, 3, depthwise_attrs, 8, depthwise_shape,
         depthwise_create, depthwise_compute);
  const char* depthwise_of_experts_inputs[] = {"inputs: float", "experts: float",
                                               "routing: float", "output_size: float"};
  define(DEPTHWISE_OF_EXPERTS, depthwise_of_experts_inputs, 4, depthwise_attrs, 8,
         depthwise_of_experts_shape, depthwise_create, depthwise_compute);
  const char* pointwise_inputs[] = {"inputs: float", "experts: float", "routing: float"};
  const char* pointwise_attrs[] = {"threads: int"};
  define(POINTWISE, pointwise_inputs, 3, pointwise_attrs, 1, pointwise_shape,
         pointwise_create, pointwise_compute);
}
