"""VQGAN+CLIP: prompt syntax, batched cutouts, the losses, determinism, NaN handling, outputs."""

import json
import math

import pytest
import torch
from PIL import Image

from mmlib import generate as g
from mmlib import recipes
from mmlib.clip import clip_scores
from mmlib.images import save_video
from mmlib.prompts import Prompt, image_prompt, parse_prompt
from mmlib.vqgan import VQGAN, Pixels
from mmlib.vqgan_training import TINY_VQGAN


@pytest.mark.parametrize(
    "spec,text,weight,stop",
    [
        ("a red star", "a red star", 1.0, -math.inf),
        ("a red star:2", "a red star", 2.0, -math.inf),
        ("a red star:-1.5:0.3", "a red star", -1.5, 0.3),
        ("a poster: a red star", "a poster: a red star", 1.0, -math.inf),
        ("time 10:30 am:0.5", "time 10:30 am", 0.5, -math.inf),
        ("a star:1e-1:-inf", "a star", 0.1, -math.inf),
    ],
)
def test_prompts_parse_weight_and_stop_but_keep_colons_in_the_text(spec, text, weight, stop):
    p = parse_prompt(spec)
    assert (p.text, p.weight, p.stop) == (text, weight, stop)


@pytest.mark.parametrize(
    "spec,match",
    [("", "non-empty"), ("   ", "non-empty"), ("a star:1.2.3", "not a number"), (":2", "no text")],
)
def test_bad_prompts_are_refused_clearly(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_prompt(spec)


def test_cutouts_are_batched_seeded_and_differentiable():
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    cut = g.Cutouts(cut_size=24, cutn=5)
    a = cut(images, torch.Generator().manual_seed(1))
    b = cut(images, torch.Generator().manual_seed(1))
    assert a.shape == (15, 3, 24, 24) and torch.equal(a, b)
    a.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    plain = g.Cutouts(cut_size=32, cutn=1, min_frac=1.0, flip=False, affine=0.0, noise=0.0)
    assert torch.allclose(plain(images.detach(), torch.Generator()), images.detach(), atol=1e-5)


def test_clamp_with_grad_lets_clamped_values_move_back_in():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = g.clamp_with_grad(x, 0, 1)
    assert torch.equal(y, torch.tensor([0.0, 0.5, 1.0]))
    y.sum().backward()
    # gradient descent subtracts the gradient: at -0.5 that pushes further out (blocked),
    # at 1.5 it pulls back into range (kept)
    assert x.grad.tolist() == [0.0, 1.0, 1.0]


def test_spherical_distance_and_the_stop_of_a_prompt():
    a = torch.tensor([[1.0, 0.0]])
    assert g.spherical_distance(a, a).item() == pytest.approx(0.0, abs=1e-6)
    opposite = g.spherical_distance(a, -a).item()
    assert opposite == pytest.approx(2 * (math.pi / 2) ** 2, rel=1e-5)
    e = torch.tensor([[0.6, 0.8]], requires_grad=True)
    g.prompt_loss(e, torch.tensor([1.0, 0.0]), weight=1.0, stop=10.0).backward()
    assert e.grad.abs().sum() == 0  # closer than `stop`: no more pull
    e.grad = None
    g.prompt_loss(e, torch.tensor([1.0, 0.0]), weight=-1.0, stop=-math.inf).backward()
    assert e.grad[0, 0] > 0  # negative weight: descent moves away from the target


@pytest.fixture(scope="module")
def small_models():
    from mmlib import tiny_models

    torch.manual_seed(0)
    clip = tiny_models.new_tiny_clip(0).eval(), None, tiny_models.tiny_tokenizer()
    return VQGAN(**TINY_VQGAN).eval(), clip


def test_same_seed_gives_the_bit_identical_picture(small_models):
    vqgan, clip = small_models
    cfg = g.GenerateConfig(steps=3, cutn=4, seed=5)
    a = g.generate(["a red star", "a blue circle"], vqgan, [clip], cfg, progress=False)
    b = g.generate(["a red star", "a blue circle"], vqgan, [clip], cfg, progress=False)
    assert a.images.shape == (2, 3, 32, 32) and torch.equal(a.images, b.images)
    c = g.generate(
        ["a red star", "a blue circle"],
        vqgan,
        [clip],
        g.GenerateConfig(steps=3, cutn=4, seed=6),
        progress=False,
    )
    assert not torch.equal(a.images, c.images)
    assert len(a.losses) == 3 and all(math.isfinite(x) for x in a.losses)


def test_two_clips_image_prompts_init_image_and_odd_sizes(small_models, caplog):
    vqgan, clip = small_models
    init = torch.rand(3, 40, 40)
    out = g.generate(
        [["a red star:1", Prompt(image=Image.new("RGB", (32, 32), "red"))]],
        vqgan,
        [clip, clip],
        g.GenerateConfig(steps=2, cutn=2, size=30, init="image", init_weight=0.5),
        init_image=init,
        progress=False,
    )
    assert out.images.shape == (1, 3, 32, 32) and "multiple of the VQGAN's factor 4" in caplog.text
    with pytest.raises(ValueError, match="prompts is empty"):
        g.generate([], vqgan, [clip])
    with pytest.raises(ValueError, match="init="):
        g.generate("a star", vqgan, [clip], g.GenerateConfig(init="paint"))


def test_nan_stops_with_a_message_and_keeps_the_last_good_picture(small_models, monkeypatch):
    vqgan, clip = small_models
    calls = {"n": 0}
    real = g.prompt_loss

    def breaks(*args):
        calls["n"] += 1
        return real(*args) * (float("nan") if calls["n"] > 2 else 1.0)

    monkeypatch.setattr(g, "prompt_loss", breaks)
    out = g.generate("a red star", vqgan, [clip], g.GenerateConfig(steps=5, cutn=2), progress=False)
    assert "step 2" in out.stopped and torch.isfinite(out.images).all() and len(out.losses) == 2


def test_callback_can_stop_and_frames_png_and_gif_are_written(small_models, tmp_path):
    vqgan, clip = small_models
    cfg = g.GenerateConfig(steps=6, cutn=2, frames_every=2, seed=3)
    out = g.generate(
        "a red star",
        vqgan,
        [clip],
        cfg,
        progress=False,
        callback=lambda step, images, loss: step >= 4,
    )
    assert "step 4" in out.stopped and len(out.frames) == 3
    png = g.save_png(out.images[0], tmp_path / "x.png", out.prompts[0], cfg)
    meta = Image.open(png).text
    assert meta["prompt"] == "a red star:1" and meta["seed"] == "3"
    assert json.loads(meta["mmlib_settings"])["cutn"] == 2
    gif = save_video([f[0] for f in out.frames], tmp_path / "x.gif")
    assert Image.open(gif).n_frames == 3


def test_generate_command_takes_the_profiles_steps_unless_told(monkeypatch, tmp_path):
    from mmlib.tools import commands
    from mmlib.tools.cli import main

    seen = []

    def fake_generate(prompts, vqgan, clips, config, **kw):
        seen.append(config)
        raise SystemExit(0)  # stop before a picture is written

    monkeypatch.delenv("MMLIB_PROFILE", raising=False)  # the tiny profile
    monkeypatch.setattr(commands, "generate", fake_generate)
    monkeypatch.setattr(commands.zoo, "get_vqgan", lambda profile: None)
    monkeypatch.setattr(commands.zoo, "get_generation_clips", lambda profile: [])
    out, video = str(tmp_path / "x.png"), str(tmp_path / "x.gif")
    for k, (extra, steps) in enumerate((([], 150), (["--steps", "20"], 20))):
        with pytest.raises(SystemExit):
            main(["generate", "a red star", "--out", out, *extra])
        assert len(seen) == k + 1 and seen[-1].steps == steps
    with pytest.raises(SystemExit):
        main(["generate", "a red star", "--out", out, "--video", video])
    assert len(seen) == 3 and seen[-1].steps == 150 and seen[-1].frames_every == 3  # ~50 frames


def test_generate_command_writes_png_and_video(prepared, tmp_path, capsys):
    from mmlib.tools.cli import main

    out, video = tmp_path / "x.png", tmp_path / "x.gif"
    picture = tmp_path / "red.png"
    Image.new("RGB", (32, 32), "red").save(picture)
    code = main(
        [
            "generate",
            "a red star",
            "a blue background:0.5",
            "--steps",
            "4",
            "--out",
            str(out),
            "--video",
            str(video),
            "--image-prompt",
            f"{picture}:0.3",
        ]
    )
    assert code == 0
    meta = Image.open(out).text  # every prompt, with its weight, the image prompt by its path
    assert meta["prompt"] == f"a red star:1 | a blue background:0.5 | [image {picture}]:0.3"
    assert json.loads(meta["mmlib_prompts"])[2] == {
        "text": None,
        "image": str(picture),
        "weight": 0.3,
        "stop": float("-inf"),
    }
    assert Image.open(video).n_frames >= 2
    capsys.readouterr()
    assert main(["generate", "a red star:1.5.5", "--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a number" in err and "Traceback" not in err


def test_total_variation_is_zero_on_flat_pictures_and_pulls_towards_them():
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert g.total_variation(flat).item() == 0.0
    noisy = (flat + 0.1 * torch.randn(flat.shape)).requires_grad_(True)
    tv = g.total_variation(noisy)
    tv.backward()
    stepped = noisy.detach() - 0.01 * noisy.grad
    assert tv.item() > 0 and g.total_variation(stepped) < tv


def test_run_benchmark_generates_and_judges_every_pair(small_models):
    from mmlib.judge import ShapeColourNet

    vqgan, clip = small_models
    pairs = [("star", "red"), ("circle", "blue")]
    out = g.run_benchmark(
        vqgan,
        [clip],
        (clip, ShapeColourNet().eval()),
        pairs,
        g.GenerateConfig(steps=2, cutn=2),
        progress=False,
    )
    assert out["prompts"] == ["a red star", "a blue circle"] and out["images"].shape[0] == 2
    for name in ("judge_clip", "classifier"):
        verdict = out[name]
        assert len(verdict["predictions"]) == 2
        assert verdict["fraction"] == sum(verdict["correct"]) / 2
    assert out["samples_per_s"] > 0 and out["config"]["steps"] == 2
    with pytest.raises(ValueError, match="empty"):
        g.run_benchmark(vqgan, [clip], (clip, ShapeColourNet()), [], progress=False)


@pytest.mark.slow
def test_full_profile_configuration_runs_one_step_with_fixture_weights(tmp_home):
    """ViT-B-32 + the official f16_16384 VQGAN config at 256 px, cutn 32: random weights in the
    files' real formats, placed where `mmlib zoo download full` puts them."""
    import json

    import open_clip
    import yaml
    from safetensors.torch import save_file

    from mmlib import vqgan as vq
    from mmlib import zoo
    from mmlib.store.downloads import FULL_FILES

    clip_item, ckpt_item, config_item = FULL_FILES[:3]
    for item in (clip_item, ckpt_item):
        item.local_path().parent.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file(
        {k: v.half().contiguous() for k, v in model.state_dict().items()},
        str(clip_item.local_path()),
    )
    config_item.local_path().write_text(yaml.safe_dump(vq.F16_16384_CONFIG))
    torch.save(
        {"state_dict": vq.vqgan_from_config(vq.F16_16384_CONFIG).state_dict()},
        ckpt_item.local_path(),
    )

    settings = recipes.generation_settings("full")
    assert settings["size"] == 256 and settings["cutn"] == 32 and settings["steps"] == 300
    clips, vqgan = zoo.get_generation_clips("full", device="cpu"), zoo.get_vqgan("full", "cpu")
    assert len(clips) == 1 and vqgan.n_embed == 16384 and vqgan.factor == 16
    out = g.generate(
        "a red star", vqgan, clips, g.GenerateConfig(**{**settings, "steps": 1}), progress=False
    )
    assert out.images.shape == (1, 3, 256, 256) and len(out.losses) == 1
    assert torch.isfinite(out.images).all()
    json.dumps(g.asdict(out.config))  # the settings a PNG carries stay serialisable


def test_best_of_keeps_the_start_the_generator_clips_score_highest(small_models, monkeypatch):
    from mmlib.judge import ShapeColourNet

    vqgan, clip = small_models
    pairs = [("star", "red"), ("circle", "blue")]
    seen = {}

    def scores(images, prompts, clips):
        seen["n"] = len(images)
        return torch.tensor([0.1, 0.9, 0.8, 0.2])  # start 1 wins for prompt 0, start 0 for 1

    monkeypatch.setattr(g, "clip_scores", scores)
    cfg = g.GenerateConfig(steps=1, cutn=2)
    both = g.generate(["a red star", "a blue circle"] * 2, vqgan, [clip], cfg, progress=False)
    out = g.run_benchmark(
        vqgan, [clip], (clip, ShapeColourNet().eval()), pairs, cfg, best_of=2, progress=False
    )
    assert seen["n"] == 4 and out["best_of"] == 2
    assert torch.equal(out["images"][0], both.images[2])
    assert torch.equal(out["images"][1], both.images[1])
    with pytest.raises(ValueError, match="best_of"):
        g.run_benchmark(vqgan, [clip], (clip, ShapeColourNet()), pairs, cfg, best_of=0)


def test_clip_scores_rank_the_matching_prompt_higher(tiny_clip):
    from mmlib import toyworld

    pictures = torch.stack(
        [
            toyworld.to_tensor(
                toyworld.render(toyworld.sample_scene(9, i, "all", "single", pair=pair))
            )
            for i, pair in enumerate([("star", "red"), ("circle", "blue")])
        ]
    )
    right = clip_scores(pictures, ["a red star", "a blue circle"], [tiny_clip])
    wrong = clip_scores(pictures, ["a blue circle", "a red star"], [tiny_clip])
    assert (right > wrong).all()
    with pytest.raises(ValueError, match="prompts"):
        clip_scores(pictures, ["a red star"], [tiny_clip])


def test_image_prompts_load_now_and_refuse_files_that_are_not_pictures(tmp_path):
    good = tmp_path / "red.png"
    Image.new("RGB", (32, 32), "red").save(good)
    p = image_prompt(f"{good}:0.5")
    assert p.text is None and p.weight == 0.5 and p.image.size == (32, 32)
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(ValueError, match="notes.png"):
        image_prompt(str(bad))
    with pytest.raises(FileNotFoundError):
        image_prompt(str(tmp_path / "missing.png"))


def test_one_s_own_cutouts_can_replace_the_config_s_and_a_wrong_count_is_refused(small_models):
    vqgan, clip = small_models
    calls = []

    def corners(images, generator):  # four fixed corners, each resized to the CLIP's size
        calls.append(images.shape)
        h = images.shape[-1] // 2
        parts = [images[..., :h, :h], images[..., :h, h:], images[..., h:, :h], images[..., h:, h:]]
        crops = torch.stack([torch.nn.functional.interpolate(p, size=32) for p in parts], dim=1)
        return crops.flatten(0, 1)

    cfg = g.GenerateConfig(steps=2, cutn=4)
    out = g.generate("a red star", vqgan, [clip], cfg, progress=False, cutouts=corners)
    assert len(calls) == 2 and len(out.losses) == 2
    with pytest.raises(ValueError, match="cutn = 3"):
        g.generate(
            "a red star",
            vqgan,
            [clip],
            g.GenerateConfig(steps=1, cutn=3),
            progress=False,
            cutouts=corners,
        )


def test_default_cutouts_are_the_ones_generate_makes(small_models):
    vqgan, clip = small_models
    for cfg in (
        g.GenerateConfig(steps=2, cutn=3, seed=4),
        g.GenerateConfig(steps=2, cutn=2, cut_min=0.7, augment=False, seed=4),
    ):
        cut = g.default_cutouts(cfg, clip[0])
        assert (cut.cut_size, cut.cutn, cut.min_frac) == (32, cfg.cutn, cfg.cut_min)
        assert (cut.flip, cut.affine > 0, cut.noise > 0) == (cfg.augment,) * 3
        plain = g.generate("a red star", vqgan, [clip], cfg, progress=False)
        mine = g.generate("a red star", vqgan, [clip], cfg, progress=False, cutouts=cut)
        assert torch.equal(plain.images, mine.images) and plain.losses == mine.losses


def test_pixels_stand_in_for_the_vqgan_so_the_same_loop_optimises_raw_pixels(small_models):
    _, clip = small_models
    cfg = g.GenerateConfig(steps=3, cutn=2, init="noise", seed=4)
    out = g.generate("a red star", Pixels(), [clip], cfg, progress=False)
    start = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert out.images.shape == (1, 3, 32, 32) and len(out.losses) == 3
    assert 0 <= out.images.min() and out.images.max() <= 1
    assert not torch.allclose(out.images, start)  # the pixels moved ...
    assert (out.images - start).abs().max() <= 3 * cfg.lr + 1e-5  # ... by Adam's steps at most
    again = g.generate("a red star", Pixels(), [clip], cfg, progress=False)
    assert torch.equal(out.images, again.images)
    picture = torch.rand(3, 32, 32)
    same = g.generate(
        "a red star",
        Pixels(),
        [clip],
        g.GenerateConfig(steps=1, cutn=2, init="image", lr=1e-6),
        init_image=picture,
        progress=False,
    )
    assert torch.allclose(same.images[0], picture, atol=1e-4)
    with pytest.raises(ValueError, match="no codebook"):
        g.generate("a red star", Pixels(), [clip], g.GenerateConfig(steps=1, cutn=2))


def test_generation_freezes_the_models_only_while_it_runs():
    from mmlib.training import frozen

    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    b.bias.requires_grad_(False)
    with frozen(a, b):
        assert not any(p.requires_grad for m in (a, b) for p in m.parameters())
        z = torch.ones(1, 2, requires_grad=True)
        b(a(z)).sum().backward()
        assert z.grad is not None and a.weight.grad is None  # the input learns, weights do not
    assert a.weight.requires_grad and a.bias.requires_grad and b.weight.requires_grad
    assert not b.bias.requires_grad  # as it was before
    with pytest.raises(RuntimeError), frozen(a):
        raise RuntimeError("a crash inside")
    assert a.weight.requires_grad
