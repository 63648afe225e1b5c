import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmlib import toyworld as tw
from mmlib import world_data


def test_a_sample_is_a_pure_function_of_seed_and_index():
    a, b = world_data.ShapesWorld(50, seed=4), world_data.ShapesWorld(50, seed=4)
    for i in (0, 7, 49):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    assert world_data.ShapesWorld(50, seed=5)[7][1] != a[7][1] or not torch.equal(
        world_data.ShapesWorld(50, seed=5)[7][0], a[7][0]
    )


def test_held_out_pairs_cover_every_shape_and_colour():
    shapes = {s for s, _ in tw.HELD_OUT_PAIRS}
    colours = {c for _, c in tw.HELD_OUT_PAIRS}
    assert shapes == set(tw.SHAPES) and colours == set(tw.COLOUR_NAMES)
    assert len(tw.SHAPES) >= 6 and len(tw.COLOUR_NAMES) >= 8


def test_held_out_pairs_never_appear_in_the_training_split():
    held = set(tw.HELD_OUT_PAIRS)
    kinds = set()
    for i in range(3000):
        scene = tw.sample_scene(0, i, "heldout")
        kinds.add(scene.kind)
        for o in scene.objects:
            assert (o.shape, o.colour) not in held, scene.caption
            assert o.colour in scene.caption and o.shape in scene.caption
    assert kinds == {"single", "pair", "count"}


def test_relations_and_counts_in_captions_match_the_picture():
    for i in range(400):
        scene = tw.sample_scene(1, i, "all")
        if scene.kind == "pair":
            a, b = scene.objects
            expected = {
                "left of": a.x < b.x,
                "right of": a.x > b.x,
                "above": a.y < b.y,
                "below": a.y > b.y,
            }[scene.relation]
            assert expected, scene.caption
        if scene.kind == "count":
            word = scene.caption.split()[0]
            assert tw.COUNT_WORDS[len(scene.objects)] == word


def test_captions_are_english():
    captions = {tw.sample_scene(2, i).caption for i in range(500)}
    assert not any(" a orange" in c or c.startswith("a orange") for c in captions)
    assert len(captions) > 100  # several phrasings, many scenes


def test_dataset_items_and_collate():
    world = world_data.ShapesWorld(8, seed=0)
    images, captions, attrs = next(
        iter(DataLoader(world, batch_size=4, collate_fn=world_data.collate))
    )
    assert images.shape == (4, 3, tw.IMAGE_SIZE, tw.IMAGE_SIZE)
    assert 0 <= images.min() and images.max() <= 1
    assert len(captions) == 4 and isinstance(captions[0], str) and "shape" in attrs[0]
    pairs = world_data.PairImages(per_pair=2)
    image, label, attr = pairs[5]
    assert tw.all_pairs()[label] == (attr["shape"], attr["colour"])


def test_the_object_is_drawn_in_its_colour():
    scene = tw.sample_scene(0, 0, "all", "single", pair=("square", "blue"))
    image = tw.render(scene).astype(float)
    o = scene.objects[0]
    centre = image[int(o.y), int(o.x)]
    assert torch.allclose(
        torch.tensor(centre), torch.tensor(tw.COLOURS["blue"], dtype=float), atol=2
    )


