"""The DALL-E style token transformer: vocabulary, causality, loss, sampling, re-ranking, files."""

import json

import pytest
import torch

from mmlib import dalle, toyworld
from mmlib.vqgan import TINY_VQGAN, VQGAN
from mmlib.zoo import tiny_tokenizer

SMALL = dalle.DalleConfig(n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Sampling runs thousands of tiny ops; on a busy 2-core machine two threads wait on each
    other at every op (a 100x slow-down), one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return dalle.TokenTransformer(SMALL, tokenizer).eval()


@pytest.fixture(scope="module")
def vqgan():
    torch.manual_seed(0)
    return VQGAN(**TINY_VQGAN).eval()


def test_every_caption_of_the_world_maps_without_unk_and_unknown_words_become_unk(model):
    captions = [toyworld.sample_scene(3, i, "all").caption for i in range(300)]
    ids = model.encode_captions(captions)
    assert ids.shape == (300, 16) and not (ids == dalle.UNK).any()
    assert (ids[:, 0] == dalle.SOT).all()
    assert model.decode_captions(ids) == captions
    odd = model.encode_captions(["a red zebra"])[0].tolist()
    assert odd[:5] == [
        dalle.SOT,
        *model.encode_captions(["a red"])[0, 1:3].tolist(),
        dalle.UNK,
        dalle.EOT,
    ]
    assert model.decode_captions(torch.tensor([odd])) == ["a red <unk>"]


def test_the_text_vocabulary_is_built_the_same_way_every_time(tokenizer):
    vocab = dalle.build_text_vocab(tokenizer)
    assert vocab == dalle.build_text_vocab(tiny_tokenizer()) and list(vocab) == sorted(vocab)
    assert 30 <= len(vocab) <= 60  # a few dozen of CLIP's 49,408 ids


def test_long_captions_are_truncated_with_a_warning_counting_the_dropped_tokens(model):
    long = "a small red star " * 5  # 20 word tokens, room for 14
    with pytest.warns(UserWarning, match="6 token"):
        ids = model.encode_captions([long, "a red star"])
    assert ids[0, -1] == dalle.EOT and (ids[0] != dalle.PAD).all()


def test_the_mask_is_causal_and_a_later_token_never_changes_earlier_logits(model):
    mask = dalle.attention_mask(16, 64)
    assert mask.shape == (80, 80) and mask.dtype == torch.bool
    assert mask[20, :21].all() and not mask[20, 21:].any()
    text = model.encode_captions(["a red star", "a blue circle"])
    image = torch.randint(0, 256, (2, 63), generator=torch.Generator().manual_seed(0))
    text_logits, image_logits = model(text, image)
    assert text_logits.shape == (2, 15, model.config.n_text_vocab)
    assert image_logits.shape == (2, 64, 256)
    changed = image.clone()
    changed[:, 40] = (changed[:, 40] + 1) % 256  # image token 40 is predicted by output 40
    _, after = model(text, changed)
    assert torch.allclose(after[:, :41], image_logits[:, :41], atol=1e-5)
    assert not torch.allclose(after[:, 41:], image_logits[:, 41:], atol=1e-5)
    other_text = text.clone()
    other_text[:, 2] = text[1, 2] if text[0, 2] != text[1, 2] else dalle.UNK
    t2, i2 = model(other_text, image)
    assert torch.allclose(t2[:, :2], text_logits[:, :2], atol=1e-5)
    assert not torch.allclose(i2, image_logits, atol=1e-5)  # the picture depends on the words


def test_the_kv_cache_gives_the_same_logits_as_the_full_sequence(model):
    text = model.encode_captions(["a small green heart"])
    image = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(1))
    _, full = model(text, image)
    cache = model.new_cache()
    _, step = model(text, image[:, :0], cache)
    outs = [step]
    for j in range(10):
        outs.append(model(None, image[:, j : j + 1], cache)[1])
    assert torch.allclose(torch.cat(outs, dim=1), full, atol=1e-5)


def test_the_loss_falls_on_a_fixed_batch_and_weighs_text_and_image_like_dalle(tokenizer):
    torch.manual_seed(0)
    net = dalle.TokenTransformer(SMALL, tokenizer).train()
    text = net.encode_captions(["a red star", "a large blue circle"] * 4)
    image = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    first = dalle.dalle_loss(net, text, image)
    assert first["image"].item() == pytest.approx(torch.log(torch.tensor(256.0)).item(), abs=0.3)
    assert first["loss"].item() == pytest.approx(
        first["text"].item() / 8 + 7 * first["image"].item() / 8, rel=1e-5
    )
    for _ in range(15):
        losses = dalle.dalle_loss(net, text, image)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert losses["loss"].item() < first["loss"].item() - 0.5
    assert losses["text"].item() < first["text"].item() - 1.0


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15], [0.1, 0.2, 0.3, 0.4]]))
    kept = dalle.top_k_filter(logits, 2).isfinite()
    assert kept.tolist() == [[True, False, True, False], [False, False, True, True]]
    assert torch.equal(dalle.top_k_filter(logits, None), logits)
    kept = dalle.top_p_filter(logits, 0.7).isfinite()  # 0.5 + 0.3 >= 0.7; 0.4 + 0.3 >= 0.7
    assert kept.tolist() == [[True, False, True, False], [False, False, True, True]]
    kept = dalle.top_p_filter(logits, 0.81).isfinite()  # needs a third token in both rows
    assert kept.tolist() == [[True, False, True, True], [False, True, True, True]]
    assert dalle.top_p_filter(logits, 0.01).isfinite().sum(1).tolist() == [1, 1]
    with pytest.raises(ValueError, match="top_k"):
        dalle.top_k_filter(logits, 0)


