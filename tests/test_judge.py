import pytest
import torch

from mmlib import judge, tiny_models, toyworld, world_data
from mmlib.store.checkpoints import read_model_dir


def test_the_classifier_learns_shapes_and_colours_from_a_short_training():
    model, history = judge.train_classifier(
        judge.ClassifierTrainConfig(steps=30, batch_size=64), progress=False
    )
    # 30 steps give about 22% of fresh renders right on both shape and colour (seeds 7, 1, 2:
    # 22%, 22%, 23%; chance is 1 in 48, about 2%): the loss halves and 10% is a safe floor
    assert history.records[-1]["loss"] < history.records[0]["loss"] - 1.0
    assert judge.classifier_accuracy(model, per_pair=4) >= 0.10


def test_the_prepared_judges_recognise_fresh_renders(prepared):
    clip, classifier = tiny_models.get_judges(device="cpu")
    assert read_model_dir(tiny_models.judge_classifier_dir())["accuracy"] >= 0.99
    data = world_data.PairImages(per_pair=1, seed=77)
    images = torch.stack([data[i][0] for i in range(len(data))])
    verdict = judge.judge(images, data.pairs, clip, classifier)
    assert verdict["classifier"]["fraction"] >= 0.95
    assert verdict["judge_clip"]["fraction"] >= 0.85
    noise = torch.rand(8, 3, 32, 32)
    wrong = judge.judge(noise, [("star", "red")] * 8, clip, classifier)
    assert wrong["classifier"]["fraction"] < 1  # noise is not a red star to both judges


def test_judging_checks_its_input():
    model = judge.ShapeColourNet()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        judge.classify(model, torch.rand(3, 32, 32))
    assert len(judge.classify(model, torch.rand(2, 3, 64, 64))) == 2  # other sizes are resized


def test_fractions_by_split_separate_seen_and_held_out_pairs():
    held = toyworld.HELD_OUT_PAIRS[0]
    seen = next(p for p in toyworld.all_pairs() if p not in toyworld.HELD_OUT_PAIRS)
    got = judge.fractions_by_split([True, False, True, True], [seen, seen, held, list(held)])
    assert got == {"seen": 0.5, "heldout": 1.0, "all": 0.75}
    only_seen = judge.fractions_by_split([True], [seen])
    assert only_seen["seen"] == 1.0 and only_seen["heldout"] != only_seen["heldout"]  # nan
    with pytest.raises(ValueError, match="verdicts"):
        judge.fractions_by_split([True], [seen, held])
