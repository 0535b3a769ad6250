"""What experts do over a dataset: the CondConv paper's Figs. 4-6 as numbers.

All functions take the `[N, E]` routing weights of one routing function (a value of
`collect_routing(...)[0]`) and NumPy class ids; they compute, they do not plot
(`keras_dynconv.analysis.plots` does).
"""

import dataclasses

import numpy as np


def routing_histogram(routing, bins=20, value_range=(0.0, 1.0)):
    """Distribution of all routing weights (paper Fig. 4): `(counts [bins], edges)`.

    Sigmoid routing lives in [0, 1], the default range; pass another for tanh / relu.

    Example:
    >>> counts, edges = routing_histogram(np.array([[0.05, 0.95], [0.1, 0.9]]), bins=2)
    >>> counts.tolist()
    [2, 2]
    """
    values = np.asarray(routing, dtype=np.float64).reshape(-1)
    return np.histogram(values, bins=bins, range=value_range)


def bimodality_coefficient(values):
    """Sarle's bimodality coefficient `(skew^2 + 1) / (excess kurtosis + 3 (n-1)^2 /
    ((n-2)(n-3)))` of a sample, with the usual bias-corrected skewness and kurtosis.

    About 0.33 for a normal distribution, 0.56 (5/9) for a uniform one; above 5/9
    suggests two modes (paper Fig. 4: "routing weights follow a bi-modal
    distribution"). NaN for fewer than 4 values or no spread.

    Example:
    >>> round(bimodality_coefficient(np.r_[np.zeros(50), np.ones(50)]), 2)
    0.95
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = values.size
    if n < 4:
        return float("nan")
    centred = values - values.mean()
    m2, m3, m4 = (np.mean(centred**k) for k in (2, 3, 4))
    if m2 == 0:
        return float("nan")
    g1, g2 = m3 / m2**1.5, m4 / m2**2 - 3.0
    skew = g1 * np.sqrt(n * (n - 1)) / (n - 2)
    excess_kurtosis = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * g2 + 6)
    return float((skew**2 + 1) / (excess_kurtosis + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def expert_utilisation(routing):
    """Share of the total routing weight each expert receives, `[E]`, summing to 1.

    Uniform use is `1 / E` each; an expert near 0 is (nearly) dead.

    Example:
    >>> expert_utilisation(np.array([[0.1, 0.3], [0.1, 0.5]])).round(2).tolist()
    [0.2, 0.8]
    """
    routing = np.maximum(np.asarray(routing, dtype=np.float64), 0.0)
    totals = routing.sum(axis=0)
    grand_total = totals.sum()
    if grand_total == 0:
        return np.full(routing.shape[1], 1.0 / routing.shape[1])
    return totals / grand_total


@dataclasses.dataclass(frozen=True)
class ExpertClasses:
    """The classes that weigh one expert most (paper Fig. 6).

    Attributes:
        expert: the expert index.
        classes: class ids, highest mean routing weight first.
        names: their names (class ids as text without `class_names`).
        mean_weights: their mean routing weight for this expert.
        exemplars: per class, the index into the dataset of the example with the
            highest routing weight (the image the paper shows).

    Example:
    >>> entry = top_classes_per_expert(np.array([[0.9], [0.2]]), np.array([3, 5]))[0]
    >>> entry.classes, entry.exemplars
    ((3, 5), (0, 1))
    """

    expert: int
    classes: tuple
    names: tuple
    mean_weights: tuple
    exemplars: tuple


def top_classes_per_expert(routing, labels, top=10, class_names=None, experts=None):
    """For each expert, the `top` classes with the highest mean routing weight.

    Args:
        routing: `[N, E]` routing weights.
        labels: `[N]` class ids.
        top: classes per expert.
        class_names: names indexed by class id.
        experts: which experts (default all).

    Returns:
        A list of `ExpertClasses`.

    Example:
    >>> routing = np.array([[0.9, 0.1], [0.8, 0.3], [0.2, 0.7]])
    >>> [entry.names for entry in top_classes_per_expert(routing, np.array([0, 0, 1]), top=1,
    ...                                                  class_names=["cat", "car"])]
    [('cat',), ('car',)]
    """
    routing = np.asarray(routing, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(routing) != len(labels):
        raise ValueError(
            f"routing has {len(routing)} examples but labels has {len(labels)}"
        )
    present = np.unique(labels)
    means = np.stack([routing[labels == c].mean(axis=0) for c in present])  # [C', E]
    results = []
    for expert in range(routing.shape[1]) if experts is None else experts:
        order = np.argsort(-means[:, expert], kind="stable")[:top]
        classes = present[order]
        exemplars = []
        for class_id in classes:
            members = np.flatnonzero(labels == class_id)
            exemplars.append(int(members[np.argmax(routing[members, expert])]))
        names = tuple(str(class_names[c]) if class_names is not None else str(c)
                      for c in classes)
        results.append(ExpertClasses(
            expert=int(expert), classes=tuple(int(c) for c in classes), names=names,
            mean_weights=tuple(float(w) for w in means[order, expert]),
            exemplars=tuple(exemplars),
        ))
    return results
