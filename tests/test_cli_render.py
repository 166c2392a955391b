import numpy as np
from click.testing import CliRunner
from PIL import Image

from gaussian_field import __version__, save_field
from tests.test_field import random_field
from workflows.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_version_and_help():
    assert __version__ in run("--version").output
    result = run("--help")
    assert result.exit_code == 0 and "render" in result.output


def test_render_writes_one_png_per_scale_and_size(tmp_path):
    field = random_field(h=5, w=6)
    save_field(field, tmp_path / "f.npz")
    result = run(
        "render",
        tmp_path / "f.npz",
        "--scale",
        2,
        "--scale",
        3.7,
        "--scale",
        "2x3",
        "--size",
        "7x4",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "out").iterdir()}
    assert sizes == {"f_x2.png": (12, 10), "f_x3.7.png": (22, 18), "f_x2x3.png": (18, 10), "f_7x4.png": (7, 4)}


def test_render_16_bit(tmp_path):
    from gaussian_field import load_field, render
    from gaussian_field.image_io import read_image

    save_field(random_field(h=3, w=4), tmp_path / "f.npz")
    result = run("render", tmp_path / "f.npz", "--scale", 2, "--bits", 16, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    back = read_image(tmp_path / "f_x2.png")
    want = render(load_field(tmp_path / "f.npz"), scale=2)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert back.shape == (6, 8, 3)
    assert np.abs(back - want).max() <= 0.5 / 65535 + 1e-6


def test_bad_inputs_one_line_exit_2(tmp_path):
    save_field(random_field(h=3, w=4), tmp_path / "f.npz")
    cases = [
        ("render", tmp_path / "missing.npz", "--scale", 2, "--out", tmp_path / "o1"),
        ("render", tmp_path / "f.npz", "--scale", 0, "--out", tmp_path / "o2"),
        ("render", tmp_path / "f.npz", "--scale", "abc", "--out", tmp_path / "o3"),
        ("render", tmp_path / "f.npz", "--out", tmp_path / "o4"),
        ("render", tmp_path / "f.npz", "--scale", 1e6, "--out", tmp_path / "o5"),
    ]
    for args in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines and ("error" in result.output.lower()), result.output
        assert "Traceback" not in result.output
    assert not list(tmp_path.glob("o*/*.png"))


def test_interrupt_is_one_line_exit_130_and_names_what_is_kept(tmp_path, monkeypatch):
    import workflows.render_cmd as render_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(render_cmd, "render_field_file", interrupted)
    save_field(random_field(h=3, w=4), tmp_path / "f.npz")
    result = run("render", tmp_path / "f.npz", "--scale", 2, "--out", tmp_path)
    assert result.exit_code == 130
    assert result.output.strip() == "interrupted: finished outputs are kept, no partial file is left"
