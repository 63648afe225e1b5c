"""Training the tiny VQGAN: the metrics, the discriminator, exact resume, the prepared model,
`mmlib train vqgan`."""

import json

import pytest
import torch

from mmlib import vqgan_training as vt
from mmlib.vqgan import VQGAN


def test_psnr_and_codebook_usage_are_computed_right():
    a = torch.zeros(1, 3, 4, 4)
    assert vt.psnr(a + 0.1, a) == pytest.approx(20.0)
    usage = vt.codebook_usage(torch.tensor([0, 0, 1, 1]), 4)
    assert usage["perplexity"] == pytest.approx(2.0) and usage["used"] == 0.5


def test_random_crops_are_pieces_of_the_pictures_drawn_from_seed_and_step():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    crops = vt.random_crops(images, 24, seed=0, step=5)
    assert crops.shape == (2, 3, 24, 24)
    for image, crop in zip(images, crops, strict=True):  # a window of its own picture
        y, x = divmod(int(crop[0, 0, 0] - image[0, 0, 0]), 32)
        assert torch.equal(crop, image[:, y : y + 24, x : x + 24])
    assert torch.equal(crops, vt.random_crops(images, 24, seed=0, step=5))  # resume: same crops
    others = [vt.random_crops(images, 24, seed=0, step=k) for k in range(6, 12)]
    assert any(not torch.equal(crops, o) for o in others)
    assert vt.random_crops(images, 0, seed=0, step=5) is images  # 0: whole pictures
    assert vt.random_crops(images, 32, seed=0, step=5) is images
    with pytest.raises(ValueError, match="multiple of the VQGAN's factor 4"):
        vt.train_vqgan(VQGAN(vt.TINY_VQGAN_DDCONFIG, 64, 32), vt.VQGANTrainConfig(crop=26))


def test_vqgan_training_runs_with_the_discriminator_and_resumes_exactly(tmp_path):
    cfg = dict(
        steps=4,
        batch_size=4,
        disc_start=3,  # the resumed run's first step still trains on crops
        eval_every=4,
        checkpoint_every=2,
        restart_every=3,  # the codes used before the checkpoint count in the restart after it
        log_every=1,
    )

    def fresh():
        torch.manual_seed(0)
        return VQGAN(vt.TINY_VQGAN_DDCONFIG, 64, 32)

    straight = fresh()
    history = vt.train_vqgan(straight, vt.VQGANTrainConfig(**cfg), progress=False)
    assert history.last("disc_loss") > 0 and history.last("psnr") > 0
    half = fresh()
    vt.train_vqgan(
        half, vt.VQGANTrainConfig(**{**cfg, "steps": 2}), folder=tmp_path / "r", progress=False
    )
    state = json.loads((tmp_path / "r" / "state.json").read_text())
    state["config"]["steps"] = 4
    (tmp_path / "r" / "state.json").write_text(json.dumps(state))
    resumed = fresh()
    vt.train_vqgan(resumed, vt.VQGANTrainConfig(**cfg), folder=tmp_path / "r", progress=False)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5), name


def test_the_prepared_tiny_vqgan_reconstructs_held_out_images(prepared):
    from mmlib import tiny_models, zoo

    info = tiny_models.tiny_vqgan_info()
    assert info["psnr"] >= 24 and info["codebook_used"] >= 0.5
    model = zoo.get_vqgan("tiny")
    ev = vt.evaluate_vqgan(model, n=64, seed=99)
    assert ev["psnr"] >= 23
    with pytest.raises(FileNotFoundError, match="nope.safetensors' is missing"):
        zoo.get_vqgan("tiny", weights="nope.safetensors")


def test_train_vqgan_command_writes_a_model(tmp_path, capsys):
    from mmlib.tools.cli import main

    assert main(["train", "vqgan", "--out", str(tmp_path / "v"), "--steps", "4"]) == 0
    assert "PSNR" in capsys.readouterr().out
    assert (tmp_path / "v" / "model" / "model.safetensors").is_file()


def test_a_callback_watches_the_training_at_every_evaluation():
    seen = []
    torch.manual_seed(0)
    model = VQGAN(vt.TINY_VQGAN_DDCONFIG, 64, 32)
    cfg = vt.VQGANTrainConfig(steps=4, batch_size=2, disc_start=3, eval_every=2)
    vt.train_vqgan(
        model, cfg, progress=False, callback=lambda step, m: seen.append((step, m.training))
    )
    assert seen == [(2, False), (4, False)] and not model.training


def test_edge_contrast_is_one_for_the_reference_and_lower_for_a_blurred_copy():
    sharp = torch.zeros(2, 3, 16, 16)
    sharp[:, :, 4:12, 4:12] = 1.0  # a white square on black: edges along its border
    blurred = torch.nn.functional.avg_pool2d(sharp, 3, stride=1, padding=1)
    assert vt.edge_contrast(sharp, sharp) == pytest.approx(1.0)
    assert 0.2 < vt.edge_contrast(blurred, sharp) < 0.8
    noisy_flat = sharp + 0.05 * torch.randn_like(sharp) * (sharp == 0)
    assert vt.edge_contrast(noisy_flat, sharp) == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="no edges"):
        vt.edge_contrast(sharp, torch.zeros_like(sharp))
    with pytest.raises(ValueError, match=r"\(2, 3, 16, 16\)"):
        vt.edge_contrast(sharp[:1], sharp)


def test_reconstruct_gives_the_models_pictures_in_0_1_in_eval_mode():
    torch.manual_seed(0)
    model = VQGAN(vt.TINY_VQGAN_DDCONFIG, 64, 32).train()
    images = torch.rand(5, 3, 32, 32)
    out = vt.reconstruct(model, images, batch_size=2)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not model.training
    with torch.no_grad():
        expected = (model(images * 2 - 1)[0].add(1) / 2).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-5)  # batches of 2 vs 5: float noise only


def test_new_tiny_vqgan_draws_the_same_weights_for_a_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = vt.new_tiny_vqgan(0), vt.new_tiny_vqgan(0), vt.new_tiny_vqgan(1)
    assert torch.equal(torch.rand(3), expected_next)
    torch.manual_seed(0)
    by_hand = VQGAN(**vt.TINY_VQGAN)  # how the course's model starts (zoo: seed, then build)
    for (name, x), y, z in zip(
        a.state_dict().items(), b.state_dict().values(), by_hand.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y) and torch.equal(x, z), name
    assert not torch.equal(a.decoder.conv_out.weight, c.decoder.conv_out.weight)
