"""Zero-shot classification: a class is a caption. Templates, classifiers, evaluation."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from importlib import resources

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from mmlib import toyworld, world_data
from mmlib.clip import encode_images, encode_texts
from mmlib.toyworld import article as _article

Template = str | Callable[[str], str]

# Shapes-world templates: classes are "red star"; callables get the article right ("an orange").
SHAPES_TEMPLATES: tuple[Template, ...] = (
    _article,
    lambda c: f"a picture of {_article(c)}",
    lambda c: f"one {c}",
)
TEMPLATES: dict[str, tuple[Template, ...]] = {
    "class name only": ("{}",),
    "a photo of a {}": ("a photo of a {}.",),
    "shapes world (3)": SHAPES_TEMPLATES,
    "OpenCLIP's 7": tuple(SIMPLE_IMAGENET_TEMPLATES),  # open_clip's zero_shot_metadata
    "OpenAI's 80": tuple(OPENAI_IMAGENET_TEMPLATES),  # the CLIP paper's ImageNet ensemble
}


def cifar100_classnames() -> list[str]:
    """Return the 100 CIFAR-100 class names (they ship with mmlib; no data-set download)."""
    text = resources.files("mmlib").joinpath("data/cifar100_classes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_labels(text: str) -> list[str]:
    """Return the labels in a comma-separated string, stripped; refuse empty lists and duplicates."""
    labels = [part.strip() for part in str(text).split(",") if part.strip()]
    if not labels:
        raise ValueError("no labels: type at least one, separated by commas (e.g. 'cat, dog')")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"labels {dupes} appear more than once: name each class once")
    return labels


def _fill(template: Template, classname: str) -> str:
    if callable(template):
        return template(classname)
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(
            f"template {template!r} must hold exactly one '{{}}', where the class name goes"
        )
    try:
        return template.format(classname)
    except (IndexError, KeyError, ValueError) as err:
        raise ValueError(f"template {template!r} cannot be filled in ({err})") from None


def build_classifier(
    model: torch.nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[Template] = SHAPES_TEMPLATES,
    device=None,
) -> torch.Tensor:
    """Return the zero-shot classifier, (embedding dim x classes): per class the renormalised mean
    of its normalised template embeddings (as open_clip's build_zero_shot_classifier)."""
    if isinstance(classnames, str):
        raise ValueError(
            f"classnames must be a list of names, got the string {classnames!r} "
            f"(for 'cat, dog' use parse_labels, or write ['cat', 'dog'])"
        )
    classnames = list(classnames)
    if not classnames:
        raise ValueError("classnames is empty: give at least one class")
    empty = [i for i, c in enumerate(classnames) if not isinstance(c, str) or not c.strip()]
    if empty:
        raise ValueError(f"class name {empty[0]} is {classnames[empty[0]]!r}: give it a name")
    dupes = sorted({n for n in classnames if classnames.count(n) > 1})
    if dupes:
        raise ValueError(f"classnames has duplicates {dupes}: each class must be named once")
    templates = list(templates)
    if not templates:
        raise ValueError("templates is empty: give at least one template such as 'a photo of a {}'")
    texts = [_fill(t, c) for c in classnames for t in templates]
    feats = encode_texts(model, tokenizer, texts, device=device, progress=False)
    return ensemble(feats.view(len(classnames), len(templates), -1))


def ensemble(features: torch.Tensor) -> torch.Tensor:
    """Return the classifier (embedding dim x classes) from text features (classes x templates x
    embedding dim): per class the renormalised mean of its normalised template embeddings. Each
    template counts the same whatever its length; each class's column has length 1, so only
    its direction decides."""
    mean = F.normalize(features, dim=-1).mean(dim=1)
    return F.normalize(mean, dim=-1).T.contiguous()


def evaluate(
    model: torch.nn.Module,
    preprocess,
    classifier: torch.Tensor,
    dataset,
    labels: Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 256,
    device=None,
    progress: bool = False,
) -> dict:
    """Return top-1/top-5 accuracy, per-class accuracy and the confusion matrix on `dataset`.

    `dataset` yields (image, label, ...) items, or give images and `labels` separately.
    """
    if labels is None:
        labels = [dataset[i][1] for i in range(len(dataset))]
    labels = torch.as_tensor(labels, dtype=torch.long)
    feats = encode_images(
        model, preprocess, dataset, batch_size=batch_size, device=device, progress=progress
    )
    if len(feats) != len(labels):
        raise ValueError(f"{len(feats)} images but {len(labels)} labels")
    logits = feats @ classifier
    n_classes = classifier.shape[1]
    top = logits.topk(min(5, n_classes), dim=1).indices
    correct1 = top[:, 0] == labels
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    confusion.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    per_class = confusion.diag().float() / confusion.sum(dim=1).clamp(min=1)
    return {
        "top1": correct1.float().mean().item(),
        "top5": (top == labels[:, None]).any(dim=1).float().mean().item(),
        "per_class": per_class,
        "confusion": confusion,
        "predictions": top[:, 0],
    }


def classify(
    model: torch.nn.Module,
    preprocess,
    images,
    classifier: torch.Tensor,
    classnames: Sequence[str] | None = None,
    top_k: int = 5,
    logit_scale: float | None = None,
    device=None,
) -> dict:
    """Return class probabilities (N, C) and each image's top-k [(class, probability), ...].

    Probabilities are softmax(logit_scale * cosine); `logit_scale` defaults to the model's own
    learned value (100 for CLIP: cosines lie in [-1, 1], too close together for a softmax).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}")
    if classnames is not None and len(classnames) != classifier.shape[1]:
        raise ValueError(
            f"{len(classnames)} classnames for {classifier.shape[1]} classifier columns"
        )
    if logit_scale is None:
        logit_scale = model.logit_scale.exp().item()
    feats = encode_images(model, preprocess, images, device=device, progress=False)
    probs = (logit_scale * feats @ classifier).softmax(dim=-1)
    top = probs.topk(min(top_k, probs.shape[1]), dim=-1)
    names = classnames or [str(k) for k in range(classifier.shape[1])]
    return {
        "probs": probs,
        "top_k": [
            [(names[j], p) for j, p in zip(idx.tolist(), val.tolist(), strict=True)]
            for idx, val in zip(top.indices, top.values, strict=True)
        ],
    }


def a_photo_of(label: str) -> str:
    """Return 'a photo of a cat.' for 'cat' and for 'a cat' alike (no 'a photo of a a cat.')."""
    words = label.split()
    has_article = len(words) > 1 and words[0].lower() in ("a", "an", "the")
    return f"a photo of {label if has_article else _article(label)}."


def classify_labels(
    model,
    preprocess,
    tokenizer,
    image,
    labels: str | Sequence[str],
    templates: Sequence[Template] = (a_photo_of,),
) -> list[tuple[str, float]]:
    """Return [(label, probability)] for one image and labels ("cat, dog" or a list), best first."""
    labels = parse_labels(labels) if isinstance(labels, str) else parse_labels(",".join(labels))
    classifier = build_classifier(model, tokenizer, labels, templates)
    return classify(model, preprocess, [image], classifier, labels, top_k=len(labels))["top_k"][0]


def compare_templates(
    model, preprocess, tokenizer, template_sets: dict | None = None, per_pair: int = 10
) -> dict:
    """Return the shapes-world zero-shot accuracy (seen, held-out) for each set of templates."""
    sets = template_sets or TEMPLATES
    return {
        name: {
            k: v
            for k, v in evaluate_shapes(model, preprocess, tokenizer, per_pair, templates=t).items()
            if k in ("seen", "heldout", "all")
        }
        for name, t in sets.items()
    }


def linear_probe(
    model, preprocess, shots: Sequence[int] = (1, 4, 16), per_pair: int = 10, seed: int = 0
) -> dict[int, float]:
    """Return the accuracy of logistic regression on image embeddings with k examples per class,
    for each k in `shots`, on the same test images as the zero-shot protocol (all 48 classes)."""
    from sklearn.linear_model import LogisticRegression

    if not shots or min(shots) < 1:
        raise ValueError(f"shots must be positive numbers of examples per class, got {shots}")
    pairs = toyworld.all_pairs()
    test = world_data.PairImages(pairs, per_pair=per_pair, seed=1234)
    test_x = encode_images(model, preprocess, test, progress=False).numpy()
    test_y = test.picture_labels()
    train_all = world_data.PairImages(pairs, per_pair=max(shots), seed=777 + seed)
    train_x = encode_images(model, preprocess, train_all, progress=False).numpy()
    train_y = train_all.picture_labels()
    result = {}
    for k in shots:
        rows = [c * max(shots) + j for c in range(len(pairs)) for j in range(k)]
        probe = LogisticRegression(C=10.0, max_iter=2000)
        with warnings.catch_warnings():  # 1 example per class looks like regression to sklearn
            warnings.simplefilter("ignore", UserWarning)
            probe.fit(train_x[rows], [train_y[r] for r in rows])
        result[k] = float((probe.predict(test_x) == test_y).mean())
    return result


def evaluate_shapes(
    model: torch.nn.Module,
    preprocess,
    tokenizer,
    per_pair: int = 10,
    seed: int = 1234,
    templates: Sequence[Template] = SHAPES_TEMPLATES,
    device=None,
    split: str = "heldout",
) -> dict:
    """Return zero-shot top-1 on seen and held-out (shape, colour) pairs: the course's protocol.

    Single-object renders (fresh: `seed` differs from training), all pairs as classes; "heldout"
    is the accuracy on the pairs `split` holds out (for a model trained on "all", on the
    course's HELD_OUT_PAIRS, which that model saw).
    """
    pairs = toyworld.all_pairs()
    classnames = [toyworld.pair_label(s, c) for s, c in pairs]
    classifier = build_classifier(model, tokenizer, classnames, templates, device=device)
    data = world_data.PairImages(pairs, per_pair=per_pair, seed=seed)
    labels = torch.tensor(data.picture_labels())
    result = evaluate(model, preprocess, classifier, data, labels=labels, device=device)
    held = torch.tensor([pairs.index(p) for p in _held_out(split)])
    is_held = torch.isin(labels, held)
    correct = result["predictions"] == labels
    return {
        "seen": correct[~is_held].float().mean().item(),
        "heldout": correct[is_held].float().mean().item(),
        "all": result["top1"],
        "classnames": classnames,
        **{k: result[k] for k in ("per_class", "confusion", "predictions")},
    }


def _held_out(split: str) -> tuple:
    return toyworld.held_out_pairs(split) or toyworld.HELD_OUT_PAIRS


def mistake_kinds(zs: dict, split: str = "heldout") -> dict:
    """Return how the held-out pictures of `evaluate_shapes`'s result `zs` were classified, in
    pictures: "right", "wrong_shape" (the colour right), "wrong_colour" (the shape right) or
    "both" wrong. Which half of a new combination the model misses says where it breaks."""
    pairs = toyworld.all_pairs()
    kinds = dict.fromkeys(("right", "wrong_shape", "wrong_colour", "both"), 0)
    for shape, colour in _held_out(split):
        row = zs["confusion"][pairs.index((shape, colour))].tolist()
        for (s, c), count in zip(pairs, row, strict=True):
            key = ("both", "wrong_colour", "wrong_shape", "right")[2 * (c == colour) + (s == shape)]
            kinds[key] += int(count)
    return kinds


@torch.no_grad()
def shape_probe(
    model: torch.nn.Module,
    preprocess,
    per_pair: int = 20,
    seed: int = 4321,
    split: str = "heldout",
    device=None,
) -> dict:
    """Return how well the image encoder alone tells the six shapes apart, with no text at all,
    on pictures of seen and of held-out (shape, colour) pairs.

    Each picture gets the shape whose mean image vector is nearest, the means taken over other
    pictures (seed + 1) of the seen pairs only. A drop from "seen" to "heldout" means the
    encoder's shape features do not carry over to a colour the shape was never seen in.
    """
    pairs = toyworld.all_pairs()
    shape_index = torch.tensor([toyworld.SHAPES.index(s) for s, _ in pairs])
    held = torch.tensor([pairs.index(p) for p in _held_out(split)])

    def encode(render_seed):
        data = world_data.PairImages(pairs, per_pair=per_pair, seed=render_seed)
        labels = torch.tensor(data.picture_labels())
        feats = encode_images(model, preprocess, data, device=device, progress=False)
        return feats, shape_index[labels], torch.isin(labels, held)

    ref, ref_shape, ref_held = encode(seed + 1)
    means = torch.stack(
        [ref[(ref_shape == k) & ~ref_held].mean(dim=0) for k in range(len(toyworld.SHAPES))]
    )
    feats, shape, is_held = encode(seed)
    right = (feats @ F.normalize(means, dim=-1).T).argmax(dim=1) == shape
    return {
        "seen": right[~is_held].float().mean().item(),
        "heldout": right[is_held].float().mean().item(),
    }


def evaluate_binding(
    model: torch.nn.Module, tokenizer, n: int = 200, seed: int = 99, device=None
) -> dict:
    """Return how often CLIP prefers the true caption of a two-object scene over a caption with the
    same words in another order: the objects swapped ("a blue square left of a red circle" for
    "a red circle left of a blue square") or the relation flipped ("... right of ...").

    A bag-of-words model scores 0.5 on the swap: both captions hold exactly the same words.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    scenes = [toyworld.sample_scene(seed, i, "all", "pair") for i in range(n)]
    images = torch.stack([toyworld.to_tensor(toyworld.render(s)) for s in scenes])
    image_features = encode_images(model, None, images, device=device, progress=False)

    true = [s.caption for s in scenes]
    swapped = [toyworld.swapped_caption(s) for s in scenes]
    flipped = [s.caption.replace(s.relation, opposite[s.relation]) for s in scenes]
    feats = {
        k: encode_texts(model, tokenizer, v, device=device, progress=False)
        for k, v in (("true", true), ("swapped", swapped), ("flipped", flipped))
    }
    score = {k: (image_features * f).sum(dim=1) for k, f in feats.items()}
    return {
        "swap_objects": (score["true"] > score["swapped"]).float().mean().item(),
        "flip_relation": (score["true"] > score["flipped"]).float().mean().item(),
        "examples": list(zip(true[:4], swapped[:4], flipped[:4], strict=True)),
        "images": images[:4],
    }
