"""Routing plots with matplotlib, saved as PNG (matplotlib: the `plots` extra)."""

import numpy as np


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
    if title:
        figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
