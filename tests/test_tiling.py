"""Tiled encoding: the tile plan, the receptive radius, and tiled == untiled (exactly, away from the margin)."""

import re

import numpy as np
import pytest
import torch

from sr_model.inference.encode import (
    EncodeMemoryError,
    encode,
    estimate_encode_bytes,
    field_bytes,
    plan_encode,
    work_bytes,
)
from sr_model.inference.tiling import default_context, has_global_context, plan_tiles, receptive_radius, tile_alignment
from sr_model.networks.model import build_model
from sr_model.networks.presets import preset

TINY_LITE = dict(lite_channels=8, lite_blocks=1, cov_dim=16, cov_hidden=(16,), color_hidden=(16,), offset_hidden=(16,))
TINY_SWINIR = dict(
    embed_dim=12,
    depths=(2,),
    num_heads=(2,),
    window_size=4,
    img_size=16,
    cov_dim=16,
    cov_hidden=(16,),
    color_hidden=(16,),
    offset_hidden=(16,),
)


def tiny_model(encoder: str = "lite", dtype=torch.float32, seed: int = 0, **overrides):
    """A small random-weight model (no training needed for plumbing and tiling)."""
    torch.manual_seed(seed)
    config = preset(encoder, **{**(TINY_LITE if encoder == "lite" else TINY_SWINIR), **overrides})
    return build_model(config, "official").to(dtype).eval()


def photo_batch(photo, dtype, size=(32, 44), name="astronaut", top=100, left=180):
    crop = photo(name, top=top, left=left, size=max(size))[: size[0], : size[1]]
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].to(dtype)


def lattice_view(field, name):
    t = getattr(field, name) if name != "offset" else field.offsets()
    return t.view(2 * field.h, 2 * field.w, -1)


def max_change_by_distance(model, image, row, col):
    """Largest change of any Gaussian parameter at each Chebyshev distance from a changed input pixel."""
    with torch.no_grad():
        before = model.encode(image)
        bumped = image.clone()
        bumped[..., row, col] += 0.5
        after = model.encode(bumped)
    change = sum((lattice_view(after, n) - lattice_view(before, n)).abs().amax(-1) for n in ("means", "chol", "colors"))
    lr_rows = torch.arange(2 * image.shape[-2]) // 2
    lr_cols = torch.arange(2 * image.shape[-1]) // 2
    dist = torch.maximum((lr_rows - row).abs()[:, None], (lr_cols - col).abs()[None, :])
    return {int(d): float(change[dist == d].max()) for d in dist.unique()}


# ---------------------------------------------------------------------------------------------- the plan
def test_cores_partition_the_image_and_outer_boxes_add_the_clipped_context():
    tiles = plan_tiles(23, 30, tile=8, context=3)
    cover = np.zeros((23, 30), int)
    for t in tiles:
        top, left, bottom, right = t.core
        cover[top:bottom, left:right] += 1
        assert t.outer == (max(0, top - 3), max(0, left - 3), min(23, bottom + 3), min(30, right + 3))
    assert (cover == 1).all()
    assert len(tiles) == 3 * 4
    assert plan_tiles(23, 30, tile=64, context=5) == [plan_tiles(23, 30, 64, 5)[0]]
    assert plan_tiles(23, 30, tile=64, context=5)[0].outer == (0, 0, 23, 30)


def test_window_encoders_cut_on_the_window_grid():
    tiles = plan_tiles(50, 37, tile=6, context=5, align=4)  # rounded up to 8 and 8
    for t in tiles:
        assert all(v % 4 == 0 or v in (50, 37) for v in t.core + t.outer)
        assert t.core[2] - t.core[0] in (8, 50 % 8)
    assert tile_alignment(preset("swinir")) == 8 and tile_alignment(preset("hat")) == 16
    assert tile_alignment(preset("lite")) == 1


@pytest.mark.parametrize("args", [(0, 5, 4, 1), (5, 5, 0, 1), (5, 5, 4, -1), (5, 5, 2.5, 1)])
def test_bad_tile_plans_are_refused(args):
    with pytest.raises(ValueError):
        plan_tiles(*args)


