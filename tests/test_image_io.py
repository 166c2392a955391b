import numpy as np
import pytest
from PIL import Image

from gaussian_field.image_io import ImageReadError, find_image_files, read_image, write_image


def test_round_trip_8_and_16_bit(tmp_path, photo):
    image = photo("chelsea", 10, 10, 40)
    for name, bits, tol in (
        ("a.png", 8, 0.5 / 255 + 1e-6),
        ("b.png", 16, 0.5 / 65535 + 1e-6),
        ("c.tif", 16, 0.5 / 65535 + 1e-6),
        ("d.bmp", 8, 0.5 / 255 + 1e-6),
    ):
        write_image(tmp_path / name, image, bits=bits)
        back = read_image(tmp_path / name)
        assert back.shape == image.shape and back.dtype == np.float32
        assert np.abs(back - image).max() <= tol, name
    assert not list(tmp_path.glob(".*partial*"))


def test_modes_are_converted_to_rgb(tmp_path, photo):
    rgb = (photo("coffee", 0, 0, 16) * 255).round().astype(np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg")
    Image.fromarray(rgb).save(tmp_path / "photo.webp")
    for name in ("gray.png", "pal.png", "rgba.png", "gray16.png", "photo.jpg", "photo.webp"):
        img = read_image(tmp_path / name)
        assert img.shape == (16, 16, 3) and img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1, name
    assert np.allclose(read_image(tmp_path / "rgba.png"), rgb / 255.0, atol=1e-6)
    assert np.allclose(read_image(tmp_path / "gray16.png")[..., 0], rgb[..., 0] / 255.0, atol=1e-6)


def test_bad_files_raise_clear_errors(tmp_path, photo):
    (tmp_path / "text.png").write_text("not an image at all")
    with pytest.raises(ImageReadError, match="not a recognised image"):
        read_image(tmp_path / "text.png")
    write_image(tmp_path / "full.jpg", photo("astronaut", 0, 0, 64))
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="suffix"):
        write_image(tmp_path / "x.gif", photo())
    with pytest.raises(ValueError, match="16-bit"):
        write_image(tmp_path / "x.jpg", photo(), bits=16)


def test_find_image_files_is_recursive_sorted_and_skips_hidden(tmp_path, photo):
    image = photo("rocket", 0, 0, 8)
    for name in ("b.png", "a/c.JPG", "a/d/e.tif", ".hidden.png", "a/._mac.jpg", ".cache/f.png", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            write_image(tmp_path / name, image)
    (tmp_path / "folder.png").mkdir()  # an image suffix on a folder is not an image
    assert find_image_files(tmp_path) == [tmp_path / "a" / "c.JPG", tmp_path / "a" / "d" / "e.tif", tmp_path / "b.png"]
    assert find_image_files(tmp_path / "a" / "d") == [tmp_path / "a" / "d" / "e.tif"]
