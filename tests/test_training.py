"""The rule the model caches rest on: a trainer's BOOKKEEPING fields (when it logs, evaluates,
checkpoints; how many processes render its batches) never change the weights it makes, so
`training.recipe` leaves them out and the zoo's keys do not depend on them."""

from dataclasses import fields, replace

import torch

from mmlib import dalle, judge, zoo
from mmlib.contrastive import ClipTrainConfig, train_clip
from mmlib.training import BOOKKEEPING, recipe
from mmlib.transformer import TransformerConfig
from mmlib.vqgan import VQGAN
from mmlib.vqgan_training import TINY_VQGAN_DDCONFIG, VQGANTrainConfig, train_vqgan

QUIET = {"log_every": 1000, "checkpoint_every": 1000}
BUSY = {"log_every": 1, "checkpoint_every": 1}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_every_bookkeeping_field_belongs_to_a_trainer_and_recipe_leaves_only_it_out():
    configs = [ClipTrainConfig(), VQGANTrainConfig(), dalle.DalleTrainConfig()]
    configs.append(judge.ClassifierTrainConfig())
    names = {f.name for c in configs for f in fields(c)}
    assert BOOKKEEPING <= names  # a misspelt name would leave its field in the keys
    for c in configs:
        assert set(recipe(c)) == {f.name for f in fields(c)} - BOOKKEEPING


def test_clip_weights_do_not_depend_on_logging_evaluation_or_checkpoints(tmp_path):
    base = ClipTrainConfig(steps=3, batch_size=8, warmup=1, eval_every=0, **QUIET)
    busy = replace(base, eval_every=1, eval_per_pair=1, **BUSY)
    quiet_model, busy_model = zoo.new_tiny_clip(0), zoo.new_tiny_clip(0)
    train_clip(quiet_model, zoo.tiny_tokenizer(), base, progress=False, device="cpu")
    history = train_clip(
        busy_model, zoo.tiny_tokenizer(), busy, folder=tmp_path, progress=False, device="cpu"
    )
    assert history.last("zeroshot_seen") is not None  # it did evaluate between the steps
    assert_same_weights(quiet_model, busy_model)


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
    small = TransformerConfig(n_layer=1, n_head=2, n_embd=32)
    tokenizer = zoo.tiny_tokenizer()
    captions = dalle.new_model(tokenizer, small).encode_captions(["a red star"] * 8)
    data = (captions, torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(1)))
    base = dalle.DalleTrainConfig(steps=4, batch_size=4, warmup=1)
    models = []
    for config, folder in ((replace(base, **QUIET), None), (replace(base, **BUSY), tmp_path)):
        model, _ = dalle.train_dalle(
            small, config, None, tokenizer, progress=False, data=data, folder=folder
        )
        models.append(model)
    assert_same_weights(*models)


def test_the_zoo_keys_ignore_bookkeeping(monkeypatch):
    def keys():
        return [
            zoo._clip_folder("tiny-clip").name,
            zoo._vqgan_folder().name,
            zoo._dalle_folder().name,
        ]

    before = keys()
    vqgan_config, dalle_config = VQGANTrainConfig, dalle.DalleTrainConfig
    monkeypatch.setitem(zoo.TINY_CLIP_TRAINING, "eval_every", 7)
    monkeypatch.setattr(zoo, "VQGANTrainConfig", lambda: vqgan_config(eval_every=3, **BUSY))
    monkeypatch.setattr(dalle, "DalleTrainConfig", lambda: dalle_config(**BUSY))
    assert keys() == before
    monkeypatch.setitem(zoo.TINY_CLIP_TRAINING, "steps", 601)  # a field that does change weights
    assert keys()[0] != before[0]
