"""unCLIP in miniature: its data, its two trainers, sampling, bad input, and the course's models."""

import json
from dataclasses import replace

import pytest
import torch

from mmlib import diffusion, recipes, tiny_generators, tiny_models, unclip, unclip_training, zoo
from mmlib.tools.prepare import PREPARE_STEPS

SMALL_UNET = diffusion.UNetConfig(channels=32, width=16, cond_dim=128, heads=2)
SMALL_PRIOR = diffusion.DenoiserConfig(dim=128, width=32, depth=1)
QUIET = {"log_every": 1000, "checkpoint_every": 1000}
BUSY = {"log_every": 1, "checkpoint_every": 1}


@pytest.fixture(scope="module")
def parts():
    """An untrained tiny CLIP and VQGAN (the shapes are what matter here) and 16 scenes' data."""
    from mmlib.vqgan_training import new_tiny_vqgan

    clip = (tiny_models.new_tiny_clip(0).eval(), None, tiny_models.tiny_tokenizer())
    vqgan = new_tiny_vqgan(0).eval()
    return clip, vqgan, unclip_training.scene_data(clip, 16, seed=0, vqgan=vqgan)


def assert_same_weights(a, b):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_scene_data_holds_captions_embeddings_and_latents_of_the_token_models_world(parts):
    clip, vqgan, data = parts
    assert len(data["captions"]) == 16 and data["text"].shape == data["image"].shape == (16, 128)
    assert torch.allclose(data["image"].norm(dim=-1), torch.ones(16), atol=1e-5)
    assert data["latents"].shape == (16, 32, 8, 8)
    scenes = unclip.world_scenes(16)
    assert {s.objects[0].size for s in scenes} == {unclip.WORLD["object_size"]}
    assert [s.caption for s in scenes] == data["captions"]


def test_a_caption_with_no_known_word_is_refused_with_what_to_write(parts):
    clip = parts[0]
    assert unclip.text_embeddings(clip, "a red star").shape == (1, 128)
    for bad in ("quantum banana", "a picture of a dog"):  # grammar words, but no shape or colour
        with pytest.raises(ValueError, match="names no shape or colour.*'a red star'"):
            unclip.text_embeddings(clip, ["a red star", bad])


def test_an_embedding_of_the_wrong_size_is_refused_in_one_line(parts):
    clip, vqgan, _ = parts
    decoder = unclip.LatentDecoder(SMALL_UNET)
    with pytest.raises(ValueError, match=r"embeddings must be \(N, 128\)"):
        unclip.decode(decoder, vqgan, torch.zeros(2, 64), steps=2)
    prior = diffusion.VectorDenoiser(SMALL_PRIOR)
    with pytest.raises(ValueError, match=r"embeddings must be \(N, 128\)"):
        unclip.sample_prior(prior, torch.zeros(2, 512), steps=2)


def test_sampling_refuses_bad_steps_guidance_and_best_of(parts):
    clip, vqgan, _ = parts
    decoder = unclip.LatentDecoder(SMALL_UNET)
    emb = torch.zeros(1, 128)
    with pytest.raises(ValueError, match="steps must be between 1"):
        unclip.decode(decoder, vqgan, emb, steps=0)
    with pytest.raises(ValueError, match="guidance must be a finite number"):
        unclip.decode(decoder, vqgan, emb, steps=2, guidance=-1)
    with pytest.raises(ValueError, match="best_of must be >= 1"):
        unclip.sample_prior(diffusion.VectorDenoiser(SMALL_PRIOR), emb, steps=2, best_of=0)


def test_decoding_gives_pictures_and_the_pictures_of_its_steps(parts):
    clip, vqgan, _ = parts
    decoder = unclip.LatentDecoder(SMALL_UNET).eval()
    pictures, frames = unclip.decode(decoder, vqgan, torch.randn(3, 128), steps=4, every=2)
    assert pictures.shape == (3, 3, 32, 32) and 0 <= pictures.min() and pictures.max() <= 1
    assert len(frames) == 2 and frames[0].shape == pictures.shape
    emb = torch.randn(3, 128)
    one, again, other = (unclip.decode(decoder, vqgan, emb, steps=4, seed=s) for s in (1, 1, 2))
    assert torch.equal(one, again) and not torch.equal(one, other)


