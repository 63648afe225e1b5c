"""The measurement behind docs/unclip-recipe.md, "Why the oracle and the prior tie".

    MMLIB_NO_TRAINING=1 python scripts/unclip_typicality.py     # after `mmlib zoo prepare`

For the course's prepared unCLIP and the 20 benchmark pairs (prompt set 0), 16 pictures per pair
and sampling seeds 0 and 1, prints how typical each condition is (its mean cosine to the pair's
centre: the normalised mean image embedding of 64 other renders of the pair) and how the two
judges score the decoder fed it on the 12 seen pairs: the oracle from 1 render and from the best
of 2, the prior, and the centre itself. About 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import torch.nn.functional as F

from mmlib import judge, tiny_generators, tiny_models
from mmlib import unclip as u

PICTURES, CENTRE_RENDERS = 16, 64


def main() -> None:
    model = tiny_generators.get_unclip("cpu")
    judges = tiny_models.get_judges("cpu")
    pairs = [tuple(p) for p in judge.benchmark_pairs()]  # seen and held-out, as evaluate_unclip
    targets = [p for p in pairs for _ in range(PICTURES)]
    text = u.text_embeddings(model.clip, [judge.benchmark_prompt(s, c) for s, c in pairs])
    text = text.repeat_interleave(PICTURES, dim=0)
    for seed in (0, 1):
        _, oracle = u.oracle_renders(model.clip, pairs, PICTURES, seed + 1)
        _, one_render = u.oracle_renders(model.clip, pairs, PICTURES, seed + 1, best_of=1)
        prior = u.condition_embeddings(model, pairs, PICTURES, seed, oracle)["prior"]
        _, others = u.oracle_renders(model.clip, pairs, CENTRE_RENDERS, seed + 100, best_of=1)
        centre = F.normalize(others.view(len(pairs), CENTRE_RENDERS, -1).mean(1), dim=-1)
        centre = centre.repeat_interleave(PICTURES, dim=0)
        conditions = {
            "oracle, 1 render": one_render,
            "oracle, best of 2": oracle,
            "prior": prior,
            "the pair's centre": centre,
        }
        typical = (text * centre).sum(-1).mean().item()
        print(f"sampling seed {seed}: seen, judge CLIP / classifier; typicality")
        for name, embedding in conditions.items():
            pictures = u.decode(model.decoder, model.vqgan, embedding, seed=seed)
            verdicts = judge.judge(pictures, targets, *judges)
            scores = [
                judge.fractions_by_split(v["correct"], targets)["seen"] for v in verdicts.values()
            ]
            cosine = (embedding * centre).sum(-1).mean().item()
            print(f"  {name:<20} {scores[0]:6.1%} / {scores[1]:6.1%}   {cosine:.3f}")
        print(f"  {'text embedding':<20} {'':>15}   {typical:.3f}")


if __name__ == "__main__":
    main()
