"""GPU figures in one short run (the device machine has no TensorFlow, so no tf.data).

    KERAS_BACKEND=torch python scripts/gpu_check.py bench      # CondConv-B0 vs B0
    KERAS_BACKEND=jax   python scripts/gpu_check.py bench
    KERAS_BACKEND=torch python scripts/gpu_check.py shapes     # CondConv SSD on shapes

`bench`: median seconds per batch (10 timed runs after 3 warm-ups) of inference
(batch 256, float32 and mixed bfloat16) and of one training step (batch 128, SGD,
float32) for `efficientnet_b0` and `condconv_efficientnet_b0(num_experts=8)` in the
same process. Inference is a jitted `stateless_call` on JAX and `torch.no_grad()` eager
calls on torch; the training step is `train_on_batch` (jitted on JAX, eager on torch).

`shapes`: `condconv_ssd300_mobilenet_v1(alpha=0.5, num_experts=8)` at 300x300 trained
from scratch on generated shapes (NumPy arrays, random flips), scored by
`evaluate_coco` on held-out images.
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np

from keras_dynconv import zoo


def _sync():
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def _median_seconds(run, warmup=3, repeats=10):
    for _ in range(warmup):
        run()
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def _block(outputs):
    if keras.backend.backend() == "jax":
        import jax

        jax.block_until_ready(outputs)


def _inference(model, images):
    if keras.backend.backend() == "jax":
        import jax

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )

        @jax.jit
        def forward(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        return lambda: _block(forward(*state, images))
    import torch

    tensor = keras.ops.convert_to_tensor(images)

    def run():
        with torch.no_grad():
            model(tensor, training=False)

    return run


def bench(results, inference_batch=256, train_batch=128, size=224):
    rng = np.random.default_rng(0)
    for policy in ("float32", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        images = rng.uniform(0, 255, size=(inference_batch, size, size, 3)).astype("float32")
        for name, arguments in (("efficientnet_b0", {}),
                                ("condconv_efficientnet_b0", {"num_experts": 8})):
            model = zoo.get_model(name, input_shape=(size, size, 3), **arguments)
            median, low, high = _median_seconds(_inference(model, images))
            results.append(dict(model=name, mode="inference", batch=inference_batch,
                                dtype=policy, median_s=median, min_s=low, max_s=high,
                                images_per_s=inference_batch / median))
            print(results[-1], flush=True)
            keras.backend.clear_session()
    keras.config.set_dtype_policy("float32")
    images = rng.uniform(0, 255, size=(train_batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 1000, size=(train_batch,))
    for name, arguments in (("efficientnet_b0", {}),
                            ("condconv_efficientnet_b0", {"num_experts": 8})):
        model = zoo.get_model(name, input_shape=(size, size, 3), **arguments)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss="sparse_categorical_crossentropy")
        median, low, high = _median_seconds(lambda: model.train_on_batch(images, labels))
        results.append(dict(model=name, mode="train_step", batch=train_batch,
                            dtype="float32", median_s=median, min_s=low, max_s=high,
                            images_per_s=train_batch / median))
        print(results[-1], flush=True)
        keras.backend.clear_session()


def _padded(images, boxes, classes, size, flip):
    padded_boxes = np.zeros((len(images), 4, 4), "float32")
    padded_classes = -np.ones((len(images), 4), "int32")
    images = images.astype("float32")
    for index, (image_boxes, image_classes) in enumerate(zip(boxes, classes)):
        yxyx = image_boxes * size
        xyxy = yxyx[:, [1, 0, 3, 2]]
        if flip[index]:
            images[index] = images[index, :, ::-1]
            xyxy = np.stack([size - xyxy[:, 2], xyxy[:, 1], size - xyxy[:, 0], xyxy[:, 3]], -1)
        padded_boxes[index, :len(xyxy)] = xyxy
        padded_classes[index, :len(image_classes)] = image_classes
    return images, {"boxes": padded_boxes, "classes": padded_classes}


def shapes(results, epochs, train_images, size=300, batch_size=64, test_images=300):
    from keras_dynconv.data.shapes import SHAPE_CLASSES
    from keras_dynconv.data.shapes import generate_shapes
    from keras_dynconv.detection import evaluate_coco

    rng = np.random.default_rng(0)
    train = generate_shapes(train_images, image_size=size, seed=0)
    test = generate_shapes(test_images, image_size=size, seed=1)
    detector = zoo.condconv_ssd300_mobilenet_v1(
        alpha=0.5, num_experts=8, classes=3, input_shape=(size, size, 3)
    )
    steps = epochs * (train_images // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=2e-3, warmup_steps=steps // 20
    )
    detector.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4))
    start = time.time()
    for epoch in range(epochs):
        images, targets = _padded(*train, size, rng.uniform(size=train_images) < 0.5)
        history = detector.fit(images, targets, batch_size=batch_size, epochs=1, verbose=0)
        print(f"epoch {epoch + 1}: {history.history}", flush=True)
    seconds = time.time() - start
    images, targets = _padded(*test, size, np.zeros(test_images, bool))
    batches = [
        (images[i:i + 50], {k: v[i:i + 50] for k, v in targets.items()})
        for i in range(0, test_images, 50)
    ]
    metrics = evaluate_coco(detector, batches, verbose=0, class_names=SHAPE_CLASSES)
    results.append(dict(model="condconv_ssd300_mobilenet_v1", alpha=0.5, num_experts=8,
                        input=size, epochs=epochs, train_images=train_images,
                        train_seconds=seconds, metrics=metrics))
    print(results[-1], flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=("bench", "shapes"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tiny", action="store_true", help="a CPU check of this script")
    args = parser.parse_args()
    results = []
    try:
        if args.task == "bench":
            bench(results, *((2, 2, 64) if args.tiny else ()))
        elif args.tiny:
            shapes(results, 1, 64, size=96, batch_size=32, test_images=50)
        else:
            shapes(results, args.epochs, args.train_images)
    finally:
        if args.out:
            with open(args.out, "w") as file:
                json.dump({"backend": keras.backend.backend(), "results": results},
                          file, indent=2, default=float)


if __name__ == "__main__":
    main()