def test_the_prior_keeps_the_best_of_its_draws_by_closeness_to_the_text(parts):
    torch.manual_seed(0)
    prior = diffusion.VectorDenoiser(SMALL_PRIOR).eval()
    text = torch.nn.functional.normalize(torch.randn(4, 128), dim=-1)
    one = unclip.sample_prior(prior, text, steps=3, best_of=1, seed=0)
    four = unclip.sample_prior(prior, text, steps=3, best_of=4, seed=0)
    assert torch.allclose(four.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert ((four * text).sum(-1) >= (one * text).sum(-1) - 1e-6).all()


@pytest.mark.parametrize("which", ["prior", "decoder"])
def test_unclip_weights_do_not_depend_on_logging_or_checkpoints(parts, tmp_path, which):
    clip, vqgan, data = parts
    models = []
    for extra, folder in ((QUIET, None), (BUSY, tmp_path)):
        if which == "prior":
            config = unclip_training.PriorTrainConfig(steps=3, batch_size=4, warmup=1, **extra)
            net, _ = unclip_training.train_prior(
                clip, config, SMALL_PRIOR, data, folder, progress=False, device="cpu"
            )
        else:
            config = unclip_training.DecoderTrainConfig(steps=3, batch_size=4, warmup=1, **extra)
            net, _ = unclip_training.train_decoder(
                clip, vqgan, config, SMALL_UNET, data, folder, progress=False, device="cpu"
            )
        models.append(net)
    assert_same_weights(*models)


def test_a_decoder_run_resumes_from_its_checkpoint_to_the_same_weights(parts, tmp_path):
    clip, vqgan, data = parts
    config = unclip_training.DecoderTrainConfig(steps=4, batch_size=4, warmup=1, checkpoint_every=2)
    straight, _ = unclip_training.train_decoder(
        clip, vqgan, config, SMALL_UNET, data, progress=False
    )
    unclip_training.train_decoder(
        clip, vqgan, replace(config, steps=2), SMALL_UNET, data, tmp_path, progress=False
    )
    state = json.loads((tmp_path / "state.json").read_text())
    state["config"]["train"]["steps"] = 4  # as if the 4-step run had stopped after step 2
    (tmp_path / "state.json").write_text(json.dumps(state))
    resumed, history = unclip_training.train_decoder(
        clip, vqgan, config, SMALL_UNET, data, tmp_path, progress=False
    )
    assert history.records[0]["step"] == 0
    assert_same_weights(straight, resumed)
    # trained channels-last (docs/measurements.json), returned as usual: safetensors and the
    # model pack store these weights as they are
    assert all(p.is_contiguous() for p in resumed.state_dict().values())


def test_the_oracle_keeps_the_render_closest_to_its_caption_as_the_prior_keeps_its_draw(parts):
    from mmlib import judge
    from mmlib.clip import encode_images

    clip = parts[0]
    pairs = [("star", "red"), ("circle", "blue")]
    one, _ = unclip.oracle_renders(clip, pairs, 3, seed=4, best_of=1)
    assert torch.equal(one, unclip.pair_renders(pairs, 3, seed=4))  # no choice: the renders
    renders, embeddings = unclip.oracle_renders(clip, pairs, 3, seed=4, best_of=2)
    assert renders.shape == (6, 3, 32, 32) and embeddings.shape == (6, 128)
    drawn = unclip.pair_renders(pairs, 6, seed=4)  # 2 x 3 candidates per pair
    everyone = encode_images(clip[0], None, drawn, progress=False)  # clip: a tuple here
    text = unclip.text_embeddings(clip, [judge.benchmark_prompt(s, c) for s, c in pairs])
    for row in range(6):
        p, k = divmod(row, 3)
        candidates = [p * 6 + k, p * 6 + 3 + k]  # draw 0 and draw 1 of picture k
        scores = everyone[candidates] @ text[p]
        kept = candidates[int(scores.argmax())]
        assert torch.equal(renders[row], drawn[kept])
        assert torch.allclose(embeddings[row], everyone[kept], atol=1e-6)
    assert unclip.PRIOR_SAMPLING["best_of"] == 2  # the default matches the prior's choice
    default, _ = unclip.oracle_renders(clip, pairs, 3, seed=4)
    assert torch.equal(default, renders)
    with pytest.raises(ValueError, match="best_of must be >= 1"):
        unclip.oracle_renders(clip, pairs, 3, best_of=0)


def test_the_zoo_keys_unclip_by_its_recipes_and_inputs(monkeypatch):
    before = zoo.tiny_folders()
    assert set(PREPARE_STEPS["unclip-decoder"]) == {"tiny-clip", "tiny-vqgan"}
    prior_config = unclip_training.PriorTrainConfig
    monkeypatch.setattr(recipes, "PriorTrainConfig", lambda: prior_config(steps=7))
    monkeypatch.setattr(unclip, "DECODER_PREDICTS", "eps")  # decides the decoder's weights
    after = zoo.tiny_folders()
    for name in ("unclip-prior", "unclip-decoder"):
        assert after[name].name.startswith(f"{name}-") and after[name] != before[name]
    assert after["tiny-clip"] == before["tiny-clip"]


def test_evaluation_refuses_unknown_ways_and_no_pictures(parts):
    clip, vqgan, _ = parts
    model = unclip.UnCLIP(
        clip, diffusion.VectorDenoiser(SMALL_PRIOR), unclip.LatentDecoder(SMALL_UNET), vqgan
    )
    with pytest.raises(ValueError, match="unknown ways"):
        unclip.evaluate_unclip(model, None, ways=["oracle", "dream"])
    with pytest.raises(ValueError, match="n must be >= 1"):
        unclip.evaluate_unclip(model, None, n=0)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        unclip.prior_cosines(model, [("star", "red")])


@pytest.mark.slow
def test_the_course_unclip_orders_the_ways_as_the_paper_and_its_oracle_draws_the_pair(prepared):
    # what any unCLIP meeting the goals does (mmlib/data/spread/unclip.json has the spread)
    from mmlib import judge

    model, judges = tiny_generators.get_unclip(device="cpu"), tiny_models.get_judges(device="cpu")
    pairs = judge.benchmark_pairs()[:12]  # the seen pairs of prompt set 0
    ev = unclip.evaluate_unclip(model, judges, pairs=pairs, n=2, seed=0)
    for name in ("judge_clip", "classifier"):
        assert ev["oracle"][name]["seen"] >= 0.7
        assert ev["prior"][name]["seen"] > ev["zero"][name]["seen"]
        assert ev["zero"][name]["seen"] <= 0.25
    cos = unclip.prior_cosines(model, pairs, n=2)
    assert cos["true"] > cos["unrelated"] + 0.2


def test_the_ceiling_is_the_judges_verdict_on_the_vqgans_reconstructions_of_the_oracles_renders(
    prepared,
):
    from mmlib import judge
    from mmlib.vqgan_training import reconstruct

    model, judges = tiny_generators.get_unclip(device="cpu"), tiny_models.get_judges(device="cpu")
    pairs = judge.benchmark_pairs()[:3]
    ev = unclip.evaluate_unclip(model, judges, pairs=pairs, n=2, seed=5, ways=["zero"])
    renders, _ = unclip.oracle_renders(model.clip, pairs, 2, seed=6)  # the oracle's: seed + 1
    expected = reconstruct(model.vqgan, renders)
    assert torch.equal(ev["pictures"]["ceiling"].flatten(0, 1), expected)
    verdicts = judge.judge(expected, [p for p in pairs for _ in range(2)], *judges)
    for name, v in verdicts.items():
        assert ev["ceiling"][name]["seen"] == sum(v["correct"]) / len(v["correct"])
    assert set(ev) >= {"zero", "ceiling"} and "oracle" not in ev
    bound = unclip.binding(model.clip, n=50)  # the course's CLIP sees colours and shapes...
    assert bound["twin_cosine"] > bound["other_cosine"] + 0.3
    assert bound["text_picks_picture"] < 0.9  # ...but barely which colour is whose


def test_the_pipeline_and_variations_give_pictures_per_caption_and_per_picture(parts):
    clip, vqgan, _ = parts
    torch.manual_seed(0)
    model = unclip.UnCLIP(
        clip,
        diffusion.VectorDenoiser(SMALL_PRIOR).eval(),
        unclip.LatentDecoder(SMALL_UNET).eval(),
        vqgan,
    )
    assert unclip.generate(model, ["a red star", "a blue cross"], n=3).shape == (2, 3, 3, 32, 32)
    picture = unclip.render(unclip.world_scenes(1))[0]
    assert unclip.variations(model, picture, n=4).shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="one picture"):
        unclip.variations(model, torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="n must be >= 1"):
        unclip.generate(model, "a red star", n=0)