def test_sampling_is_seeded_and_refuses_empty_requests(model):
    a = dalle.sample(model, ["a red star", "a blue circle"], n=3, seed=5, batch_size=4)
    b = dalle.sample(model, ["a red star", "a blue circle"], n=3, seed=5, batch_size=4)
    c = dalle.sample(model, ["a red star", "a blue circle"], n=3, seed=6, batch_size=4)
    assert a.shape == (6, 64) and a.dtype == torch.long and a.min() >= 0 and a.max() < 256
    assert torch.equal(a, b) and not torch.equal(a, c)
    guided = dalle.sample(model, ["a red star", "a blue circle"], n=3, seed=5, guidance=3.0)
    assert guided.shape == (6, 64) and not torch.equal(guided, a)
    assert torch.equal(
        guided, dalle.sample(model, ["a red star", "a blue circle"], n=3, seed=5, guidance=3.0)
    )
    greedy = dalle.sample(model, "a red star", n=2, top_k=1)
    assert torch.equal(greedy[0], greedy[1])  # top-1 leaves no choice
    with pytest.raises(ValueError, match="n >= 1"):
        dalle.sample(model, ["a red star"], n=0)
    with pytest.raises(ValueError, match="at least one caption"):
        dalle.sample(model, [], n=2)


def test_decoding_whole_and_partial_grids(vqgan):
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(3))
    images = dalle.decode_tokens(vqgan, tokens)
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


def test_evaluate_dalle_measures_every_draw_and_both_ways_of_re_ranking(model, vqgan, tiny_clip):
    from mmlib import judge
    from mmlib.zoo import get_judges

    pairs = [judge.benchmark_pairs()[0], toyworld.HELD_OUT_PAIRS[0]]
    ev = dalle.evaluate_dalle(
        model,
        vqgan,
        [tiny_clip, tiny_clip],
        get_judges(),
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
    one = dalle.evaluate_dalle(model, vqgan, tiny_clip, get_judges(), pairs=pairs, n=2)
    assert "reranked_one" not in one and len(one["reranked_by_draw"]["judge_clip"]) == 1
    with pytest.raises(ValueError, match="draws"):
        dalle.evaluate_dalle(model, vqgan, tiny_clip, get_judges(), pairs=pairs, draws=0)


def test_training_data_never_shows_a_held_out_pair(model, vqgan):
    tc = dalle.DalleTrainConfig()  # the course's world: one large object on plain grey
    text, image = dalle.scene_data(
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
    full_text, full_image = dalle.scene_data(model, vqgan, 60, seed=1, split="heldout")
    assert any("small" in c.split() for c in model.decode_captions(full_text))
    assert not torch.equal(full_image, image)


def test_training_resumes_from_a_checkpoint_and_the_model_saves_and_loads(tmp_path, tokenizer):
    gen = torch.Generator().manual_seed(4)
    data = (
        dalle.TokenTransformer(SMALL, tokenizer).encode_captions(["a red star"] * 16),
        torch.randint(0, 256, (16, 64), generator=gen),
    )
    tc = dalle.DalleTrainConfig(steps=6, batch_size=4, checkpoint_every=3, warmup=3)
    straight, history = dalle.train_dalle(SMALL, tc, tokenizer=tokenizer, progress=False, data=data)
    assert not straight.training and history.last("image_loss") is not None
    folder = tmp_path / "ckpt"
    half = dalle.DalleTrainConfig(**{**tc.__dict__, "steps": 3})
    dalle.train_dalle(SMALL, half, tokenizer=tokenizer, progress=False, data=data, folder=folder)
    with pytest.raises(ValueError, match="another config"):  # 3 steps asked vs 6: refused
        dalle.train_dalle(SMALL, tc, tokenizer=tokenizer, progress=False, data=data, folder=folder)
    state = json.loads((folder / "state.json").read_text())
    state["config"]["train"]["steps"] = 6  # as if the 6-step run had stopped after step 3
    (folder / "state.json").write_text(json.dumps(state))
    resumed, again = dalle.train_dalle(
        SMALL, tc, tokenizer=tokenizer, progress=False, data=data, folder=folder
    )
    assert again.records[-1]["step"] == 5
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    saved = dalle.save_dalle(tmp_path / "model", straight, {"note": "test"})
    loaded = dalle.load_dalle(saved, device="cpu", tokenizer=tokenizer)
    assert loaded.config == straight.config
    for (name, a), b in zip(
        straight.state_dict().items(), loaded.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="no DALL-E model"):
        dalle.load_dalle(tmp_path / "nothing")


def test_train_dalle_command_writes_a_model_that_loads(tmp_path, capsys):
    from mmlib.cli import main

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
        ]
    )
    printed = capsys.readouterr().out
    assert "best of 8 by both CLIPs" in printed and "by the tiny CLIP" in printed
    assert "held-out" in printed
    model = dalle.load_dalle(tmp_path / "model")
    assert isinstance(model, dalle.TokenTransformer) and not model.training
    info = json.loads((tmp_path / "model" / "mmlib.json").read_text())
    assert info["training"]["steps"] == 3 and info["history"]
    assert info["training"]["background"] == "gradient" and info["training"]["object_size"] is None