def test_the_simpler_world_keeps_everything_but_size_and_background():
    for i in range(40):
        plain = tw.sample_scene(3, i, "heldout", "single", object_size="large", background="plain")
        usual = tw.sample_scene(3, i, "heldout", "single")
        a, b = plain.objects[0], usual.objects[0]
        assert (a.shape, a.colour, a.size) == (b.shape, b.colour, "large")
        assert a.r == tw.SIZES["large"] * tw.IMAGE_SIZE and a.r <= a.x <= tw.IMAGE_SIZE - a.r
        assert "small" not in plain.caption and a.colour in plain.caption
        corner = tw.render(plain)[0, 0]
        assert tuple(int(v) for v in corner) == tw.PLAIN_BACKGROUND
    # the defaults draw exactly the scene they always drew
    assert tw.sample_scene(3, 5, background="gradient") == tw.sample_scene(3, 5)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="n must be"):
        world_data.ShapesWorld(0)
    with pytest.raises(ValueError, match="split"):
        world_data.ShapesWorld(3, split="test")
    with pytest.raises(ValueError, match="kind"):
        tw.sample_scene(0, 0, kind="triple")
    with pytest.raises(IndexError):
        world_data.ShapesWorld(3).scene(3)
    with pytest.raises(ValueError, match="object_size"):
        tw.sample_scene(0, 0, object_size="huge")
    with pytest.raises(ValueError, match="background"):
        tw.sample_scene(0, 0, background="stripes")


def _render_in_colour_at_4x(scene, size=tw.IMAGE_SIZE):
    """The straightforward way (draw every object in colour at 4x, average down): the reference
    the faster mask-based renderer must match."""
    from PIL import Image, ImageDraw

    big, s = size * tw.SUPERSAMPLE, tw.SUPERSAMPLE
    (a, b) = scene.background
    ramp = np.linspace(0.0, 1.0, big, dtype=np.float32)[:, None, None]
    bg = np.array(a, np.float32) * (1 - ramp) + np.array(b, np.float32) * ramp
    canvas = Image.fromarray(np.broadcast_to(bg, (big, big, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for o in scene.objects:
        fill = tw.COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse(
                [(o.x - o.r) * s, (o.y - o.r) * s, (o.x + o.r) * s, (o.y + o.r) * s], fill=fill
            )
        else:
            draw.polygon(
                [(x * s, y * s) for x, y in tw._polygon(o.shape, o.x, o.y, o.r)], fill=fill
            )
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX))


def test_the_renderer_draws_what_drawing_in_colour_at_4x_draws():
    for i in range(150):
        scene = tw.sample_scene(11, i, "all")
        diff = np.abs(tw.render(scene).astype(int) - _render_in_colour_at_4x(scene).astype(int))
        assert diff.max() <= 1, (i, scene.caption)


def test_other_splits_hold_out_other_pairs_that_cover_every_shape_and_colour():
    seen = set()
    for split in ("heldout", "heldout-1", "heldout-2", "heldout-3"):
        held = tw.held_out_pairs(split)
        assert len(held) == 8 and held == tw.held_out_pairs(split)  # seeded: the same every time
        assert {s for s, _ in held} == set(tw.SHAPES) and {c for _, c in held} == set(
            tw.COLOUR_NAMES
        )
        assert not set(held) & set(tw.allowed_pairs(split)) and len(tw.allowed_pairs(split)) == 40
        seen.add(held)
    assert len(seen) == 4 and tw.held_out_pairs("heldout") == tw.HELD_OUT_PAIRS
    assert tw.held_out_pairs("all") == () and len(tw.allowed_pairs("all")) == 48
    for bad in ("heldout-0", "heldout-x", "other"):
        with pytest.raises(ValueError, match="split"):
            tw.allowed_pairs(bad)
    for i in range(300):  # a split never shows its held-out pairs
        scene = tw.sample_scene(5, i, "heldout-2")
        assert not {(o.shape, o.colour) for o in scene.objects} & set(
            tw.held_out_pairs("heldout-2")
        )


def test_swapped_caption_has_the_same_words_in_another_order_and_only_for_pairs():
    scene = tw.sample_scene(3, 0, kind="pair")
    swapped = tw.swapped_caption(scene)
    assert sorted(swapped.split()) == sorted(scene.caption.split()) and swapped != scene.caption
    a, b = scene.objects
    assert swapped.startswith(tw.article(b.colour)) and swapped.endswith(a.shape)
    with pytest.raises(ValueError, match="two-object"):
        tw.swapped_caption(tw.sample_scene(3, 0, kind="single"))
