"""Train a CondConv SSD on generated shapes, offline, and score it with pycocotools.

    KERAS_BACKEND=torch python examples/detect_shapes.py             # the model card's run
    KERAS_BACKEND=torch python examples/detect_shapes.py --fast      # a smoke run (CI)

The images come from `keras_dynconv.data.shapes_detection_dataset`: rectangles,
ellipses and triangles of random colours and sizes on noisy gradients, with their
exact boxes. The detector is `condconv_ssd300_mobilenet_v1` at a small width and
input size, trained from scratch with `model.fit` (no ImageNet MobileNetV1 weights
can be had offline), then scored by `keras_dynconv.detection.evaluate_coco` on
held-out images.
"""

import argparse
import json
import os
import time

import keras

from keras_dynconv import data
from keras_dynconv import zoo
from keras_dynconv.detection import COCOEvaluation
from keras_dynconv.detection import evaluate_coco
from keras_dynconv.detection import format_metrics


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="condconv_ssd300_mobilenet_v1")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--num-experts", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="shapes-output", help="weights and metrics go here")
    parser.add_argument("--fast", action="store_true", help="a few steps: checks the pipeline")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_arguments(argv)
    if args.fast:
        args.train_images, args.test_images, args.epochs, args.image_size = 64, 32, 1, 96
    keras.utils.set_random_seed(args.seed)
    size = args.image_size
    train = data.shapes_detection_dataset(
        args.train_images, image_size=size, batch_size=args.batch_size, training=True,
        seed=args.seed,
    )
    test = data.shapes_detection_dataset(
        args.test_images, image_size=size, batch_size=args.batch_size, seed=args.seed + 1
    )
    expert_arguments = {} if args.model.startswith("ssd") else {"num_experts": args.num_experts}
    detector = zoo.get_model(
        args.model, alpha=args.alpha, classes=len(data.SHAPE_CLASSES),
        input_shape=(size, size, 3), **expert_arguments,
    )
    steps = args.epochs * (args.train_images // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=args.learning_rate, warmup_steps=max(steps // 20, 1)
    )
    detector.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4))
    print(
        f"{args.model} alpha={args.alpha} at {size}x{size}: {len(detector.anchors)} anchors, "
        f"{detector.count_params():,} parameters; {args.train_images} training images, "
        f"{args.epochs} epochs ({keras.backend.backend()} backend)"
    )
    start = time.time()
    evaluation = COCOEvaluation(test, every_n_epochs=max(args.epochs // 3, 1), verbose=1)
    history = detector.fit(train, epochs=args.epochs, callbacks=[evaluation], verbose=2)
    train_seconds = time.time() - start
    metrics = evaluate_coco(detector, test, class_names=data.SHAPE_CLASSES, return_per_class=True)
    print(f"test ({args.test_images} images): {format_metrics(metrics, ('AP', 'AP50', 'AP75'))}")
    print(f"per class AP: {metrics['AP_per_class']}")
    print(f"training took {train_seconds:.0f} s")
    os.makedirs(args.output, exist_ok=True)
    detector.save_weights(os.path.join(args.output, "detector.weights.h5"))
    with open(os.path.join(args.output, "metrics.json"), "w") as file:
        json.dump({
            "arguments": vars(args), "backend": keras.backend.backend(),
            "train_seconds": round(train_seconds, 1), "metrics": metrics,
            "history": history.history,
        }, file, indent=2, default=float)
    return metrics


if __name__ == "__main__":
    main()
