"""The LIIF baseline of benchmarks/peers/liif.py, piece by piece, on inputs small enough to check by hand."""

from __future__ import annotations

import pytest
import torch

from benchmarks.peers.liif import (
    LIIF,
    ensemble_neighbours,
    ensemble_weights,
    make_cell,
    make_coord,
    pixel_centres,
    sample_queries,
    unfold_features,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=1e-5, rtol=0)


class FirstChannels(torch.nn.Module):
    """Stands in for the MLP: returns the first 3 inputs (the unfolded feature's first entries)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :3]


def test_pixel_centres_follow_liif():
    assert pixel_centres(4).tolist() == [-0.75, -0.25, 0.25, 0.75]
    coord = make_coord(2, 3)
    assert coord.shape == (6, 2)
    assert coord[1].tolist() == pytest.approx([-0.5, 0.0])  # row 0, column 1: (y, x)
    assert coord[5].tolist() == pytest.approx([0.5, 2 / 3])


def test_unfold_gathers_the_3x3_neighbourhood_with_zero_border():
    grid = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    feat = torch.cat([grid, 10 * grid], dim=1)  # two channels
    out = unfold_features(feat)
    assert out.shape == (1, 18, 3, 3)
    assert out[0, :9, 1, 1].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert out[0, 9:, 1, 1].tolist() == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert out[0, :9, 0, 0].tolist() == [0, 0, 0, 0, 1, 2, 0, 4, 5]
    assert out[0, :9, 2, 1].tolist() == [4, 5, 6, 7, 8, 9, 0, 0, 0]


def test_ensemble_at_the_centre_of_four_cells_weighs_them_equally():
    indices, rel = ensemble_neighbours(torch.tensor([[0.0, 0.0]]), 2, 2)
    assert indices[:, 0].tolist() == [0, 1, 2, 3]
    close(rel[:, 0], [[1, 1], [1, -1], [-1, 1], [-1, -1]])
    assert ensemble_weights(rel)[:, 0].tolist() == pytest.approx([0.25] * 4, abs=1e-6)


def test_ensemble_weights_are_bilinear():
    # 2x2 grid, centres at +-0.5; query (y, x) = (-0.25, 0.25) is 1/4 of the way down, 3/4 of the way right:
    # bilinear weights (1-.25)(1-.75), (1-.25)(.75), (.25)(1-.75), (.25)(.75)
    indices, rel = ensemble_neighbours(torch.tensor([[-0.25, 0.25]]), 2, 2)
    assert indices[:, 0].tolist() == [0, 1, 2, 3]
    close(rel[:, 0], [[0.5, 1.5], [0.5, -0.5], [-1.5, 1.5], [-1.5, -0.5]])
    assert ensemble_weights(rel)[:, 0].tolist() == pytest.approx([0.1875, 0.5625, 0.0625, 0.1875], abs=1e-6)


def test_ensemble_near_the_corner_uses_the_corner_cell_four_times():
    indices, rel = ensemble_neighbours(torch.tensor([[-0.9, -0.9]]), 2, 2)
    assert indices[:, 0].tolist() == [0, 0, 0, 0]
    close(rel[:, 0], [[-0.8, -0.8]] * 4)
    assert ensemble_weights(rel)[:, 0].tolist() == pytest.approx([0.25] * 4, abs=1e-6)


def test_decode_blends_the_four_cells_and_maps_back_to_unit_range():
    model = LIIF()
    model.imnet = FirstChannels()
    feat = torch.zeros(1, model.config.lite_channels * 9, 2, 2)
    feat[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    out = model.decode(feat, torch.tensor([[[-0.25, 0.25]]]), make_cell(8, 8, 1)[None])
    blended = 0 * 0.1875 + 1 * 0.5625 + 2 * 0.0625 + 3 * 0.1875  # 1.25
    assert out[0, 0, 0].item() == pytest.approx(blended * 0.5 + 0.5, abs=1e-5)


def test_cell_is_the_output_pixel_in_feature_cells():
    assert make_cell(8, 12, 1)[0].tolist() == pytest.approx([0.25, 1 / 6])
    model = LIIF()
    seen = []
    model.imnet.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0][..., -4:].clone()))
    with torch.no_grad():
        model.upscale(torch.rand(1, 3, 4, 4), (12, 8))  # x3 in height, x2 in width
    last = torch.cat(seen, dim=1)
    assert last[..., 2].unique().tolist() == pytest.approx([2 / 3])  # 2 / s_h
    assert last[..., 3].unique().tolist() == pytest.approx([1.0])  # 2 / s_w
    assert last[..., :2].abs().max().item() <= 3 + 1e-5  # within 1.5 cells; a cell is 2 units (2/h * h)


def test_render_in_chunks_equals_one_pass_and_has_the_asked_size():
    torch.manual_seed(0)
    model = LIIF().eval()
    lr = torch.rand(2, 3, 5, 6)
    with torch.no_grad():
        feat = model.encode(lr)
        whole = model.render(feat, (13, 17), chunk=10**6)
        chunked = model.render(feat, (13, 17), chunk=50)
    assert whole.shape == (2, 3, 13, 17)
    torch.testing.assert_close(chunked, whole)


def test_decoder_is_the_papers_five_layer_mlp():
    model = LIIF()
    linears = [m for m in model.imnet if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (model.config.lite_channels * 9 + 4, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        (256, 3),
    ]


def test_sample_queries_pick_the_pixel_under_each_coordinate():
    hr = torch.rand(2, 3, 6, 10)
    coord, cell, rgb = sample_queries(hr, 7, torch.Generator().manual_seed(1))
    assert coord.shape == (2, 7, 2) and cell.shape == (2, 7, 2) and rgb.shape == (2, 7, 3)
    rows = ((coord[..., 0] + 1) * 6 / 2 - 0.5).round().long()
    cols = ((coord[..., 1] + 1) * 10 / 2 - 0.5).round().long()
    for b in range(2):
        torch.testing.assert_close(rgb[b], hr[b, :, rows[b], cols[b]].T)
    assert cell[0, 0].tolist() == pytest.approx([2 / 6, 2 / 10])


def test_a_few_steps_fit_a_photo_crop(photo):
    """Gradients reach encoder and decoder: a narrow LIIF halves its L1 error on one crop in 30 steps."""
    torch.manual_seed(0)
    hr = torch.from_numpy(photo("astronaut", 100, 180, 16)).permute(2, 0, 1)[None].float()
    lr = torch.nn.functional.interpolate(hr, size=(4, 4), mode="area")
    model = LIIF(hidden=(32, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    coord, cell = make_coord(16, 16)[None], make_cell(16, 16, 16 * 16)[None]
    target = hr.flatten(2).transpose(1, 2)
    losses = []
    for _ in range(30):
        loss = (model(lr, coord, cell) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
