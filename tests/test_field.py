import dataclasses
import math

import numpy as np
import pytest
import torch

from gaussian_field import GaussianField, load_field, save_field
from gaussian_field.field import DET_GUARD
from gaussian_field.initial import field_from_image
from gaussian_field.lattice import base_positions


def random_field(b=1, h=3, w=4, k=2, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = base_positions(h, w, k, dtype=dtype)
    n = base.shape[0]
    means = base + (torch.rand(b, n, 2, generator=gen, dtype=dtype) * 2 - 1)
    chol = torch.stack(
        [
            torch.rand(b, n, generator=gen, dtype=dtype) * 0.5 + 0.05,
            torch.randn(b, n, generator=gen, dtype=dtype) * 0.2,
            torch.rand(b, n, generator=gen, dtype=dtype) * 0.5 + 0.05,
        ],
        -1,
    )
    colors = torch.randn(b, n, 3, generator=gen, dtype=dtype)
    return GaussianField(means, chol, colors, h, w, k)


def test_covariance_and_conic_are_inverse():
    field = random_field(b=2)
    cov = field.covariance()
    conic, valid = field.conic()
    assert bool(valid.all())
    inv = torch.stack(
        [torch.stack([conic[..., 0], conic[..., 1]], -1), torch.stack([conic[..., 1], conic[..., 2]], -1)], -2
    )
    eye = cov @ inv
    assert torch.allclose(eye, torch.eye(2, dtype=eye.dtype).expand_as(eye), atol=1e-10)
    l11, _l21, l22 = field.chol.unbind(-1)
    assert torch.allclose(torch.linalg.det(cov), (l11 * l22) ** 2)


def test_conic_guard_marks_degenerate():
    field = random_field()
    chol = field.chol.clone()
    chol[0, 0, 0] = 1e-13  # det = 1e-26 * l22^2 < DET_GUARD
    degenerate = GaussianField(field.means, chol, field.colors, 3, 4, 2, validate=False)
    conic, valid = degenerate.conic()
    assert (chol[0, 0, 0] * chol[0, 0, 2]) ** 2 <= DET_GUARD
    assert not bool(valid[0, 0]) and bool(valid[0, 1:].all())
    assert torch.equal(conic[0, 0], torch.zeros(3, dtype=conic.dtype))


def test_from_covariance_round_trips_cholesky():
    field = random_field(b=2)
    again = GaussianField.from_covariance(field.means, field.covariance(), field.colors, (3, 4, 2))
    assert torch.allclose(again.chol, field.chol, atol=1e-12)


def test_from_hr_matches_golden_lr_field(golden_model):
    field_lr = golden_model["field_lr"]
    for name in ("x4", "x2.5", "h3_w5"):
        s = golden_model["scales"][name]
        field = GaussianField.from_hr(
            s["mean_hr_px"], s["cov_hr_px2"], s["color"].double(), (s["scale_h"], s["scale_w"]), (20, 24, 2)
        )
        # mean_hr_px comes from the float32 xys_norm of the official pipeline: float32 rounding (README 2.4)
        assert torch.allclose(field.means[0], field_lr["mean_lr_px"], atol=1e-5), name
        assert torch.allclose(field.chol[0], field_lr["L_lr"], atol=1e-5), name
        assert torch.allclose(field.base_positions(), field_lr["base_lr_px"], atol=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m, c, col: (m[:, :-1], c, col), "needs"),
        (lambda m, c, col: (m, c, col[:1].expand(2, -1, -1)), "batch sizes differ"),
        (lambda m, c, col: (m.clone().index_fill_(1, torch.tensor([0]), float("nan")), c, col), "NaN or inf"),
        (lambda m, c, col: (m, c.clone().index_fill_(1, torch.tensor([3]), float("inf")), col), "NaN or inf"),
        (lambda m, c, col: (m, c * torch.tensor([-1.0, 1.0, 1.0], dtype=c.dtype), col), "positive"),
        (lambda m, c, col: (m, c, col.int()), "floating"),
        (lambda m, c, col: (m[..., :1], c, col), "shape"),
    ],
)
def test_bad_fields_raise_value_error(change, message):
    field = random_field(b=1)
    means, chol, colors = change(field.means, field.chol, field.colors)
    with pytest.raises(ValueError, match=message):
        GaussianField(means, chol, colors, 3, 4, 2)


def test_empty_field_is_refused():
    with pytest.raises(ValueError, match="empty field"):
        GaussianField(torch.zeros(1, 0, 2), torch.zeros(1, 0, 3), torch.zeros(1, 0, 3), 0, 4, 2)


def test_save_load_round_trip(tmp_path):
    field = random_field(b=2, dtype=torch.float32)
    save_field(field, tmp_path / "f.npz", scale=4)
    again = load_field(tmp_path / "f.npz")
    assert (again.h, again.w, again.k) == (3, 4, 2)
    for name in ("means", "chol", "colors"):
        assert torch.equal(getattr(again, name), getattr(field, name))
    assert not list(tmp_path.glob("*.partial"))


def test_load_refuses_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_field(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a pixel2gauss field"):
        load_field(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        load_field(tmp_path / "junk.npz")


def test_field_from_image_reproduces_photo_at_scale_one(photo):
    image = torch.from_numpy(photo("coffee", 100, 250, 48)).permute(2, 0, 1)
    field = field_from_image(image)
    rendered = field.render(scale=1, backend="torch")[0]
    psnr = -10 * math.log10(float(((rendered - image) ** 2).mean()))
    assert psnr > 24.0


def test_fields_compare_by_identity_and_validate_is_not_stored():
    field = random_field()
    twin = GaussianField(field.means, field.chol, field.colors, field.h, field.w, field.k, validate=False)
    assert field == field and field != twin  # tensors' == is elementwise; fields compare by identity
    assert "validate" not in {f.name for f in dataclasses.fields(GaussianField)}


def test_validate_flag_decides_whether_the_field_is_checked():
    field = random_field()
    chol = field.chol.clone()
    chol[0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="Cholesky diagonal"):
        GaussianField(field.means, chol, field.colors, field.h, field.w, field.k)
    GaussianField(field.means, chol, field.colors, field.h, field.w, field.k, validate=False)


def test_a_number_given_as_the_size_is_refused_with_the_keyword_to_use():
    from gaussian_field import render

    field = field_from_image(torch.rand(1, 3, 4, 5))
    for call in (lambda: render(field, 3.7), lambda: field.render(3.7), lambda: field.render(torch.tensor(2.0))):
        with pytest.raises(ValueError, match=r"size is \(H, W\), got the number .*scale="):
            call()
    assert field.render((8, 10)).shape == render(field, (8, 10)).shape == (1, 3, 8, 10)
    torch.testing.assert_close(field.render(None, 2), render(field, scale=2))
