"""DALL-E on the shapes world: the text vocabulary, training data, training and resuming,
re-ranking with CLIP, the judged measurement, and `mmlib train dalle`."""

import json
import re

import pytest
import torch

from mmlib import dalle, dalle_training, judge, tiny_models, toyworld
from mmlib.tiny_models import tiny_tokenizer
from mmlib.transformer import TokenTransformer, TransformerConfig, load_transformer
from mmlib.vqgan import VQGAN, decode_tokens
from mmlib.vqgan_training import TINY_VQGAN

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = TransformerConfig(n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return dalle.new_model(tokenizer, SMALL).eval()


@pytest.fixture(scope="module")
def vqgan():
    torch.manual_seed(0)
    return VQGAN(**TINY_VQGAN).eval()


def test_the_text_vocabulary_is_built_the_same_way_every_time(tokenizer):
    vocab = dalle.build_text_vocab(tokenizer)
    assert vocab == dalle.build_text_vocab(tiny_tokenizer()) and list(vocab) == sorted(vocab)
    assert 30 <= len(vocab) <= 70  # a few dozen of the tokenizer's thousands of ids


def test_decoding_whole_and_partial_grids(vqgan):
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(3))
    images = decode_tokens(vqgan, tokens)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    half = dalle.decode_partial(vqgan, tokens[:, :20])
    assert half.shape == (2, 3, 32, 32)
    assert (half[:, :, 12:, :] == 0.5).all()  # rows 3..7 of the grid are not sampled yet
    assert torch.allclose(half[:, :, :8], images[:, :, :8], atol=0.2)  # rows 0-1 known
    assert (dalle.decode_partial(vqgan, tokens[:, :0]) == 0.5).all()
    assert torch.allclose(dalle.decode_partial(vqgan, tokens), images)


def test_rerank_keeps_the_samples_clip_scores_highest(tiny_clip):
    from mmlib.clip import encode_images, encode_texts

    model, _, tok = tiny_clip
    images = torch.stack(
        [
            toyworld.to_tensor(toyworld.render(toyworld.sample_scene(0, i, "all", "single")))
            for i in range(6)
        ]
    )
    sims = (
        encode_images(model, None, images, progress=False)
        @ encode_texts(model, tok, "a red star", progress=False).T
    )[:, 0]
    best, scores, order = dalle.rerank(images, "a red star", tiny_clip, keep=3)
    assert order.tolist() == sims.argsort(descending=True)[:3].tolist()
    assert torch.allclose(scores, sims[order]) and torch.equal(best, images[order])
    assert torch.isclose(scores[0], sims.max())
    # several CLIPs: their similarities add up (the same CLIP twice: twice the score, same order)
    _, twice, order2 = dalle.rerank(images, "a red star", [tiny_clip, tiny_clip], keep=3)
    assert torch.allclose(twice, 2 * scores) and torch.equal(order2, order)
    with pytest.raises(ValueError, match="at least one CLIP"):
        dalle.rerank(images, "a red star", [])
    with pytest.raises(ValueError, match="keep"):
        dalle.rerank(images, "a red star", tiny_clip, keep=0)


def test_evaluate_dalle_measures_every_draw_and_both_ways_of_re_ranking(
    model, vqgan, tiny_clip, prepared
):
    judges = tiny_models.get_judges(device="cpu")
    pairs = [judge.benchmark_pairs()[0], toyworld.HELD_OUT_PAIRS[0]]
    ev = dalle.evaluate_dalle(
        model,
        vqgan,
        [tiny_clip, tiny_clip],
        judges,
        pairs=pairs,
        n=3,
        seed=1,
        draws=2,
        top_k=8,
    )
    assert ev["pairs"] == pairs * 2 and ev["images"].shape == (4, 3, 3, 32, 32)
    assert ev["best"].shape == (4, 3, 32, 32)
    for way in ("first", "all", "reranked", "reranked_one"):
        assert set(ev[way]) == {"judge_clip", "classifier"}
    by_draw = ev["reranked_by_draw"]["classifier"]
    assert len(by_draw) == 2
    for group in ("seen", "heldout"):  # the draws average to the whole
        assert ev["reranked"]["classifier"][group] == pytest.approx(
            sum(d[group] for d in by_draw) / 2
        )
    one = dalle.evaluate_dalle(model, vqgan, tiny_clip, judges, pairs=pairs, n=2)
    assert "reranked_one" not in one and len(one["reranked_by_draw"]["judge_clip"]) == 1
    with pytest.raises(ValueError, match="draws"):
        dalle.evaluate_dalle(model, vqgan, tiny_clip, judges, pairs=pairs, draws=0)


