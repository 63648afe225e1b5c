from datetime import datetime, timezone

import open_clip
import pytest
import torch

from mmlib.zeroshot import build_classifier, evaluate_shapes

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
    """The protocol's numbers are the confusion matrix's, split by the split's held-out pairs."""
    from mmlib import toyworld

    model, preprocess, tokenizer = tiny_clip
    per_pair = 2
    for split in ("heldout", "heldout-1"):
        result = evaluate_shapes(model, preprocess, tokenizer, per_pair, split=split)
        confusion = result["confusion"]
        assert confusion.shape == (48, 48) and int(confusion.sum()) == 48 * per_pair
        held = [toyworld.all_pairs().index(p) for p in toyworld.held_out_pairs(split)]
        seen = [k for k in range(48) if k not in held]
        right = confusion.diag().float()
        assert result["heldout"] == pytest.approx(
            (right[held].sum() / (len(held) * per_pair)).item()
        )
        assert result["seen"] == pytest.approx((right[seen].sum() / (len(seen) * per_pair)).item())
        assert result["all"] == pytest.approx((right.sum() / (48 * per_pair)).item())


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
    # every mode and size goes through the same path: the same as the image made RGB first
    rgb = classify(model, preprocess, [im.convert("RGB") for im in mixed], clf, names)
    assert torch.allclose(out["probs"], rgb["probs"], atol=1e-5)
    assert isinstance(mixed[1], Image.Image) and mixed[1].mode == "RGBA"
    with pytest.raises(ValueError, match="classnames"):
        classify(model, preprocess, [star], clf, names[:2])


def test_trained_tiny_clip_beats_chance_and_the_probe_learns_from_examples(tiny_clip):
    from mmlib.zeroshot import compare_templates, linear_probe

    model, preprocess, tokenizer = tiny_clip
    probe = linear_probe(model, preprocess, shots=(1, 8), per_pair=2)
    assert set(probe) == {1, 8} and probe[8] > probe[1] > 1 / 48
    prompts = compare_templates(model, preprocess, tokenizer, {"one": ["{}"]}, per_pair=2)
    assert 0.5 < prompts["one"]["seen"] <= 1.0
    with pytest.raises(ValueError, match="shots"):
        linear_probe(model, preprocess, shots=(0,))


def test_mistake_kinds_sort_the_held_out_pictures_by_what_they_got_wrong():
    from mmlib import toyworld
    from mmlib.zeroshot import mistake_kinds

    pairs = toyworld.all_pairs()
    confusion = torch.zeros(48, 48, dtype=torch.long)
    shape, colour = toyworld.HELD_OUT_PAIRS[0]
    other_shape = next(s for s in toyworld.SHAPES if s != shape)
    other_colour = next(c for c in toyworld.COLOUR_NAMES if c != colour)
    row = pairs.index((shape, colour))
    for pred, count in (
        ((shape, colour), 3),
        ((other_shape, colour), 2),
        ((shape, other_colour), 1),
        ((other_shape, other_colour), 4),
    ):
        confusion[row, pairs.index(pred)] = count
    confusion[pairs.index(toyworld.allowed_pairs("heldout")[0]), 0] = 9  # a seen pair: not counted
    kinds = mistake_kinds({"confusion": confusion})
    assert kinds == {"right": 3, "wrong_shape": 2, "wrong_colour": 1, "both": 4}


def test_shape_probe_reads_the_image_encoder_alone(tiny_clip):
    from mmlib.zeroshot import shape_probe

    model, preprocess, _ = tiny_clip
    probe = shape_probe(model, preprocess, per_pair=3)
    assert set(probe) == {"seen", "heldout"}
    assert probe["seen"] >= 0.8  # a CLIP that names seen pairs (>= 95%) knows their shapes

    class Blind(torch.nn.Module):  # the same vector for every picture: the first shape always
        def __init__(self):
            super().__init__()
            self.visual = model.visual
            self.w = torch.nn.Parameter(torch.ones(1))

        def encode_image(self, x):
            return self.w.expand(len(x), 4)

    from mmlib import toyworld

    first = toyworld.SHAPES[0]
    blind = shape_probe(Blind(), None, per_pair=3)
    seen, held = toyworld.allowed_pairs("heldout"), toyworld.HELD_OUT_PAIRS
    assert blind["seen"] == pytest.approx(sum(s == first for s, _ in seen) / len(seen))
    assert blind["heldout"] == pytest.approx(sum(s == first for s, _ in held) / len(held))
