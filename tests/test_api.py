"""The Python API: load_model, model.encode(image), field.render(scale); numpy, PIL or tensors in, the same type out."""

import numpy as np
import pytest
import torch
from PIL import Image

from gaussian_field import load_field, render
from gaussian_field.image_io import quantize
from sr_model import api
from sr_model.files.checkpoint import save_checkpoint
from tests.test_tiling import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("lite")


@pytest.fixture()
def rgb(photo):
    return photo("chelsea", top=60, left=120, size=24)[:, :20]  # float64 (24, 20, 3) in [0, 1]


def reference(model, image_float):
    lr = torch.from_numpy(np.ascontiguousarray(image_float, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return model.encode(lr)


def test_load_model_encode_once_render_many(tmp_path, model, rgb):
    save_checkpoint(tmp_path / "m.pt", model)
    loaded = api.load_model(tmp_path / "m.pt")
    image8 = np.round(rgb * 255).astype(np.uint8)
    field = loaded.encode(image8)
    assert field.lr_size == (24, 20)
    x2, x37, aniso = field.render(2), field.render(3.7), field.render((2, 3))
    assert x2.dtype == np.uint8 and x2.shape == (48, 40, 3)
    assert x37.shape == (89, 74, 3) and aniso.shape == (48, 60, 3)
    assert field.render(size=(30, 50)).shape == (30, 50, 3)
    want = reference(model, image8 / 255.0)
    assert np.array_equal(x37, quantize(render(want, scale=3.7)[0], 8))
    field.save(tmp_path / "f.npz")
    assert torch.equal(load_field(tmp_path / "f.npz").means, field.field.means)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_numpy_dtype_comes_back(model, rgb, dtype):
    peak = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    image = (np.round(rgb * peak) if peak > 1 else rgb).astype(dtype)
    out = api.upscale(image, model, 2)
    assert out.dtype == dtype and out.shape == (48, 40, 3)
    sr = render(reference(model, image.astype(np.float64) / peak), scale=2)[0]
    if peak > 1:
        assert np.array_equal(out, quantize(sr, 8 if peak == 255 else 16))
    else:
        assert out.min() >= 0 and out.max() <= 1
        np.testing.assert_allclose(out, sr.clamp(0, 1).permute(1, 2, 0).numpy(), atol=1e-6)


def test_pil_in_pil_out(model, rgb):
    image = Image.fromarray(np.round(rgb * 255).astype(np.uint8), "RGB")
    out = api.upscale(image, model, (2, 1.5))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (30, 48)
    gray = api.upscale(image.convert("L"), model, 2)
    assert isinstance(gray, Image.Image) and gray.size == (40, 48)
    same = api.upscale(np.asarray(image), model, (2, 1.5))
    assert np.array_equal(np.asarray(out), same)


def test_tiled_encode_through_the_api(model, rgb):
    image = rgb.astype(np.float32)
    whole = api.ImageModel(model).encode(image)
    tiled = api.encode_image(image, model, tile=8)
    assert torch.allclose(tiled.field.means, whole.field.means, atol=1e-5)
    assert torch.allclose(tiled.field.colors, whole.field.colors, atol=1e-5)


@pytest.mark.parametrize(
    "bad,words",
    [
        (np.zeros((4, 4, 2)), "(H, W, 3)"),
        (np.zeros((0, 4, 3)), "empty"),
        (np.full((4, 4, 3), np.nan), "NaN"),
        (np.zeros((4, 4, 3), dtype=bool), "integers or floats"),
        ("image.png", "numpy array, a PIL image or a torch tensor"),
    ],
)
def test_bad_images_are_clear_errors(model, bad, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        api.upscale(bad, model, 2)


def test_bad_scale_model_and_device(model, rgb, tmp_path):
    with pytest.raises(ValueError, match="positive"):
        api.upscale(rgb, model, 0)
    with pytest.raises(FileNotFoundError):
        api.load_model(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="checkpoint path or a model"):
        api.upscale(rgb, 42, 2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            api.check_device("cuda")
    with pytest.raises(ValueError, match="not a device"):
        api.check_device("gpu0")


def test_tensors_in_tensors_out(model, photo):
    crops = [photo(name, top=60, left=120, size=24)[:20, :16] for name in ("chelsea", "coffee")]
    x = torch.from_numpy(np.stack(crops).astype(np.float32)).permute(0, 3, 1, 2).contiguous()  # (2, 3, 20, 16)
    image_model = api.ImageModel(model)
    assert image_model.to("cpu") is image_model and image_model.device == torch.device("cpu")
    out = image_model(x, scale=2)
    assert out.shape == (2, 3, 40, 32) and out.dtype == torch.float32 and out.device == x.device
    for i in range(2):  # a batch gives what each image gives alone
        want = render(reference(model, crops[i]), scale=2).clamp(0, 1)
        torch.testing.assert_close(out[i : i + 1], want, atol=1e-6, rtol=0)
    assert image_model.encode(x).render(size=(30, 50)).shape == (2, 3, 30, 50)
    wide = image_model(x.double(), scale=(1.5, 3))
    assert wide.dtype == torch.float64 and wide.shape == (2, 3, 30, 48)
    x8 = (x * 255).round().to(torch.uint8)
    out8 = image_model(x8, scale=2)
    assert out8.dtype == torch.uint8
    assert torch.equal(out8, (image_model(x8.float() / 255, scale=2) * 255).round().to(torch.uint8))


@pytest.mark.parametrize(
    "bad,words",
    [
        (torch.zeros(3, 8, 8), "pass x[None]"),
        (torch.zeros(1, 4, 8, 8), "(B, 3, h, w)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.int32), "float (values in [0, 1]) or uint8"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    ],
)
def test_bad_tensors_are_clear_errors(model, bad, words):
    with pytest.raises(
        ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        api.ImageModel(model)(bad, scale=2)


def test_one_load_model_for_every_model_file(tmp_path, model):
    """api.load_model is the one loader: checkpoints and exports alike give an ImageModel."""
    from sr_model.files.model_files import export_file

    save_checkpoint(tmp_path / "m.pt", model)
    export_file(tmp_path / "m.pt", tmp_path / "m.safetensors")
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    outs = []
    for name in ("m.pt", "m.safetensors"):
        loaded = api.load_model(tmp_path / name)
        assert isinstance(loaded, api.ImageModel) and name in loaded.source
        outs.append(loaded(x, scale=3))
    assert torch.equal(outs[0], outs[1])
    import sr_model.files.checkpoint

    assert not hasattr(sr_model.files.checkpoint, "load_model")
