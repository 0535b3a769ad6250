"""Figs. 4-6 of the CondConv paper as numbers and plots: the distribution of routing
weights and its bimodality, expert utilisation, top classes per expert."""

import numpy as np
import pytest

from keras_dynconv.analysis import bimodality_coefficient
from keras_dynconv.analysis import expert_utilisation
from keras_dynconv.analysis import plot_expert_classes
from keras_dynconv.analysis import plot_routing_distribution
from keras_dynconv.analysis import routing_histogram
from keras_dynconv.analysis import top_classes_per_expert


def test_bimodality_coefficient_equals_scipys_moments():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for sample in (rng.normal(size=500), rng.uniform(size=300),
                   np.r_[rng.normal(0.05, 0.02, 400), rng.normal(0.9, 0.05, 200)]):
        n = len(sample)
        skew = stats.skew(sample, bias=False)
        excess = stats.kurtosis(sample, bias=False)
        expected = (skew**2 + 1) / (excess + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
        assert bimodality_coefficient(sample) == pytest.approx(expected, rel=1e-9)
    # Two well separated modes score above the 5/9 threshold, one mode below.
    assert bimodality_coefficient(np.r_[rng.normal(0.05, 0.02, 400),
                                        rng.normal(0.9, 0.05, 200)]) > 5 / 9
    assert bimodality_coefficient(rng.normal(size=2000)) < 5 / 9
    assert np.isnan(bimodality_coefficient([1.0, 2.0, 3.0]))
    assert np.isnan(bimodality_coefficient(np.ones(10)))


def test_histogram_and_utilisation():
    routing = np.array([[0.05, 0.95], [0.25, 0.65], [0.45, 0.15]])
    counts, edges = routing_histogram(routing, bins=5)
    assert counts.tolist() == [2, 1, 1, 1, 1] and edges[0] == 0.0 and edges[-1] == 1.0
    np.testing.assert_allclose(expert_utilisation(routing), [0.75 / 2.5, 1.75 / 2.5])
    np.testing.assert_allclose(expert_utilisation(np.zeros((3, 4))), [0.25] * 4)


def test_top_classes_per_expert_ranks_classes_and_finds_exemplars():
    # 3 experts, 4 classes; expert e favours class e, class 3 is lukewarm everywhere.
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    routing = np.full((8, 3), 0.1)
    routing[[0, 1], 0] = [0.9, 0.95]
    routing[[2, 3], 1] = [0.7, 0.8]
    routing[[4, 5], 2] = [0.85, 0.6]
    routing[[6, 7], :] = 0.3
    names = ["cat", "dog", "car", "cup"]
    result = top_classes_per_expert(routing, labels, top=2, class_names=names)
    assert [r.expert for r in result] == [0, 1, 2]
    assert [r.classes for r in result] == [(0, 3), (1, 3), (2, 3)]
    assert result[0].names == ("cat", "cup")
    np.testing.assert_allclose(result[0].mean_weights, [0.925, 0.3])
    assert result[0].exemplars[0] == 1 and result[2].exemplars[0] == 4
    only = top_classes_per_expert(routing, labels, top=1, experts=[1])
    assert len(only) == 1 and only[0].classes == (1,) and only[0].names == ("1",)
    with pytest.raises(ValueError, match="8 examples but labels has 3"):
        top_classes_per_expert(routing, labels[:3])


def test_plots_write_labelled_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    routing = {"block15_routing": rng.beta(0.3, 0.3, size=(200, 8)),
               "block8_routing": rng.uniform(size=(200, 8))}
    path = plot_routing_distribution(routing, str(tmp_path / "distribution.png"))
    labels = rng.integers(0, 10, 200)
    experts = top_classes_per_expert(routing["block15_routing"], labels, top=5,
                                     class_names=[f"class {i}" for i in range(10)],
                                     experts=[0, 1, 2, 3])
    path2 = plot_expert_classes(experts, str(tmp_path / "experts.png"), title="top classes")
    for written in (path, path2):
        with open(written, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