def test_a_colour_swapped_twin_keeps_shapes_and_places_and_trades_colours():
    from mmlib import toyworld

    scene = next(
        s
        for s in (toyworld.sample_scene(0, i, "heldout", "pair") for i in range(50))
        if s.objects[0].colour != s.objects[1].colour
    )
    twin, caption = unclip.colour_swapped(scene)
    (a, b), (a2, b2) = scene.objects, twin.objects
    assert (a2.shape, a2.x, a2.colour) == (a.shape, a.x, b.colour) and b2.colour == a.colour
    assert caption == twin.caption and caption.split() != scene.caption.split()
    words = [sorted(set(c.split()) - {"a", "an"}) for c in (caption, scene.caption)]
    assert words[0] == words[1]  # the same words ("a"/"an" follow the colour)
    with pytest.raises(ValueError, match="two-object"):
        unclip.colour_swapped(toyworld.sample_scene(0, 0, "heldout", "single"))


def test_binding_reports_cosines_and_fractions_for_any_clip(parts):
    result = unclip.binding(parts[0], n=8)
    assert set(result) == {
        "twin_cosine",
        "other_cosine",
        "text_picks_picture",
        "image_picks_caption",
    }
    for key in ("text_picks_picture", "image_picks_caption"):  # fractions of 8 scenes
        assert result[key] * 8 == round(result[key] * 8)
    with pytest.raises(ValueError, match="n must be >= 2"):
        unclip.binding(parts[0], n=1)
