"""On a CUDA machine: one device per call, models moved to it, nothing left on the CPU by
accident. Skipped without a GPU; scripts/gpu_check.sh runs them on one."""

import pytest
import torch

from mmlib import dalle_training, generate, judge, tiny_models
from mmlib.clip import encode_images, encode_texts
from mmlib.contrastive import ClipTrainConfig, train_clip
from mmlib.vqgan import VQGAN
from mmlib.vqgan_training import TINY_VQGAN, VQGANTrainConfig, train_vqgan

pytestmark = pytest.mark.gpu


def test_generate_moves_cpu_models_to_the_gpu_and_back_gives_pictures():
    torch.manual_seed(0)
    clips = [
        (tiny_models.new_tiny_clip(0).eval(), None, tiny_models.tiny_tokenizer())
    ]  # made on the CPU
    vqgan = VQGAN(**TINY_VQGAN).eval()
    out = generate.generate(
        "a red star", vqgan, clips, generate.GenerateConfig(steps=3, cutn=4), device="cuda"
    )
    assert out.images.device.type == "cpu" and torch.isfinite(out.images).all()
    assert next(clips[0][0].parameters()).device.type == "cuda"


def test_encoding_with_a_device_moves_the_model():
    model = tiny_models.new_tiny_clip(0).eval()
    feats = encode_images(model, None, torch.rand(4, 3, 32, 32), device="cuda", progress=False)
    texts = encode_texts(
        model, tiny_models.tiny_tokenizer(), ["a red star"], device="cuda", progress=False
    )
    assert feats.device.type == texts.device.type == "cpu" and feats.shape == (4, 128)


def test_every_trainer_trains_on_the_gpu():
    model = tiny_models.new_tiny_clip(0)
    config = ClipTrainConfig(steps=3, batch_size=16, eval_every=3, num_workers=0)
    history = train_clip(model, tiny_models.tiny_tokenizer(), config, progress=False, device="cuda")
    assert history.last("zeroshot_seen") is not None
    vq = VQGAN(**TINY_VQGAN)
    cfg = VQGANTrainConfig(steps=4, batch_size=4, disc_start=2, eval_every=4, restart_every=2)
    assert train_vqgan(vq, cfg, progress=False, device="cuda").last("psnr") > 0
    net, hist = judge.train_classifier(
        judge.ClassifierTrainConfig(steps=3, batch_size=8), device="cuda"
    )
    assert hist.last("loss") > 0
    tc = dalle_training.DalleTrainConfig(steps=3, batch_size=4, n_scenes=16)
    model, hist = dalle_training.train_dalle(
        None, tc, vq.eval(), tiny_models.tiny_tokenizer(), progress=False, device="cuda"
    )
    assert hist.last("image_loss") > 0


def test_unclip_trains_and_draws_on_the_gpu():
    from mmlib import diffusion, tiny_models, unclip, unclip_training

    clip = (tiny_models.new_tiny_clip(0).cuda().eval(), None, tiny_models.tiny_tokenizer())
    vqgan = VQGAN(**TINY_VQGAN).cuda().eval()
    data = unclip_training.scene_data(clip, 16, vqgan=vqgan)
    small = diffusion.UNetConfig(width=16, heads=2)
    prior, _ = unclip_training.train_prior(
        clip, unclip_training.PriorTrainConfig(steps=3, batch_size=4), data=data, device="cuda"
    )
    decoder, _ = unclip_training.train_decoder(
        clip,
        vqgan,
        unclip_training.DecoderTrainConfig(steps=3, batch_size=4),
        small,
        data,
        device="cuda",
    )
    assert next(decoder.parameters()).device.type == "cuda"
    model = unclip.UnCLIP(clip, prior, decoder, vqgan)
    pictures = unclip.generate(model, ["a red star", "a blue circle"], n=2)
    assert pictures.shape == (2, 2, 3, 32, 32) and pictures.device.type == "cpu"
