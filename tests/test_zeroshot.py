from datetime import datetime, timezone

import open_clip
import pytest
import torch

from mmlib.zeroshot import SHAPES_TEMPLATES, build_classifier, evaluate_shapes

NOW = datetime.now(timezone.utc)


def test_classifier_equals_open_clips(tiny_clip):
    model, _, tokenizer = tiny_clip
    classes = ["red star", "orange circle", "white heart"]
    for templates in (["a {}", "a picture of a {}"], [lambda c: f"one {c}", lambda c: c]):
        ours = build_classifier(model, tokenizer, classes, templates)
        theirs = open_clip.build_zero_shot_classifier(
            model, tokenizer, classes, templates, device="cpu", use_tqdm=False
        )
        assert ours.shape == (model.text_projection.shape[1], 3)
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_bad_class_lists_and_templates_are_refused(tiny_clip):
    model, _, tokenizer = tiny_clip
    with pytest.raises(ValueError, match="empty"):
        build_classifier(model, tokenizer, [])
    with pytest.raises(ValueError, match="duplicates \\['cat'\\]"):
        build_classifier(model, tokenizer, ["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="exactly one"):
        build_classifier(model, tokenizer, ["cat"], ["a photo"])


def test_shapes_protocol_reports_seen_and_heldout(tiny_clip):
    model, preprocess, tokenizer = tiny_clip
    result = evaluate_shapes(model, preprocess, tokenizer, per_pair=1, templates=SHAPES_TEMPLATES)
    assert set(result) >= {"seen", "heldout", "confusion"}
    assert result["confusion"].sum() == 48


def test_labels_are_parsed_and_bad_lists_refused():
    from mmlib.zeroshot import parse_labels

    assert parse_labels(" cat, dog ,, a red star ") == ["cat", "dog", "a red star"]
    with pytest.raises(ValueError, match="no labels"):
        parse_labels(" , ")
    with pytest.raises(ValueError, match="more than once"):
        parse_labels("cat, dog, cat")


def test_template_sets_and_cifar_names_ship_with_mmlib():
    from mmlib.zeroshot import TEMPLATES, cifar100_classnames

    assert len(TEMPLATES["OpenAI's 80"]) == 80 and len(TEMPLATES["OpenCLIP's 7"]) == 7
    names = cifar100_classnames()
    assert len(names) == len(set(names)) == 100 and "aquarium fish" in names


def test_classify_gives_probabilities_and_top_k_for_mixed_images(tiny_clip):
    from PIL import Image

    from mmlib import toyworld
    from mmlib.zeroshot import classify

    model, preprocess, tokenizer = tiny_clip
    star = toyworld.render_image(toyworld.sample_scene(0, 0, "all", "single", pair=("star", "red")))
    mixed = [star, star.convert("RGBA"), star.convert("L"), star.resize((97, 61))]
    names = ["red star", "blue circle", "green heart"]
    clf = build_classifier(model, tokenizer, names)
    out = classify(model, preprocess, mixed, clf, names, top_k=2)
    assert out["probs"].shape == (4, 3)
    assert torch.allclose(out["probs"].sum(dim=1), torch.ones(4))
    assert out["top_k"][0][0][0] == "red star" and len(out["top_k"][0]) == 2
    with pytest.raises(ValueError, match="classnames"):
        classify(model, preprocess, [star], clf, names[:2])
    assert Image.Image  # images of several sizes and modes went through the same path


def test_trained_tiny_clip_beats_chance_and_the_probe_learns_from_examples(tiny_clip):
    from mmlib.zeroshot import compare_templates, linear_probe

    model, preprocess, tokenizer = tiny_clip
    probe = linear_probe(model, preprocess, shots=(1, 8), per_pair=2)
    assert set(probe) == {1, 8} and probe[8] > probe[1] > 1 / 48
    prompts = compare_templates(model, preprocess, tokenizer, {"one": ["{}"]}, per_pair=2)
    assert 0.5 < prompts["one"]["seen"] <= 1.0
    with pytest.raises(ValueError, match="shots"):
        linear_probe(model, preprocess, shots=(0,))
