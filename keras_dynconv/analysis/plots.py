"""Routing plots with matplotlib, saved as PNG (matplotlib: the `plots` extra)."""

import numpy as np

BIMODAL_THRESHOLD = 5 / 9  # Sarle's coefficient of a uniform distribution


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "Routing plots need matplotlib: pip install 'keras-dynconv[plots]'"
        ) from error
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path, title):
    if title:
        figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_class_routing(per_class, path, class_names=None, title=None):
    """Heat maps of the mean routing weight per expert per class (CondConv Fig. 3).

    Args:
        per_class: `{panel title: [num_classes, num_experts] array}`, e.g. an
            early and the last CondConv layer from `per_class_mean_routing`.
        path: the PNG file to write.
        class_names: row labels (default: class ids).
        title: figure title.

    Returns:
        `path`.

    Example:
    >>> routing, labels = collect_routing(model, (images, labels))
    >>> plot_class_routing({"block5a": per_class_mean_routing(routing["block5a_routing"],
    ...                     labels)}, "routing.png")
    """
    plt = _pyplot()
    panels = list(per_class.items())
    num_classes = max(values.shape[0] for _, values in panels)
    class_names = list(class_names or [str(i) for i in range(num_classes)])
    figure, axes = plt.subplots(
        1, len(panels), figsize=(1.2 + 3.2 * len(panels), 1.4 + 0.32 * num_classes),
        squeeze=False, constrained_layout=True,
    )
    for axis, (label, values) in zip(axes[0], panels):
        values = np.asarray(values, dtype=np.float32)
        image = axis.imshow(values, aspect="auto", cmap="viridis")
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("expert")
        axis.set_xticks(range(values.shape[1]))
        axis.set_yticks(range(values.shape[0]))
        axis.set_yticklabels(class_names[: values.shape[0]], fontsize=8)
        axis.set_ylabel("class")
        colorbar = figure.colorbar(image, ax=axis, fraction=0.08)
        colorbar.set_label("mean routing weight")
    return _save(plt, figure, path, title)


def plot_routing_distribution(routing, path, bins=40, title=None):
    """Histograms of routing weights, one panel per routing function (CondConv Fig. 4),
    each titled with its bimodality coefficient and expert utilisation.

    Args:
        routing: `{panel title: [N, E] routing weights}`.
        path: the PNG file to write.
        bins: histogram bins over [0, 1] (wider if the weights leave it).
        title: figure title.

    Returns:
        `path`.

    Example:
    >>> routing, labels = collect_routing(model, (images, labels))  # doctest: +SKIP
    >>> plot_routing_distribution({"last": routing["block15_routing"]}, "fig4.png")  # doctest: +SKIP
    """
    from keras_dynconv.analysis.experts import bimodality_coefficient
    from keras_dynconv.analysis.experts import expert_utilisation

    plt = _pyplot()
    panels = list(routing.items())
    figure, axes = plt.subplots(1, len(panels), figsize=(0.6 + 4.6 * len(panels), 3.8),
                                squeeze=False, constrained_layout=True)
    for axis, (label, weights) in zip(axes[0], panels):
        weights = np.asarray(weights, dtype=np.float64)
        low, high = min(0.0, float(weights.min())), max(1.0, float(weights.max()))
        axis.hist(weights.reshape(-1), bins=bins, range=(low, high), color="tab:blue")
        utilisation = expert_utilisation(weights)
        coefficient = bimodality_coefficient(weights)
        modes = "two modes" if coefficient > BIMODAL_THRESHOLD else "one mode"
        axis.set_title(
            f"{label}\nbimodality coefficient {coefficient:.2f} ({modes}: 5/9 rule)\n"
            f"expert shares of the weight {utilisation.min():.2f}-{utilisation.max():.2f}",
            fontsize=9,
        )
        axis.set_xlabel("routing weight")
        axis.set_ylabel("count (examples x experts)")
    return _save(plt, figure, path, title)


def plot_expert_classes(expert_classes, path, title=None):
    """Bar charts of the classes that weigh each expert most (CondConv Fig. 6).

    Args:
        expert_classes: the `ExpertClasses` list of `top_classes_per_expert`.
        path: the PNG file to write.
        title: figure title.

    Returns:
        `path`.

    Example:
    >>> experts = top_classes_per_expert(routing["block15_routing"], labels, top=10,
    ...                                  class_names=imagenet_class_names())  # doctest: +SKIP
    >>> plot_expert_classes(experts[:4], "fig6.png")  # doctest: +SKIP
    """
    plt = _pyplot()
    count = len(expert_classes)
    rows = max(len(entry.classes) for entry in expert_classes)
    figure, axes = plt.subplots(1, count, figsize=(0.8 + 3.0 * count, 1.2 + 0.3 * rows),
                                squeeze=False, constrained_layout=True)
    for axis, entry in zip(axes[0], expert_classes):
        positions = np.arange(len(entry.classes))
        axis.barh(positions, entry.mean_weights, color="tab:green")
        axis.set_yticks(positions)
        axis.set_yticklabels(entry.names, fontsize=8)
        axis.invert_yaxis()  # the most weighted class on top
        axis.set_title(f"expert {entry.expert}", fontsize=10)
        axis.set_xlabel("mean routing weight")
    return _save(plt, figure, path, title)