# ------------------------------------------------------------------------------- the receptive radius
def test_documented_radii_of_the_presets():
    assert receptive_radius(preset("lite")) == 12  # 2 * 4 blocks + 3 LR convs + 1 px from the two 2x convs
    assert receptive_radius(preset("swinir")) == 153
    assert receptive_radius(preset("hat")) == 389
    assert default_context(preset("swinir")) == 160 and default_context(preset("hat")) == 400
    assert has_global_context(preset("hat")) and not has_global_context(preset("swinir"))


def test_lite_radius_is_exact_and_tight(photo):
    """A one-pixel change reaches Gaussians exactly `receptive_radius` pixels away, never further."""
    model = tiny_model("lite", torch.float64)
    radius = receptive_radius(model.config)
    assert radius == 2 * 1 + 4
    image = photo_batch(photo, torch.float64, size=(20, 20))
    change = max_change_by_distance(model, image, 10, 9)
    assert change[radius] > 1e-6
    assert all(v == 0.0 for d, v in change.items() if d > radius)


def test_swinir_radius_bounds_the_measured_reach(photo):
    model = tiny_model("swinir", torch.float64)
    radius = receptive_radius(model.config)
    image = photo_batch(photo, torch.float64, size=(24, 24))
    change = max_change_by_distance(model, image, 13, 10)
    reached = max(d for d, v in change.items() if v > 0)
    assert reached <= radius
    assert reached >= radius - tile_alignment(model.config)  # the bound is nearly tight


# ------------------------------------------------------------------------------- tiled == untiled
def _compare(tiled, full):
    return {
        n: float((lattice_view(tiled, n) - lattice_view(full, n)).abs().max())
        for n in ("means", "offset", "chol", "colors")
    }


def test_tiled_equals_untiled_with_the_default_context(photo):
    model = tiny_model("lite", torch.float64)
    image = photo_batch(photo, torch.float64)
    with torch.no_grad():
        full = model.encode(image)
    plan = plan_encode(model, 32, 44, tile=16, budget=2**40)
    assert len(plan.tiles) == 6 and any(t.outer[1] > 0 and t.outer[3] < 44 for t in plan.tiles)
    tiled = encode(model, image, tile=16, budget=2**40)
    assert (tiled.h, tiled.w, tiled.k) == (full.h, full.w, full.k)
    diffs = _compare(tiled, full)
    assert max(diffs.values()) < 1e-12, diffs
    tiled32 = encode(model.float(), image.float(), tile=16, budget=2**40)
    with torch.no_grad():
        full32 = model.encode(image.float())
    assert max(_compare(tiled32, full32).values()) < 1e-5


def test_window_attention_tiles_equal_untiled_and_need_their_context(photo):
    model = tiny_model("swinir", torch.float64)
    image = photo_batch(photo, torch.float64, size=(56, 20))
    plan = plan_encode(model, 56, 20, tile=10, budget=2**40)  # tile 12, context 11 -> 12: the 4 px window grid
    assert (
        receptive_radius(model.config) == 11
        and plan.context == 12
        and any(t.outer[0] > 0 and t.outer[2] < 56 for t in plan.tiles)
    )
    with torch.no_grad():
        full = model.encode(image)
    diffs = _compare(encode(model, image, tile=10, budget=2**40), full)
    assert max(diffs.values()) < 1e-12, diffs
    short = _compare(encode(model, image, tile=10, context=4, budget=2**40), full)
    assert max(short.values()) > 1e-6