def test_sampling_keywords_given_replace_only_those_of_the_course_settings(
    model, vqgan, monkeypatch
):
    # one keyword given (temperature) must not drop SAMPLING's guidance and top_k
    seen = []

    class Sampled(Exception):
        pass

    def fake_sample(model, captions, n=1, **kw):
        seen.append(kw)
        raise Sampled  # stop before the judges are needed

    monkeypatch.setattr(dalle, "sample", fake_sample)
    with pytest.raises(Sampled):
        dalle.evaluate_dalle(model, vqgan, None, None, n=2, temperature=1.0)
    assert {k: seen[0].get(k) for k in dalle.SAMPLING} == {**dalle.SAMPLING, "temperature": 1.0}


def test_training_data_never_shows_a_held_out_pair(model, vqgan):
    tc = dalle_training.DalleTrainConfig()  # the course's world: one large object on plain grey
    text, image = dalle_training.scene_data(
        model,
        vqgan,
        60,
        seed=1,
        split="heldout",
        object_size=tc.object_size,
        background=tc.background,
    )
    assert text.shape == (60, 16) and image.shape == (60, 64) and image.max() < 256
    for caption in model.decode_captions(text):
        words = set(caption.split())
        assert not any({s, c} <= words for s, c in toyworld.HELD_OUT_PAIRS), caption
        assert "small" not in words, caption
    full_text, full_image = dalle_training.scene_data(model, vqgan, 60, seed=1, split="heldout")
    assert any("small" in c.split() for c in model.decode_captions(full_text))
    assert not torch.equal(full_image, image)


def test_scene_encoding_shows_its_bar_unless_tqdm_disable_is_set(model, vqgan, capsys, monkeypatch):
    # the workers of `mmlib zoo prepare` set TQDM_DISABLE=1 after tqdm was imported: a bar given
    # disable= must still obey it, or its lines cut through the parent's one bar
    monkeypatch.setenv("TQDM_DISABLE", "1")
    dalle_training.scene_data(model, vqgan, 4, progress=True)
    assert "encode scenes" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE")
    dalle_training.scene_data(model, vqgan, 4, progress=True)
    assert "encode scenes" in capsys.readouterr().err


def test_training_resumes_from_a_checkpoint_to_the_same_weights(tmp_path, tokenizer):
    gen = torch.Generator().manual_seed(4)
    data = (
        dalle.new_model(tokenizer, SMALL).encode_captions(["a red star"] * 16),
        torch.randint(0, 256, (16, 64), generator=gen),
    )
    tc = dalle_training.DalleTrainConfig(steps=6, batch_size=4, checkpoint_every=3, warmup=3)
    straight, history = dalle_training.train_dalle(
        SMALL, tc, None, tokenizer, progress=False, data=data
    )
    assert not straight.training and history.last("image_loss") is not None
    folder = tmp_path / "ckpt"
    half = dalle_training.DalleTrainConfig(**{**tc.__dict__, "steps": 3})
    dalle_training.train_dalle(
        SMALL, half, None, tokenizer, progress=False, data=data, folder=folder
    )
    with pytest.raises(ValueError, match="another config"):  # 3 steps asked vs 6: refused
        dalle_training.train_dalle(
            SMALL, tc, None, tokenizer, progress=False, data=data, folder=folder
        )
    state = json.loads((folder / "state.json").read_text())
    state["config"]["train"]["steps"] = 6  # as if the 6-step run had stopped after step 3
    (folder / "state.json").write_text(json.dumps(state))
    resumed, again = dalle_training.train_dalle(
        SMALL, tc, None, tokenizer, progress=False, data=data, folder=folder
    )
    assert again.records[-1]["step"] == 5
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_train_dalle_command_writes_a_model_that_loads(prepared, tmp_path, capsys):
    from mmlib.tools.cli import main

    main(
        [
            "train",
            "dalle",
            "--out",
            str(tmp_path),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--scenes",
            "32",
            "--full-world",
            "--draws",
            "1",
        ]
    )
    printed = capsys.readouterr().out
    rows = re.findall(r"(first sample|best of 8 by [a-z ]+CLIPs?) *: (.*)", printed)
    assert [r[0] for r in rows] == [
        "first sample",
        "best of 8 by the tiny CLIP",
        "best of 8 by both CLIPs",
    ]
    for _, verdicts in rows:  # each judge: a seen and a held-out percentage
        shares = re.findall(r"(judge_clip|classifier) seen (\d+)% held-out (\d+)%", verdicts)
        assert [s[0] for s in shares] == ["judge_clip", "classifier"]
        assert all(0 <= int(x) <= 100 for s in shares for x in s[1:])
    model = load_transformer(tmp_path / "model", tiny_tokenizer())
    assert isinstance(model, TokenTransformer) and not model.training
    info = json.loads((tmp_path / "model" / "mmlib.json").read_text())
    assert info["training"]["steps"] == 3 and info["history"]
    assert info["training"]["background"] == "gradient" and info["training"]["object_size"] is None


