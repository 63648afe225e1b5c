"""The CLIP loss against OpenCLIP's, and the trainer's habits: resume, NaN, config checks, DDP."""

import copy
import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

from mmlib import contrastive, recipes, tiny_models
from mmlib.contrastive import ClipTrainConfig, clip_loss, train_clip
from mmlib.store.checkpoints import load_checkpoint, read_step
from mmlib.training import NonFiniteLossError

SMALL = {
    "steps": 4,
    "batch_size": 8,
    "eval_every": 0,
    "warmup": 2,
    "checkpoint_every": 2,
    "log_every": 1,
    "num_workers": 0,
}


def small_clip(seed=0):
    """A CLIP smaller than the course's, so the tests are quick."""
    cfg = copy.deepcopy(recipes.TINY_CLIP_CONFIG)
    cfg["model_cfg"]["vision_cfg"].update(patch_size=8, width=64, layers=1)
    cfg["model_cfg"]["text_cfg"].update(width=64, layers=1, heads=2)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg["model_cfg"])
    model.visual.preprocess_cfg = cfg["preprocess_cfg"]
    return model, tiny_models.tiny_tokenizer()


@pytest.mark.parametrize("n,d", [(1, 4), (5, 16), (64, 128)])
def test_clip_loss_equals_open_clips_in_value_and_gradients(n, d):
    torch.manual_seed(n)
    img = F.normalize(torch.randn(n, d), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(n, d), dim=-1).requires_grad_()
    scale = torch.tensor(14.3, requires_grad=True)
    ours = clip_loss(img, txt, scale)
    grads = torch.autograd.grad(ours, (img, txt, scale))
    theirs = open_clip.ClipLoss()(img, txt, scale)
    ref = torch.autograd.grad(theirs, (img, txt, scale))
    assert torch.allclose(ours, theirs, atol=1e-6)
    for a, b in zip(grads, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_clip_loss_refuses_mismatched_batches():
    with pytest.raises(ValueError, match="one caption per image"):
        clip_loss(torch.randn(4, 8), torch.randn(3, 8), 10.0)


def test_training_logs_loss_temperature_accuracy_and_clamps_the_scale():
    model, tok = small_clip()
    with torch.no_grad():
        model.logit_scale.fill_(6.0)  # above ln(100)
    history = train_clip(model, tok, ClipTrainConfig(**SMALL), progress=False, device="cpu")
    assert model.logit_scale.item() <= contrastive.MAX_LOGIT_SCALE + 1e-6
    steps, losses = history.series("loss")
    assert steps == [0, 1, 2, 3] and all(v > 0 for v in losses)
    assert history.last("temperature") >= 0.01 - 1e-6 and history.last("batch_accuracy") is not None


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    straight, tok = small_clip()
    train_clip(straight, tok, ClipTrainConfig(**SMALL), progress=False, device="cpu")
    resumed, _ = small_clip()
    cfg = ClipTrainConfig(**SMALL)
    cfg.steps = 2  # a run that stops half way ...
    short = {**SMALL, "steps": 2}
    train_clip(resumed, tok, ClipTrainConfig(**short), folder=tmp_path / "a", progress=False)
    state = json.loads((tmp_path / "a" / "state.json").read_text())
    state["config"]["steps"] = 4  # ... is continued by a run of the full length
    (tmp_path / "a" / "state.json").write_text(json.dumps(state))
    again, _ = small_clip(seed=99)  # other init: everything must come from the checkpoint
    train_clip(again, tok, ClipTrainConfig(**SMALL), folder=tmp_path / "a", progress=False)
    assert read_step(tmp_path / "a") == 4
    for (name, a), b in zip(
        straight.state_dict().items(), again.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    model, tok = small_clip()
    calls = {"n": 0}
    real = contrastive.clip_loss

    def breaks_at_step_3(*args):
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(contrastive, "clip_loss", breaks_at_step_3)
    with pytest.raises(NonFiniteLossError, match="step 3.*step 2"):
        train_clip(model, tok, ClipTrainConfig(**SMALL), folder=tmp_path / "c", progress=False)
    fresh, _ = small_clip(seed=5)
    step, history = load_checkpoint(tmp_path / "c", fresh)
    assert step == 2 and all(torch.isfinite(p).all() for p in fresh.parameters())


def test_a_checkpoint_from_another_config_is_refused(tmp_path):
    model, tok = small_clip()
    train_clip(model, tok, ClipTrainConfig(**SMALL), folder=tmp_path / "d", progress=False)
    with pytest.raises(ValueError, match="another config"):
        train_clip(
            model,
            tok,
            ClipTrainConfig(**{**SMALL, "lr": 1e-4}),
            folder=tmp_path / "d",
            progress=False,
        )


def _ddp_worker(rank, world, port, out):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    model, tok = small_clip()
    train_clip(model, tok, ClipTrainConfig(**{**SMALL, "steps": 3}), progress=False, device="cpu")
    if rank == 0:
        torch.save(model.state_dict(), out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    single, tok = small_clip()
    train_clip(single, tok, ClipTrainConfig(**{**SMALL, "steps": 3}), progress=False, device="cpu")
    ddp = torch.load(out, weights_only=True)
    init, _ = small_clip()
    moved = max((v - init.state_dict()[k]).abs().max().item() for k, v in ddp.items())
    assert moved > 1e-3  # training really changed the weights ...
    lr = ClipTrainConfig().lr
    for name, value in single.state_dict().items():  # ... and both runs changed them alike
        pieces = [(name, value, ddp[name])]
        if name.endswith("attn.in_proj_bias"):
            # The keys' bias has no gradient in exact arithmetic (a softmax ignores a shift of
            # every score of a query), so Adam's steps there, a gradient divided by its own
            # size, are float rounding scaled up to ~lr: the two runs' may differ by as much.
            (q, k, v), (dq, dk, dv) = value.chunk(3), ddp[name].chunk(3)
            assert (k - dk).abs().max() <= 2 * lr * 3, f"{name}, keys"
            pieces = [(f"{name}, queries", q, dq), (f"{name}, values", v, dv)]
        for label, a, b in pieces:
            assert torch.allclose(a, b, atol=1e-4), label
