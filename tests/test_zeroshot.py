import open_clip
import pytest
import torch

from mmlib.zeroshot import SHAPES_TEMPLATES, build_classifier, evaluate_shapes


def test_classifier_equals_open_clips(tiny_clip):
    model, _, tokenizer = tiny_clip
    classes = ["red star", "orange circle", "white heart"]
    for templates in (["a {}", "a picture of a {}"], [lambda c: f"one {c}", lambda c: c]):
        ours = build_classifier(model, tokenizer, classes, templates)
        theirs = open_clip.build_zero_shot_classifier(model, tokenizer, classes, templates,
                                                      device="cpu", use_tqdm=False)  # fmt: skip
        assert ours.shape == (model.text_projection.shape[1], 3)
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_bad_class_lists_and_templates_are_refused(tiny_clip):
    model, _, tokenizer = tiny_clip
    with pytest.raises(ValueError, match="empty"):
        build_classifier(model, tokenizer, [])
    with pytest.raises(ValueError, match="duplicates \\['cat'\\]"):
        build_classifier(model, tokenizer, ["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="no '\\{\\}'"):
        build_classifier(model, tokenizer, ["cat"], ["a photo"])


def test_shapes_protocol_reports_seen_and_heldout(tiny_clip):
    model, preprocess, tokenizer = tiny_clip
    result = evaluate_shapes(model, preprocess, tokenizer, per_pair=1, templates=SHAPES_TEMPLATES)
    assert set(result) >= {"seen", "heldout", "confusion"}
    assert result["confusion"].sum() == 48