def test_judged_rows_put_the_token_model_beside_vqgan_clip_per_split():
    ev = {
        "first": {
            "judge_clip": {"seen": 0.5, "heldout": 0.25},
            "classifier": {"seen": 0.75, "heldout": 0.5},
        },
        "reranked": {
            "judge_clip": {"seen": 1.0, "heldout": 0.5},
            "classifier": {"seen": 1.0, "heldout": 0.75},
        },
    }
    pairs = [judge.benchmark_pairs()[0], toyworld.HELD_OUT_PAIRS[0]]
    vc = {
        "pairs": pairs,
        "judge_clip": {"correct": [True, False]},
        "classifier": {"correct": [True, True]},
    }
    rows = dalle.judged_rows(ev, vc)
    assert list(rows) == [
        "first sample\nseen",
        "best of n, all CLIPs\nseen",
        "VQGAN+CLIP\nseen",
        "first sample\nheldout",
        "best of n, all CLIPs\nheldout",
        "VQGAN+CLIP\nheldout",
    ]
    assert rows["VQGAN+CLIP\nheldout"] == {"judge CLIP": 0.0, "classifier": 1.0}
    assert rows["best of n, all CLIPs\nseen"] == {"judge CLIP": 1.0, "classifier": 1.0}


def test_compare_rows_put_settings_side_by_side_way_by_way():
    def ev(seen, heldout, n=8):
        fr = {"seen": seen, "heldout": heldout, "all": (seen + heldout) / 2}
        return {
            "n": n,
            "all": {"judge_clip": fr, "classifier": fr},
            "reranked": {"judge_clip": fr, "classifier": fr},
        }

    rows = dalle.compare_rows({"guidance 3": ev(1.0, 0.5), "guidance 1": ev(0.5, 0.25)})
    assert list(rows) == [
        "guidance 3\nevery sample",
        "guidance 1\nevery sample",
        "guidance 3\nbest of 8",
        "guidance 1\nbest of 8",
    ]
    assert rows["guidance 1\nbest of 8"] == {"judge CLIP": 0.375, "classifier": 0.375}
    held = dalle.compare_rows({"g": ev(1.0, 0.5)}, ways=["all"], group="heldout")
    assert held == {"g\nevery sample": {"judge CLIP": 0.5, "classifier": 0.5}}
    with pytest.raises(ValueError, match="has no way 'first'"):
        dalle.compare_rows({"g": ev(1.0, 0.5)}, ways=["first"])
    with pytest.raises(ValueError, match="group"):
        dalle.compare_rows({"g": ev(1.0, 0.5)}, group="held-out")


def test_attribute_fractions_tell_shape_errors_from_colour_errors():
    targets = [("star", "red"), ("circle", "blue"), ("square", "green"), ("star", "pink")]
    verdicts = {
        "classifier": {
            "predictions": [
                ("star", "red"),
                ("square", "blue"),
                ("square", "red"),
                ("star", "pink"),
            ]
        },
        "judge_clip": {"predictions": list(targets)},
    }
    fr = judge.attribute_fractions(verdicts, targets)
    assert fr["classifier"] == {"shape": 0.75, "colour": 0.75, "both": 0.5}
    assert fr["judge_clip"] == {"shape": 1.0, "colour": 1.0, "both": 1.0}
    with pytest.raises(ValueError, match="3 verdicts for 4 targets"):
        judge.attribute_fractions({"c": {"predictions": targets[:3]}}, targets)
