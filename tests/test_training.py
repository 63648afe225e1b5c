"""The rule the model caches rest on: a trainer's BOOKKEEPING fields (when it logs, evaluates,
checkpoints; how many processes render its batches) never change the weights it makes, so
`training.recipe` leaves them out and the zoo's keys do not depend on them."""

import json
from dataclasses import fields, replace

import torch

from mmlib import (
    dalle,
    dalle_training,
    judge,
    recipes,
    tiny_generators,
    tiny_models,
    unclip_training,
)
from mmlib.contrastive import ClipTrainConfig, train_clip
from mmlib.training import BOOKKEEPING
from mmlib.transformer import TransformerConfig
from mmlib.vqgan import VQGAN
from mmlib.vqgan_training import TINY_VQGAN_DDCONFIG, VQGANTrainConfig, train_vqgan

QUIET = {"log_every": 1000, "checkpoint_every": 1000}
BUSY = {"log_every": 1, "checkpoint_every": 1}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_every_bookkeeping_field_belongs_to_a_trainer():
    configs = [ClipTrainConfig(), VQGANTrainConfig(), dalle_training.DalleTrainConfig()]
    configs.append(judge.ClassifierTrainConfig())
    assert BOOKKEEPING <= {f.name for c in configs for f in fields(c)}  # no misspelt name


def test_clip_weights_do_not_depend_on_logging_evaluation_or_checkpoints(tmp_path):
    base = ClipTrainConfig(steps=3, batch_size=8, warmup=1, eval_every=0, **QUIET)
    busy = replace(base, eval_every=1, eval_per_pair=1, **BUSY)
    models = []
    for config, folder in ((base, None), (busy, tmp_path)):
        models.append(tiny_models.new_tiny_clip(0))  # seeds torch's global RNG too
        history = train_clip(
            models[-1],
            tiny_models.tiny_tokenizer(),
            config,
            folder=folder,
            progress=False,
            device="cpu",
        )
    assert history.last("zeroshot_seen") is not None  # the busy run did evaluate between steps
    assert_same_weights(*models)


def test_a_clip_run_resumes_with_other_bookkeeping_to_the_same_weights(tmp_path):
    config = ClipTrainConfig(steps=4, batch_size=8, warmup=1, eval_every=0, checkpoint_every=2)
    straight = tiny_models.new_tiny_clip(0)
    train_clip(straight, tiny_models.tiny_tokenizer(), config, progress=False, device="cpu")
    half = tiny_models.new_tiny_clip(0)
    train_clip(
        half,
        tiny_models.tiny_tokenizer(),
        replace(config, steps=2),
        folder=tmp_path,
        progress=False,
        device="cpu",
    )
    state = json.loads((tmp_path / "state.json").read_text())
    state["config"]["steps"] = 4  # as if the 4-step run had stopped after step 2
    (tmp_path / "state.json").write_text(json.dumps(state))
    resumed = tiny_models.new_tiny_clip(5)  # other weights: the checkpoint must replace them
    other = replace(config, eval_every=1, eval_per_pair=1, log_every=3, checkpoint_every=1)
    history = train_clip(
        resumed, tiny_models.tiny_tokenizer(), other, folder=tmp_path, progress=False, device="cpu"
    )
    assert history.records[0]["step"] == 0 and history.last("zeroshot_seen") is not None
    assert_same_weights(straight, resumed)


def test_vqgan_weights_do_not_depend_on_logging_evaluation_or_checkpoints(tmp_path):
    base = VQGANTrainConfig(steps=4, batch_size=2, disc_start=2, restart_every=2, eval_every=0)
    runs = []
    for config, folder in (
        (replace(base, **QUIET), None),
        (replace(base, eval_every=1, **BUSY), tmp_path),
    ):
        torch.manual_seed(0)
        runs.append(VQGAN(TINY_VQGAN_DDCONFIG, 64, 32))
        train_vqgan(runs[-1], config, folder=folder, progress=False, device="cpu")
    assert_same_weights(*runs)


def test_token_model_weights_do_not_depend_on_logging_or_checkpoints(tmp_path):
    small = TransformerConfig(n_layer=1, n_head=2, n_embd=32, dropout=0.1)  # dropout draws
    tokenizer = tiny_models.tiny_tokenizer()
    captions = dalle.new_model(tokenizer, small).encode_captions(["a red star"] * 8)
    data = (captions, torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(1)))
    base = dalle_training.DalleTrainConfig(steps=4, batch_size=4, warmup=1)
    models = []
    for config, folder in ((replace(base, **QUIET), None), (replace(base, **BUSY), tmp_path)):
        model, _ = dalle_training.train_dalle(
            small, config, None, tokenizer, progress=False, data=data, folder=folder, device="cpu"
        )
        models.append(model)
    assert_same_weights(*models)


def test_the_zoo_keys_ignore_bookkeeping(monkeypatch):
    def keys():
        return [
            tiny_models.clip_folder("tiny-clip").name,
            tiny_models.vqgan_folder().name,
            tiny_generators.dalle_folder().name,
            tiny_generators.unclip_folder("unclip-prior").name,
            tiny_generators.unclip_folder("unclip-decoder").name,
        ]

    before = keys()
    vqgan_config, dalle_config = VQGANTrainConfig, dalle_training.DalleTrainConfig
    monkeypatch.setitem(recipes.TINY_CLIP_TRAINING, "eval_every", 7)
    monkeypatch.setattr(recipes, "vqgan_training", lambda: vqgan_config(eval_every=3, **BUSY))
    monkeypatch.setattr(dalle_training, "DalleTrainConfig", lambda: dalle_config(**BUSY))
    prior_config, decoder_config = (
        unclip_training.PriorTrainConfig,
        unclip_training.DecoderTrainConfig,
    )
    monkeypatch.setattr(recipes, "PriorTrainConfig", lambda: prior_config(**BUSY))
    monkeypatch.setattr(recipes, "DecoderTrainConfig", lambda: decoder_config(**BUSY))
    assert keys() == before
    monkeypatch.setitem(
        recipes.TINY_CLIP_TRAINING, "steps", 601
    )  # a field that does change weights
    assert keys()[0] != before[0]
