"""The CondConv paper's routing analysis (Figs. 3, 4 and 6) on the demo's model.

    KERAS_BACKEND=torch python examples/routing_analysis.py                 # ~10 min, 2 cores
    KERAS_BACKEND=torch python examples/routing_analysis.py --model m.keras # your model
    KERAS_BACKEND=torch python examples/routing_analysis.py --fast          # a smoke run (CI)

Without `--model` it fine-tunes the demo's CondConv model, CondConv-EfficientNet-Lite0
with 4 experts upcycled from the real ImageNet Lite0 weights (offline), on
scikit-learn's handwritten digits, as `keras_dynconv.demo` does. Then it collects the
routing weights of every routing function over the test images (a model with extra
outputs: `keras_dynconv.analysis.routing_model`) and writes into `--output-dir`:

* `class_routing.png`: mean routing weight per expert per class, first and last
  routing function (paper Fig. 3);
* `routing_distribution.png`: the distribution of routing weights with its
  bimodality coefficient and the experts' shares of the weight (Fig. 4);
* `expert_classes.png`: the classes that weigh each expert of the last routing
  function most (Fig. 6);
* `routing_summary.json`: the same numbers, and the routing entropy per function.
"""

import argparse
import json
import os

import keras

from keras_dynconv import analysis
from keras_dynconv.data import offline_dataset
from keras_dynconv.demo import build_models
from keras_dynconv.transfer import fine_tune

DIGIT_NAMES = [f"digit {i}" for i in range(10)]


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None,
                        help="a .keras classifier of the digits to analyse (default: fine-tune "
                        "the demo's CondConv-Lite0)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-experts", type=int, default=4)
    parser.add_argument("--top", type=int, default=5, help="classes per expert in the Fig. 6 plot")
    parser.add_argument("--output-dir", default="routing-analysis")
    parser.add_argument("--fast", action="store_true",
                        help="one epoch on 128 images: checks the pipeline, not the science")
    return parser.parse_args(argv)


def fine_tuned_demo_model(train, test, num_classes, epochs, num_experts, verbose):
    """The demo's CondConv-EfficientNet-Lite0 (upcycled), fine-tuned on `train`."""
    model = list(build_models(num_experts=num_experts).values())[1]
    history = fine_tune(model, train, test, classes=num_classes, mode="full", epochs=epochs,
                        freeze_batch_norm=False, verbose=verbose)
    return history.model


def analyse(model, test, output_dir, top=5, class_names=None):
    """Writes the three figures and the summary; returns the summary dict."""
    routing, labels = analysis.collect_routing(model, test)
    names = list(routing)
    first, last = names[0], names[-1]
    os.makedirs(output_dir, exist_ok=True)
    analysis.plot_class_routing(
        {f"{first} (first)": analysis.per_class_mean_routing(routing[first], labels),
         f"{last} (last)": analysis.per_class_mean_routing(routing[last], labels)},
        os.path.join(output_dir, "class_routing.png"), class_names=class_names,
        title=f"{model.name}: mean routing weight per class (CondConv Fig. 3)",
    )
    analysis.plot_routing_distribution(
        {first: routing[first], last: routing[last]},
        os.path.join(output_dir, "routing_distribution.png"),
        title=f"{model.name}: distribution of routing weights (CondConv Fig. 4)",
    )
    experts = analysis.top_classes_per_expert(routing[last], labels, top=top,
                                              class_names=class_names)
    analysis.plot_expert_classes(
        experts, os.path.join(output_dir, "expert_classes.png"),
        title=f"{model.name}, {last}: classes with the highest mean routing weight (Fig. 6)",
    )
    summary = {
        name: {
            "entropy": analysis.routing_entropy(weights),
            "bimodality_coefficient": analysis.bimodality_coefficient(weights),
            "expert_shares": analysis.expert_utilisation(weights).tolist(),
        }
        for name, weights in routing.items()
    }
    summary[last]["top_classes"] = {e.expert: list(e.names) for e in experts}
    with open(os.path.join(output_dir, "routing_summary.json"), "w") as file:
        json.dump(summary, file, indent=2)
    return summary


def main(argv=None):
    args = parse_arguments(argv)
    max_train = 128 if args.fast else None
    train, test, info = offline_dataset("digits", image_size=32, batch_size=64,
                                        max_train=max_train)
    if args.model:
        model = keras.saving.load_model(args.model)
    else:
        epochs = 1 if args.fast else args.epochs
        model = fine_tuned_demo_model(train, test, info.num_classes, epochs, args.num_experts,
                                      verbose=0 if args.fast else 1)
    summary = analyse(model, test, args.output_dir, top=args.top, class_names=DIGIT_NAMES)
    for name, numbers in summary.items():
        shares = ", ".join(f"{share:.2f}" for share in numbers["expert_shares"])
        print(f"{name}: entropy {numbers['entropy']:.3f}, bimodality "
              f"{numbers['bimodality_coefficient']:.2f}, expert shares [{shares}]")
    print(f"wrote class_routing.png, routing_distribution.png, expert_classes.png and "
          f"routing_summary.json to {args.output_dir}")
    return summary


if __name__ == "__main__":
    main()
