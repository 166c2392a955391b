"""The streamed upscale (the field rendered row of tiles by row of tiles, never whole) against the stitched field and
the untiled encode, at several scales and sizes, in float32 TIFF so that nothing is hidden by rounding to 8 bits."""

import math

import numpy as np
import pytest
import tifffile
import torch

from gaussian_field import render
from gaussian_field.lattice import support_half_extents
from sr_model.inference.encode import encode_tiles, plan_encode
from sr_model.inference.streaming import reach_bound, window_rows
from sr_model.inference.upscale_files import RenderRequest, upscale_files
from tests.test_model import sharpen
from tests.test_tiling import tiny_model

REQUESTS = [
    RenderRequest("x2", scale=2.0),
    RenderRequest("x3.7", scale=3.7),
    RenderRequest("x2x5", scale=(2.0, 5.0)),
    RenderRequest("x0.6", scale=0.6),
    RenderRequest("61x50", size=(50, 61)),
]


@pytest.fixture(scope="module")
def model():
    return sharpen(tiny_model("lite"))  # offsets and mixes spread over their ranges


@pytest.fixture()
def photo_file(tmp_path, photo):
    lr = photo("coffee", top=120, left=200, size=64)[:43, :37]
    path = tmp_path / "coffee.tif"
    tifffile.imwrite(path, (lr * 65535).round().astype(np.uint16))
    return path, torch.from_numpy((lr * 65535).round() / 65535).permute(2, 0, 1)[None].float()


def test_streamed_outputs_equal_the_stitched_and_the_whole_field(tmp_path, model, photo_file):
    path, lr = photo_file
    results = upscale_files(model, [path], tmp_path / "out", REQUESTS, suffix=".tif", bits=32, tile=8)
    assert results[0].tiles == 30  # 6 rows of 5 tiles: streamed (no field asked for)
    plan = plan_encode(model, 43, 37, tile=8, budget=2**40)
    with torch.no_grad():
        stitched = encode_tiles(model, lr, plan)
        whole = model.encode(lr)
    for request in REQUESTS:
        streamed = torch.from_numpy(tifffile.imread(tmp_path / "out" / f"coffee_{request.tag}.tif")).permute(2, 0, 1)
        with torch.no_grad():
            want = render(stitched, scale=request.scale, size=request.size)[0].clamp(0, 1)  # as written
            untiled = render(whole, scale=request.scale, size=request.size)[0].clamp(0, 1)
        assert streamed.shape == want.shape
        assert torch.equal(streamed, want), request.tag  # the same pixels, bit for bit
        assert float((streamed - untiled).abs().max()) < 1e-4, request.tag


def test_reach_bound_holds_for_every_encoded_gaussian(model, photo):
    lr = torch.from_numpy(np.ascontiguousarray(photo("astronaut", size=48))).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        field = model.encode(lr)
    reach = (field.offsets()[..., 1].abs() + support_half_extents(field.chol)[..., 1]).max()
    bound = reach_bound(model)
    assert bound is not None and float(reach) <= bound
    assert window_rows(model) == 2 * math.ceil(bound) + 2


def test_free_covariance_is_never_streamed(tmp_path, photo_file):
    """No bound on its widths: the whole field is stitched, as before streaming existed."""
    free = tiny_model("lite", covariance="free")
    assert reach_bound(free) is None and window_rows(free) is None
    path, _ = photo_file
    results = upscale_files(free, [path], tmp_path / "out", REQUESTS[:1], tile=16)
    assert results[0].tiles == 9 and results[0].outputs[0].size == (86, 74)


def test_the_streamed_encode_keeps_no_gradients(tmp_path, model, photo_file, monkeypatch):
    """Every tile is encoded without autograd (which would hold every tile's graph: memory without end)."""
    seen = []
    original = type(model).encode

    def recording(self, lr):
        seen.append(torch.is_grad_enabled())
        return original(self, lr)

    monkeypatch.setattr(type(model), "encode", recording)
    path, _ = photo_file
    upscale_files(model, [path], tmp_path / "out", REQUESTS[:1], tile=16)
    assert len(seen) == 9 and not any(seen)
