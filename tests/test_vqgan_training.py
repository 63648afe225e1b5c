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


def test_vqgan_training_runs_with_the_discriminator_and_resumes_exactly(tmp_path):
    cfg = dict(
        steps=4,
        batch_size=4,
        disc_start=2,
        eval_every=4,
        checkpoint_every=2,
        restart_every=2,
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
    from mmlib import zoo

    info = zoo.tiny_vqgan_info()
    assert info["psnr"] >= 24 and info["codebook_used"] >= 0.5
    model = zoo.get_vqgan("tiny")
    before = zoo.get_vqgan("tiny", weights="before_gan.safetensors")
    assert not torch.equal(model.decoder.conv_out.weight, before.decoder.conv_out.weight)
    ev = vt.evaluate_vqgan(model, n=64, seed=99)
    assert ev["psnr"] >= 23
    with pytest.raises(FileNotFoundError, match="nope.safetensors' is missing"):
        zoo.get_vqgan("tiny", weights="nope.safetensors")


def test_train_vqgan_command_writes_a_model(tmp_path, capsys):
    from mmlib.cli import main

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
