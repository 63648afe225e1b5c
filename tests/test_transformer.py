"""The token transformer: caption ids, causality, the key/value cache, the loss, sampling, files."""

import pytest
import torch

from mmlib import toyworld
from mmlib import transformer as tr
from mmlib.dalle import build_text_vocab

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = tr.TransformerConfig(n_layer=2, n_head=2, n_embd=32)


def small_model(tokenizer, seed: int = 0) -> tr.TokenTransformer:
    torch.manual_seed(seed)
    config = tr.TransformerConfig(**{**SMALL.__dict__, "text_vocab": build_text_vocab(tokenizer)})
    return tr.TokenTransformer(config, tokenizer)


@pytest.fixture(scope="module")
def model(tokenizer):
    return small_model(tokenizer).eval()


def test_every_caption_of_the_world_maps_without_unk_and_unknown_words_become_unk(model):
    captions = [toyworld.sample_scene(3, i, "all").caption for i in range(300)]
    ids = model.encode_captions(captions)
    assert ids.shape == (300, 16) and not (ids == tr.UNK).any()
    assert (ids[:, 0] == tr.SOT).all()
    assert model.decode_captions(ids) == captions
    odd = model.encode_captions(["a red zebra"])[0].tolist()  # "zebra": unknown BPE pieces
    pieces = len(model.tokenizer.encode("zebra"))
    known = model.encode_captions(["a red"])[0, 1:3].tolist()
    assert odd[: 4 + pieces] == [tr.SOT, *known, *[tr.UNK] * pieces, tr.EOT]
    assert model.decode_captions(torch.tensor([odd])) == [" ".join(["a red"] + ["<unk>"] * pieces)]


def test_long_captions_are_truncated_with_a_warning_counting_the_dropped_tokens(model):
    long = "a small red star " * 5  # 20 word tokens, room for 14
    with pytest.warns(UserWarning, match="6 token"):
        ids = model.encode_captions([long, "a red star"])
    assert ids[0, -1] == tr.EOT and (ids[0] != tr.PAD).all()


def test_the_mask_is_causal_and_a_later_token_never_changes_earlier_logits(model):
    mask = tr.attention_mask(16, 64)
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
    other_text[:, 2] = text[1, 2] if text[0, 2] != text[1, 2] else tr.UNK
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
    net = small_model(tokenizer).train()
    text = net.encode_captions(["a red star", "a large blue circle"] * 4)
    image = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    first = tr.next_token_loss(net, text, image)
    assert first["image"].item() == pytest.approx(torch.log(torch.tensor(256.0)).item(), abs=0.3)
    assert first["loss"].item() == pytest.approx(
        first["text"].item() / 8 + 7 * first["image"].item() / 8, rel=1e-5
    )
    for _ in range(15):
        losses = tr.next_token_loss(net, text, image)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert losses["loss"].item() < first["loss"].item() - 0.5
    assert losses["text"].item() < first["text"].item() - 1.0


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.3, 0.15], [0.1, 0.2, 0.3, 0.4]]))
    kept = tr.top_k_filter(logits, 2).isfinite()
    assert kept.tolist() == [[True, False, True, False], [False, False, True, True]]
    assert torch.equal(tr.top_k_filter(logits, None), logits)
    kept = tr.top_p_filter(logits, 0.7).isfinite()  # 0.5 + 0.3 >= 0.7; 0.4 + 0.3 >= 0.7
    assert kept.tolist() == [[True, False, True, False], [False, False, True, True]]
    kept = tr.top_p_filter(logits, 0.81).isfinite()  # needs a third token in both rows
    assert kept.tolist() == [[True, False, True, True], [False, True, True, True]]
    assert tr.top_p_filter(logits, 0.01).isfinite().sum(1).tolist() == [1, 1]
    with pytest.raises(ValueError, match="top_k"):
        tr.top_k_filter(logits, 0)


def test_sampling_is_seeded_and_refuses_empty_requests(model):
    a = tr.sample(model, ["a red star", "a blue circle"], n=3, seed=5, batch_size=4)
    b = tr.sample(model, ["a red star", "a blue circle"], n=3, seed=5, batch_size=4)
    c = tr.sample(model, ["a red star", "a blue circle"], n=3, seed=6, batch_size=4)
    assert a.shape == (6, 64) and a.dtype == torch.long and a.min() >= 0 and a.max() < 256
    assert torch.equal(a, b) and not torch.equal(a, c)
    guided = tr.sample(model, ["a red star", "a blue circle"], n=3, seed=5, guidance=3.0)
    assert guided.shape == (6, 64) and not torch.equal(guided, a)
    assert torch.equal(
        guided, tr.sample(model, ["a red star", "a blue circle"], n=3, seed=5, guidance=3.0)
    )
    greedy = tr.sample(model, "a red star", n=2, top_k=1)
    assert torch.equal(greedy[0], greedy[1])  # top-1 leaves no choice
    with pytest.raises(ValueError, match="n >= 1"):
        tr.sample(model, ["a red star"], n=0)
    with pytest.raises(ValueError, match="at least one caption"):
        tr.sample(model, [], n=2)


def test_a_model_saves_and_loads_and_a_folder_without_one_says_so(model, tokenizer, tmp_path):
    saved = tr.save_transformer(tmp_path / "model", model, {"note": "test"})
    loaded = tr.load_transformer(saved, tokenizer, device="cpu")
    assert loaded.config == model.config and not loaded.training
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="no model folder"):
        tr.load_transformer(tmp_path / "nothing", tokenizer)
    (saved / "model.safetensors").write_bytes(b"<html><body>404</body></html>")
    with pytest.raises(ValueError, match="HTML page"):
        tr.load_transformer(saved, tokenizer)


def test_a_config_without_a_text_vocabulary_is_refused(tokenizer):
    with pytest.raises(ValueError, match="text_vocab is empty"):
        tr.TokenTransformer(SMALL, tokenizer)


def test_a_prefix_is_kept_and_the_model_finishes_the_picture(model):
    prefix = torch.randint(0, 256, (24,), generator=torch.Generator().manual_seed(7))
    out = tr.sample(model, ["a red star", "a blue circle"], n=2, seed=1, prefix=prefix)
    assert out.shape == (4, 64) and (out[:, :24] == prefix).all()
    again = tr.sample(model, ["a red star", "a blue circle"], n=2, seed=1, prefix=prefix)
    assert torch.equal(out, again)
    guided = tr.sample(model, "a red star", n=3, seed=1, prefix=prefix[:8], guidance=3.0)
    assert (guided[:, :8] == prefix[:8]).all()
    with pytest.raises(ValueError, match="prefix"):
        tr.sample(model, "a red star", prefix=torch.zeros(64, dtype=torch.long))
    with pytest.raises(ValueError, match="prefix tokens"):
        tr.sample(model, "a red star", prefix=torch.full((4,), 999))
