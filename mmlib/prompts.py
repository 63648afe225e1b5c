"""Prompts for VQGAN+CLIP (notebook 05): a text or a picture that CLIP embeds, with a weight
(negative steers away) and a stop distance below which it no longer pulls, written as
"text:weight:stop" (pixray's form)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from mmlib.clip import encode_images, encode_texts
from mmlib.images import load_image

_NUMBERISH = re.compile(r"\s*([-+]?(inf|infinity|nan)|[-+0-9.eE]*[0-9][-+0-9.eE]*)\s*", re.I)


@dataclass
class Prompt:
    """One prompt: a text or an image, with a weight (negative steers away) and a stop distance
    below which it stops pulling."""

    text: str | None = None
    image: object = None
    weight: float = 1.0
    stop: float = float("-inf")
    source: str | None = None  # where an image prompt came from (a path), for the PNG metadata

    def spec(self) -> str:
        """Return the prompt as `text:weight:stop` (an image as `[image path]:weight:stop`)."""
        what = self.text if self.text is not None else f"[image {self.source or '(in memory)'}]"
        stop = "" if self.stop == float("-inf") else f":{self.stop:g}"
        return f"{what}:{self.weight:g}{stop}"


def parse_prompt(spec: str | Prompt) -> Prompt:
    """Return the Prompt of "text:weight:stop" (weight and stop optional).

    Only trailing parts that look like numbers are read as weight and stop, so colons inside
    the text ("a poster: a red star") are kept; a trailing part like "1.2.3" is an error.
    """
    if isinstance(spec, Prompt):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a prompt must be a non-empty string, got {spec!r}")
    pieces, numbers = spec.split(":"), []
    while len(pieces) > 1 and len(numbers) < 2 and _NUMBERISH.fullmatch(pieces[-1]):
        raw = pieces.pop()
        try:
            numbers.insert(0, float(raw))
        except ValueError:
            raise ValueError(
                f"{raw.strip()!r} in prompt {spec!r} is not a number "
                f"(the form is 'text:weight:stop')"
            ) from None
    if len(pieces) > 1 and _NUMBERISH.fullmatch(pieces[-1]):
        raise ValueError(
            f"prompt {spec!r} ends in more than two numbers; the form is 'text:weight:stop'"
        )
    text = ":".join(pieces).strip()
    if not text:
        raise ValueError(f"prompt {spec!r} has a weight but no text")
    weight = numbers[0] if numbers else 1.0
    stop = numbers[1] if len(numbers) > 1 else float("-inf")
    if not math.isfinite(weight) or weight == 0:
        raise ValueError(
            f"the weight in prompt {spec!r} is {weight}; give a finite number other than 0 "
            f"(negative steers away)"
        )
    if math.isnan(stop) or stop == float("inf"):
        raise ValueError(f"the stop in prompt {spec!r} is {stop}; give a finite number")
    return Prompt(text=text, weight=weight, stop=stop)


def prompt_sets(prompts) -> list[list[Prompt]]:
    """Return one list of Prompts per picture from what `generate` accepts: a prompt, a list of
    prompts (one per picture), or a list of lists (several prompts per picture)."""
    if isinstance(prompts, (str, Prompt)):
        prompts = [prompts]
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    sets = [
        [parse_prompt(p)] if isinstance(p, (str, Prompt)) else [parse_prompt(q) for q in p]
        for p in prompts
    ]
    if any(not s for s in sets):
        raise ValueError("every picture needs at least one prompt")
    return sets


def image_prompt(spec: str) -> Prompt:
    """Return the image Prompt of "path" or "path:weight:stop", the picture loaded and checked
    now (a missing file or one that is not an image fails here, before any model work)."""
    parsed = parse_prompt(spec)
    image = load_image(parsed.text)
    return Prompt(image=image, weight=parsed.weight, stop=parsed.stop, source=parsed.text)


def embed_prompts(sets, clips, device) -> list[list[list[torch.Tensor]]]:
    """Return the target embedding of every prompt of every picture by every CLIP:
    [picture][prompt][clip] -> (D,) on `device`."""
    out = []
    for prompts in sets:
        per_prompt = []
        for p in prompts:
            per_model = []
            for model, preprocess, tokenizer in clips:
                if p.text is not None:
                    per_model.append(
                        encode_texts(model, tokenizer, [p.text], device=device, progress=False)[
                            0
                        ].to(device)
                    )
                elif p.image is not None:
                    per_model.append(
                        encode_images(model, preprocess, [p.image], device=device, progress=False)[
                            0
                        ].to(device)
                    )
                else:
                    raise ValueError("a Prompt needs a text or an image")
            per_prompt.append(per_model)
        out.append(per_prompt)
    return out