def test_with_a_short_context_only_the_margin_near_internal_cuts_differs(photo):
    """Context c < R: Gaussians at least R - c pixels inside a core's internal edge are still exact."""
    model = tiny_model("lite", torch.float64)
    radius, context, tile = receptive_radius(model.config), 2, 16
    image = photo_batch(photo, torch.float64)
    with torch.no_grad():
        full = model.encode(image)
    tiled = encode(model, image, tile=tile, context=context, budget=2**40)
    height, width = image.shape[-2:]

    # LR distance of each pixel to the nearest cut between cores (internal edges only)
    def to_cut(n, length):
        cuts = np.arange(tile, length, tile)
        return np.abs(np.arange(n)[:, None] + 0.5 - cuts[None, :]).min(1) - 0.5

    dist = np.minimum(to_cut(height, height)[:, None], to_cut(width, width)[None, :])
    margin = radius - context
    change = sum((lattice_view(tiled, n) - lattice_view(full, n)).abs().amax(-1) for n in ("means", "chol", "colors"))
    per_pixel = change.view(height, 2, width, 2).amax((1, 3)).numpy()
    assert per_pixel[dist >= margin].max() < 1e-12
    assert per_pixel[dist < margin].max() > 1e-4  # the margin is real


# ------------------------------------------------------------------------------------------ memory
def test_memory_estimate_refuses_with_a_tile_that_fits():
    model = tiny_model("lite")
    whole = estimate_encode_bytes(model, 300, 400)
    budget = estimate_encode_bytes(model, 300, 400, (120, 120))  # the stitched field and a ~96 px tile's work
    assert whole > budget
    with pytest.raises(EncodeMemoryError, match=r"rerun with --tile (\d+)") as err:
        plan_encode(model, 300, 400, tile=0, budget=budget)
    assert len(str(err.value).splitlines()) == 1 and "at once" in str(err.value)
    tile = int(re.search(r"rerun with --tile (\d+)", str(err.value)).group(1))
    plan = plan_encode(model, 300, 400, tile=tile, budget=budget)
    assert plan.tiled and plan.estimate_bytes <= budget and plan.note is None
    with pytest.raises(EncodeMemoryError, match="with --tile 256"):
        plan_encode(model, 300, 400, tile=256, budget=budget)
    with pytest.raises(EncodeMemoryError, match="field alone"):
        plan_encode(model, 300, 400, tile=16, budget=1000)


def test_without_a_tile_the_largest_that_fits_is_picked_and_said_in_one_line():
    model = tiny_model("lite")
    budget = estimate_encode_bytes(model, 300, 400, (120, 120))
    plan = plan_encode(model, 300, 400, budget=budget)
    tile = int(re.search(r"rerun with --tile (\d+)", _refusal(model, budget)).group(1))
    assert plan.tiled and plan.tiles[0].core == (0, 0, tile, tile) and plan.estimate_bytes <= budget
    assert re.fullmatch(
        rf"encoding 400x300 px in {len(plan.tiles)} tiles of {tile} px \(exact with 6 px of context\): at once it "
        r"needs about [0-9.]+ MiB, over the memory budget of [0-9.]+ MiB \(set \$P2G_MEMORY_BUDGET to change it\)",
        plan.note,
    )
    assert plan_encode(model, 300, 400, budget=2**40).note is None  # it fits: one piece, nothing said


def test_hat_tiled_by_itself_says_it_is_not_exact():
    hat = tiny_model("hat", squeeze_factor=6)
    budget = estimate_encode_bytes(hat, 96, 96, (48, 48))
    plan = plan_encode(hat, 96, 96, budget=budget, context=16)
    assert plan.tiled and "not exact: HAT's channel attention sees the whole image" in plan.note


def _refusal(model, budget) -> str:
    with pytest.raises(EncodeMemoryError) as err:
        plan_encode(model, 300, 400, tile=0, budget=budget)
    return str(err.value)


def test_a_streamed_field_counts_one_row_of_tiles():
    """Streamed (upscale renders and drops the field row of tiles by row of tiles), the field is never whole, so a
    budget far below the whole field still fits (planning only: nothing is encoded)."""
    model = tiny_model("lite")
    budget = work_bytes(model, (120, 120)) + field_bytes(model, 96 + 8, 4000)  # a ~96 px tile and its row's field
    assert 10 * budget < field_bytes(model, 3000, 4000)
    with pytest.raises(EncodeMemoryError, match="field alone"):
        plan_encode(model, 3000, 4000, budget=budget)
    plan = plan_encode(model, 3000, 4000, budget=budget, stream_rows=8)
    assert plan.tiled and plan.tiles[0].core[2] == 96 and plan.estimate_bytes <= budget
