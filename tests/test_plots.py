"""The figures the notebooks show: what they draw, and which inputs they refuse."""

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from mmlib import diagrams, plots
from mmlib.plots import SEQUENTIAL_CMAP, confusion_matrix, hits_grid

CLASSES = ["red star", "blue circle", "green square"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_confusion_matrix_draws_the_counts_with_class_names_on_both_axes():
    counts = torch.tensor([[9, 1, 0], [2, 7, 1], [0, 0, 10]])
    fig = confusion_matrix(counts, CLASSES, title="Three classes")
    ax, colorbar = fig.axes  # the matrix and its colour bar
    drawn = ax.images[0]
    np.testing.assert_array_equal(drawn.get_array(), counts.numpy())
    assert drawn.get_cmap().name == SEQUENTIAL_CMAP
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert ax.get_title() == "Three classes"
    assert colorbar.get_ylabel() == "pictures"


def test_confusion_matrix_accepts_fractions_and_names_the_colour_bar():
    fractions = np.eye(2) * 0.5 + 0.25
    fig = confusion_matrix(fractions, ["a", "b"], value_label="fraction of the row")
    assert fig.axes[1].get_ylabel() == "fraction of the row"


@pytest.mark.parametrize(
    ("confusion", "names", "message"),
    [
        (np.zeros((2, 3)), ["a", "b"], "square"),
        (np.zeros(3), ["a", "b", "c"], "square"),
        (np.zeros((0, 0)), [], "empty"),
        (np.zeros((3, 3)), ["a", "b"], "2 classnames for a 3 x 3"),
        (np.zeros((2, 2)), "a, b", "list of names"),
        (np.array([[1.0, -1.0], [0.0, 2.0]]), ["a", "b"], "not negative"),
        (np.array([[1.0, np.nan], [0.0, 2.0]]), ["a", "b"], "finite"),
    ],
)
def test_confusion_matrix_refuses_what_it_cannot_draw(confusion, names, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(confusion, names)


def test_hits_grid_shows_each_hit_with_its_score_in_rank_order(tmp_path):
    hits = []
    for k, colour in enumerate(("red", "blue", "green")):
        path = tmp_path / f"{colour}.png"
        Image.new("RGB", (16, 16), colour).save(path)
        hits.append(SimpleNamespace(path=str(path), score=0.9 - 0.1 * k, rank=k))
    fig = hits_grid(hits, title='"a red square"')
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["0.900", "0.800", "0.700"]
    assert shown[0].images[0].get_array()[0, 0].tolist() == [255, 0, 0]
    assert fig._suptitle.get_text() == '"a red square"'


def test_hits_grid_refuses_no_hits_and_things_that_are_not_hits():
    with pytest.raises(ValueError, match="no hits"):
        hits_grid([])
    with pytest.raises(ValueError, match=r"\.path and \.score"):
        hits_grid(["picture.png"])


def test_codebook_usage_spread_and_the_dalle2_diagram_draw_and_refuse_bad_input():
    import numpy as np
    import pytest

    from mmlib import plots

    fig = plots.codebook_usage(np.array([0, 5, 1, 3]))
    assert "75% of 4 codes" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="non-negative"):
        plots.codebook_usage(np.array([1, -1]))
    rows = [
        {"seed": s, "split": sp, "seen": 0.9 + 0.01 * s, "heldout": 0.7}
        for s in range(3)
        for sp in ("heldout", "heldout-1")
    ]
    fig = plots.spread(rows, ["seen", "heldout"], "split", goals={"heldout": 0.85})
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "mean 91%" in texts and "mean 70%" in texts
    with pytest.raises(ValueError, match="no \\['missing'\\]"):
        plots.spread(rows, ["missing"], "split")
    assert len(diagrams.dalle2_diagram().axes[0].patches) >= 8


def test_attention_mask_draws_a_causal_mask_and_refuses_a_wrong_one():
    mask = torch.ones(6, 6).tril().bool()
    fig = diagrams.attention_mask(mask, n_text=2)
    assert fig.axes[0].images[0].get_array().shape == (6, 6)
    for bad, n_text in ((torch.ones(3, 4), 1), (mask, 0), (mask, 6)):
        with pytest.raises(ValueError, match="square mask"):
            diagrams.attention_mask(bad, n_text)


def test_picture_and_loss_shows_the_picture_and_every_step_s_loss():
    image = torch.zeros(3, 8, 8)
    image[0] = 1.0  # a red picture
    fig = plots.picture_and_loss(image, [3.0, 2.5, 2.0], title="a red star")
    left, right = fig.axes
    assert left.get_title() == "a red star"
    assert left.images[0].get_array()[0, 0].tolist() == [1.0, 0.0, 0.0]
    (line,) = right.lines
    assert line.get_xdata().tolist() == [0, 1, 2] and line.get_ydata().tolist() == [3.0, 2.5, 2.0]
    assert (right.get_xlabel(), right.get_ylabel()) == ("step", "loss")
    with pytest.raises(ValueError, match="losses is empty"):
        plots.picture_and_loss(image, [])
    with pytest.raises(ValueError, match="finite"):
        plots.picture_and_loss(image, [1.0, float("nan")])
    with pytest.raises(ValueError, match="one picture"):
        plots.picture_and_loss(torch.zeros(2, 3, 8, 8), [1.0])


def test_image_rows_label_each_row_once_and_refuse_an_empty_row():
    pictures = [torch.rand(3, 8, 8) for _ in range(3)]
    fig = plots.image_rows({"original": pictures, "step 10": pictures[:2]}, title="rows")
    assert len(fig.axes) == 6 and fig.axes[0].get_ylabel() == "original"
    assert fig.axes[3].get_ylabel() == "step 10" and len(fig.axes[5].images) == 0
    with pytest.raises(ValueError, match="no empty row"):
        plots.image_rows({"a": pictures, "b": []})


def test_noising_draws_the_schedule_and_one_picture_per_step():
    alpha_bar = torch.linspace(1, 0, 100)
    fig = diagrams.noising(alpha_bar, [torch.rand(3, 8, 8)] * 3, [0, 50, 99], title="schedule")
    curves = fig.axes[0]
    assert len(curves.lines) == 2 and curves.get_xlabel() == "step t"
    assert [ax.get_title() for ax in fig.axes[1:]] == ["t = 0", "t = 50", "t = 99"]
    with pytest.raises(ValueError, match="2 pictures for 3 steps"):
        diagrams.noising(alpha_bar, [torch.rand(3, 8, 8)] * 2, [0, 50, 99])
