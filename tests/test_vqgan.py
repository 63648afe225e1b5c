"""VQGAN: the official checkpoints load through mmlib's quantizers; bad files give clear errors."""

import pytest
import torch
import yaml

from mmlib import vqgan as vq
from mmlib.vqgan_training import TINY_VQGAN_DDCONFIG

F16_CONFIG = """
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 256
    n_embed: 16384
    monitor: val/rec_loss
    ddconfig:
      double_z: false
      z_channels: 256
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: 128
      ch_mult: [1, 1, 2, 2, 4]
      num_res_blocks: 2
      attn_resolutions: [16]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params: {disc_conditional: false, disc_in_channels: 3, disc_start: 0, disc_weight: 0.75,
               disc_num_layers: 2, codebook_weight: 1.0}
"""

GUMBEL_F8_CONFIG = """
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.GumbelVQ
  params:
    kl_weight: 1.0e-08
    embed_dim: 256
    n_embed: 8192
    monitor: val/rec_loss
    temperature_scheduler_config:
      target: taming.lr_scheduler.LambdaWarmUpCosineScheduler
      params: {warm_up_steps: 0, max_decay_steps: 1000001, lr_start: 0.9, lr_max: 0.9, lr_min: 1.0e-06}
    ddconfig:
      double_z: false
      z_channels: 256
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: 128
      ch_mult: [1, 1, 2, 4]
      num_res_blocks: 2
      attn_resolutions: [32]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
"""


def lightning_checkpoint(tmp_path, config_text, name="last.ckpt", extra_keys=True):
    """Write config + a Lightning-style checkpoint of random weights, with `loss.*` keys."""
    config = tmp_path / "model.yaml"
    config.write_text(config_text)
    model = vq.vqgan_from_config(config)
    state = dict(model.state_dict())
    if extra_keys:
        state["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
        state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3)
    path = tmp_path / name
    torch.save(
        {
            "epoch": 3,
            "global_step": 1234,
            "pytorch-lightning_version": "1.0.8",
            "state_dict": state,
        },
        path,
    )
    return config, path, model


@pytest.mark.slow
def test_official_f16_16384_format_loads_and_round_trips_256_to_16x16_tokens(tmp_path):
    config, ckpt, original = lightning_checkpoint(tmp_path, F16_CONFIG)
    model = vq.load_vqgan(config, ckpt, device="cpu")
    key = "quantize.embedding.weight"
    assert torch.equal(model.state_dict()[key], original.state_dict()[key])
    assert model.state_dict()[key].shape == (16384, 256) and model.factor == 16
    with torch.no_grad():
        z_q, indices = model.encode(torch.rand(1, 3, 256, 256) * 2 - 1)
        out = model.decode_indices(indices)
    assert z_q.shape == (1, 256, 16, 16) and indices.shape == (1, 16, 16)
    assert out.shape == (1, 3, 256, 256)


@pytest.mark.slow
def test_official_gumbel_f8_format_loads(tmp_path):
    config, ckpt, original = lightning_checkpoint(tmp_path, GUMBEL_F8_CONFIG)
    model = vq.load_vqgan(config, ckpt)
    assert set(k for k in model.state_dict() if k.startswith("quantize.")) == {
        "quantize.proj.weight",
        "quantize.proj.bias",
        "quantize.embed.weight",
    }
    assert model.factor == 8
    with torch.no_grad():
        _, indices = model.encode(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert indices.shape == (1, 8, 8) and int(indices.max()) < 8192


def small_config(**over):
    dd = {**TINY_VQGAN_DDCONFIG, **over}
    return {
        "model": {
            "target": "taming.models.vqgan.VQModel",
            "params": {"embed_dim": 32, "n_embed": 64, "ddconfig": dd},
        }
    }


def test_unknown_target_mismatch_and_html_page_give_clear_errors(tmp_path):
    bad = small_config()
    bad["model"]["target"] = "taming.models.cond_transformer.Net2NetTransformer"
    with pytest.raises(ValueError, match="Net2NetTransformer"):
        vq.vqgan_from_config(bad)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_config()))
    other = vq.vqgan_from_config(small_config(z_channels=64))
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.ckpt")
    with pytest.raises(
        ValueError,
        match=r"encoder.conv_out.weight: checkpoint \(64, 64, 3, 3\) vs model \(32, 64, 3, 3\)",
    ):
        vq.load_vqgan(config, tmp_path / "other.ckpt")
    partial = dict(vq.vqgan_from_config(config).state_dict())
    partial.pop("decoder.conv_out.bias")
    torch.save({"state_dict": partial}, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match="1 missing keys, first \\['decoder.conv_out.bias'\\]"):
        vq.load_vqgan(config, tmp_path / "partial.ckpt")
    html = tmp_path / "last.ckpt"
    html.write_text("<!DOCTYPE html><html><head><title>Seafile</title></head></html>")
    with pytest.raises(ValueError, match="HTML page.*error page"):
        vq.load_vqgan(config, html)


class Pickled:  # not a tensor: a safe load must refuse it
    pass


def test_unsafe_checkpoints_need_an_explicit_opt_in(tmp_path):
    config = small_config()
    model = vq.vqgan_from_config(config)
    torch.save({"state_dict": model.state_dict(), "callback": Pickled()}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="trusted=True"):
        vq.load_vqgan(config, tmp_path / "x.ckpt")
    assert vq.load_vqgan(config, tmp_path / "x.ckpt", trusted=True) is not None


def test_straight_through_quantisation_and_the_codebook_box():
    model = vq.vqgan_from_config(small_config())
    z = torch.randn(2, 32, 8, 8, requires_grad=True)
    z_q = model.vector_quantize(z)
    codes = model.quantize.embedding.weight
    flat = z_q.detach().permute(0, 2, 3, 1).reshape(-1, 32)
    assert torch.cdist(flat, codes).min(dim=1).values.max() < 1e-4  # every vector is a code
    (z_q * 3).sum().backward()
    assert torch.allclose(z.grad, torch.full_like(z, 3.0))  # gradient passes straight through
    lo, hi = model.codebook_box()
    assert lo.shape == hi.shape == (1, 32, 1, 1) and (lo <= hi).all()
    _, idx = model.encode(torch.rand(1, 3, 32, 32))
    assert torch.allclose(model.decode_indices(idx), model.decode(model.quantize.lookup(idx)))


def test_full_profile_vqgan_offline_says_what_to_download(tmp_home):
    from mmlib import zoo
    from mmlib.store.weights import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="last.ckpt"):
        zoo.get_vqgan("full")


def test_full_profile_vqgan_loads_from_files_placed_in_mmlib_home(tmp_home):
    from mmlib import zoo
    from mmlib.store.downloads import FULL_FILES

    ckpt_item, config_item = FULL_FILES[1], FULL_FILES[2]
    ckpt_item.local_path().parent.mkdir(parents=True)
    config_item.local_path().write_text(yaml.safe_dump(small_config()))
    torch.save(
        {"state_dict": vq.vqgan_from_config(small_config()).state_dict()}, ckpt_item.local_path()
    )
    model = zoo.get_vqgan("full", device="cpu")
    assert model.n_embed == 64 and not model.training
