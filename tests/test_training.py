"""Training: bit-exact resume, checkpoints, validation vs bicubic, learning, bad input, the `p2g train` verb."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gaussian_field.image_io import write_image
from sr_model.data.datasets import NoImagesError, SkippedImageWarning
from sr_model.evaluation.evaluate import evaluate
from sr_model.files.model_files import load_network
from sr_model.networks.covariance_dictionary import official_kernels
from sr_model.networks.model import build_model
from sr_model.networks.presets import preset
from sr_model.training.loop import Upscaler, resume_training, train
from sr_model.training.losses import frequency_loss, reconstruction_loss
from sr_model.training.state import TrainConfig, TrainConfigError, learning_rate, milestones_from_fractions
from sr_model.training.validation import Validator
from workflows.cli import cli

#: The lite preset shrunk so a step takes milliseconds.
TINY = dict(lite_channels=8, lite_blocks=1, cov_dim=16, cov_hidden=(16,), color_hidden=(16,), offset_hidden=(16,))
TINY_CLI = [
    arg
    for key, value in TINY.items()
    for arg in ("--model-option", f"{key}={list(value) if isinstance(value, tuple) else value}")
]


@pytest.fixture
def folders(tmp_path, photo) -> dict[str, Path]:
    """Training photos (three 48 px crops), a held-out validation crop, and a 27-entry .npy dictionary."""
    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    train_dir.mkdir()
    val_dir.mkdir()
    for name, top, left in (("astronaut", 30, 180), ("coffee", 100, 250), ("rocket", 200, 300)):
        write_image(train_dir / f"{name}.png", photo(name, top, left, size=48))
    write_image(val_dir / "chelsea.png", photo("chelsea", 60, 140, size=40))
    kernels = official_kernels()[:-1].reshape(9, 9, 9, 3)[::4, ::4, ::4].reshape(-1, 3)
    np.save(tmp_path / "dictionary.npy", kernels.numpy())
    return {"train": train_dir, "val": val_dir, "prior": tmp_path / "dictionary.npy", "root": tmp_path}


def train_cli_args(folders, out, steps: int, *extra: str) -> list[str]:
    """`p2g train` of the tiny model on `folders`: batches of 2 patches of 8 px at x2-3, validated every 2 steps."""
    return [
        "train",
        "--prior",
        str(folders["prior"]),
        "--images",
        str(folders["train"]),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch",
        "2",
        "--patch",
        "8",
        "--scales",
        "2-3",
        *extra,
        "--val-images",
        str(folders["val"]),
        "--val-every",
        "2",
        "--device",
        "cpu",
        *TINY_CLI,
    ]


def _config(folders, name: str = "run", **overrides) -> TrainConfig:
    settings = dict(
        images=[folders["train"]],
        out=folders["root"] / name,
        prior=folders["prior"],
        model_overrides=TINY,
        steps=6,
        batch=2,
        patch=8,
        scale_min=2.0,
        scale_max=4.0,
        lr_milestones=(3,),
        val_images=[folders["val"]],
        val_every=2,
        log_every=1,
    )
    return TrainConfig(**{**settings, **overrides})


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(folders):
    whole = train(_config(folders, "whole"), progress=False)
    assert whole.step == 6 and not whole.stopped_early
    part = train(_config(folders, "parts"), stop_after=3, progress=False)
    assert part.step == 3 and part.stopped_early
    halfway = _load(part.last)
    assert halfway["step"] == 3
    resumed = resume_training(folders["root"] / "parts", progress=False)
    assert resumed.step == 6
    a, b = _load(whole.last), _load(resumed.last)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    exp_avg = [
        (s["exp_avg"], t["exp_avg"]) for s, t in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())
    ]
    assert exp_avg and all(torch.equal(x, y) for x, y in exp_avg)
    # the comparison means something: the last three steps did change the weights
    assert not all(torch.equal(a["state_dict"][k], halfway["state_dict"][k]) for k in a["state_dict"])
    # metrics: no step logged twice although the first part ran past nothing, and the resumed log goes on
    steps = [r["step"] for r in _metrics(folders["root"] / "parts") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_checkpoints_hold_model_optimiser_step_config_and_provenance(folders):
    result = train(_config(folders), progress=False)
    for path in (result.last, folders["root"] / "run" / "best.pt"):
        data = _load(path)  # plain containers and tensors only
        assert {"state_dict", "optimizer", "step", "train_config", "config", "dictionary", "scaler"} <= set(data)
        provenance = data["dictionary"]["provenance"]
        assert provenance["method"] == "npy" and provenance["source"] == str(folders["prior"])
        assert provenance["content_hash"].startswith("sha256:") and data["dictionary"]["size"] == 27
        assert data["train_config"]["patch"] == 8 and data["config"]["lite_channels"] == 8
    assert _load(result.last)["step"] == 6 and result.best_val["step"] in (2, 4, 6)
    assert _load(result.best)["best"]["val"]["mean_psnr"] == max(
        r["val"]["mean_psnr"] for r in _metrics(folders["root"] / "run") if "val" in r
    )
    model = load_network(result.last)  # what `p2g eval --checkpoint` does
    lr = torch.rand(1, 3, 6, 7)
    assert model(lr, scale=3).shape == (1, 3, 18, 21)


def test_validation_scores_match_p2g_eval(folders, photo):
    model = build_model(preset("lite", **TINY), "official").eval()
    validator = Validator([folders["val"]], (2.0, 4.0), crop=384)
    scores = validator(model)
    rows = evaluate([folders["val"]], [2.0, 4.0], model=model)
    for scale in (2.0, 4.0):
        by_method = {r.method: r.psnr for r in rows if r.scale == scale}
        assert scores[f"x{scale:g}"]["bicubic"] == pytest.approx(by_method["bicubic"], abs=1e-9)
        assert scores[f"x{scale:g}"]["psnr"] == pytest.approx(by_method["model"], abs=1e-6)
    assert 20 < scores["x2"]["bicubic"] < 45  # a real photo crop, not a flat patch


def test_validation_reports_a_colour_bias_per_channel(folders):
    """A field brightened in green only: the validation's bias moves by that many levels in green alone."""
    from gaussian_field.initial import field_from_image, kernel_sum

    class Shifted:
        def __init__(self, green: float) -> None:
            self.green = green

        def encode(self, lr):
            field = field_from_image(lr)
            field.colors[..., 1] += self.green / kernel_sum(field.k, 0.5)
            return field

    validator = Validator([folders["val"]], (2.0, 4.0), crop=384)
    plain, shifted = validator(Shifted(0.0)), validator(Shifted(8 / 255))
    for scale in ("x2", "x4"):
        red, green, blue = (s - p for s, p in zip(shifted[scale]["bias_rgb"], plain[scale]["bias_rgb"]))
        assert red == 0 and blue == 0 and 7 < green < 9, (scale, red, green, blue)
        assert max(abs(b) for b in plain[scale]["bicubic_bias_rgb"]) < 1.0  # bicubic keeps the colour level
    assert shifted["bias_rgb"][1] - plain["bias_rgb"][1] == pytest.approx(
        np.mean([shifted[s]["bias_rgb"][1] - plain[s]["bias_rgb"][1] for s in ("x2", "x4")]), abs=1e-3
    )


def test_training_learns(folders):
    """A short run at a fixed scale: with raw colours the loss falls well below where it starts; with colours
    anchored on the LR's interpolation (the lite preset) it starts far below that and stays below it."""
    losses = {}
    for anchor in ("none", "lr"):
        config = _config(
            folders,
            name=f"run_{anchor}",
            steps=12,
            lr=3e-3,
            lr_milestones=(),
            scale_min=3.0,
            scale_max=3.0,
            val_images=(),
            val_every=12,
            log_every=2,
            model_overrides={**TINY, "color_anchor": anchor},
        )
        train(config, progress=False)
        losses[anchor] = [r["loss"] for r in _metrics(Path(config.out))]
    assert losses["none"][-1] < 0.5 * losses["none"][0], losses
    assert losses["lr"][0] < 0.5 * losses["none"][-1], losses
    assert max(losses["lr"]) < losses["none"][-1], losses


def test_learning_rate_steps_down_at_the_milestones(folders):
    config = _config(folders, lr=1e-3, lr_milestones=milestones_from_fractions(10, (0.5, 0.8)), lr_gamma=0.1)
    assert config.lr_milestones == (5, 8)
    rates = [learning_rate(config, step) for step in range(10)]
    assert (
        rates[:5] == [1e-3] * 5 and rates[5:8] == pytest.approx([1e-4] * 3) and rates[8:] == pytest.approx([1e-5] * 2)
    )


def test_frequency_loss(photo):
    hr = torch.from_numpy(photo("astronaut", 100, 200, 32)).permute(2, 0, 1)[None].float()
    assert frequency_loss(hr, hr) == 0
    parts = reconstruction_loss(hr + 0.1, hr, freq_weight=0.5)
    assert parts["loss"] == pytest.approx(float(parts["l1"] + 0.5 * parts["freq"]))
    sr = torch.from_numpy(photo("astronaut", 101, 203, 32)).permute(2, 0, 1)[None].float()  # shifted: a real error
    spectrum = np.fft.rfft2((sr - hr).double().numpy(), norm="ortho")  # independent reference (numpy)
    expected = np.mean(np.abs(np.stack([spectrum.real, spectrum.imag])))
    assert float(frequency_loss(sr, hr)) == pytest.approx(expected, rel=1e-5)
    assert "freq" not in reconstruction_loss(hr, hr)


def test_frequency_variant_logs_its_term(folders):
    train(_config(folders, steps=2, freq_weight=0.1, val_images=()), progress=False)
    record = _metrics(folders["root"] / "run")[-1]
    assert record["loss"] == pytest.approx(record["l1"] + 0.1 * record["freq"], rel=1e-5)


def test_amp_path_renders_in_float32():
    """The autocast branch (used on CUDA) run on CPU: fp16 encoder and heads, float32 render, gradients flow."""
    model = build_model(preset("lite", **TINY), "official")
    lr = torch.rand(2, 3, 6, 6)
    sr = Upscaler(model, amp=True)(lr, (15, 15))
    assert sr.dtype == torch.float32 and sr.shape == (2, 3, 15, 15) and torch.isfinite(sr).all()
    sr.mean().backward()
    assert model.color_head.mlp.layers[0].weight.grad is not None


@pytest.mark.parametrize("variant", [{"positions": "fixed"}, {"covariance": "free"}])
def test_ablation_variants_train(folders, variant):
    prior = None if variant.get("covariance") == "free" else folders["prior"]
    result = train(
        _config(folders, steps=2, prior=prior, model_overrides={**TINY, **variant}, val_images=()), progress=False
    )
    assert result.step == 2 and load_network(result.last).config.positions == variant.get("positions", "drift")


def test_time_limit_stops_after_the_current_step(folders):
    result = train(_config(folders, val_images=()), time_limit=0.0, progress=False)
    assert result.step == 1 and result.stopped_early and _load(result.last)["step"] == 1


def test_loader_workers_do_not_change_the_weights(folders):
    one = train(_config(folders, "w0", steps=3, val_images=()), workers=0, progress=False)
    two = train(_config(folders, "w2", steps=3, val_images=()), workers=2, progress=False)
    a, b = _load(one.last)["state_dict"], _load(two.last)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_stops_after_the_current_step_and_saves(folders, monkeypatch):
    import os
    import signal

    import sr_model.training.loop as training

    calls = []

    def loss_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C during the second step
        return reconstruction_loss(*args, **kwargs)

    monkeypatch.setattr(training, "reconstruction_loss", loss_then_interrupt)
    handler_before = signal.getsignal(signal.SIGINT)  # earlier tests in the session may have replaced it
    result = train(_config(folders, val_images=()), progress=False)
    assert result.step == 2 and result.stopped_early and _load(result.last)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored


def test_broken_image_is_skipped_with_a_warning(folders):
    (folders["train"] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.warns(SkippedImageWarning, match="broken.png"):
        result = train(_config(folders, steps=2, val_images=()), progress=False)
    assert result.step == 2


def test_empty_folder_is_a_clear_error(folders):
    empty = folders["root"] / "empty"
    empty.mkdir()
    with pytest.raises(NoImagesError, match="no images"):
        train(_config(folders, images=[empty]), progress=False)
    result = CliRunner().invoke(
        cli, ["train", "--prior", str(folders["prior"]), "--images", str(empty), "--out", str(folders["root"] / "cli")]
    )
    assert result.exit_code == 2 and result.output.startswith("error: no images"), result.output
    assert not (folders["root"] / "cli").exists()


def test_bad_settings_are_refused(folders):
    with pytest.raises(TrainConfigError, match="--prior"):
        _config(folders, prior=None)
    with pytest.raises(TrainConfigError, match="scales"):
        _config(folders, scale_min=4.0, scale_max=2.0)
    with pytest.raises(ValueError, match="unknown model config fields"):
        _config(folders, model_overrides={"lite_chanels": 4})


def test_cli_trains_refuses_to_overwrite_and_resumes(folders):
    run = folders["root"] / "cli"
    args = train_cli_args(folders, run, 4)
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "trained: 4 steps" in first.output and "bicubic" in first.output and "best.pt" in first.output
    before = (run / "last.pt").read_bytes()
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "--resume" in again.output
    assert (run / "last.pt").read_bytes() == before  # nothing lost
    changed = runner.invoke(cli, ["train", "--out", str(run), "--resume", "--patch", "16", "--steps", "6"])
    assert changed.exit_code == 2 and "cannot change patch" in changed.output, changed.output
    resumed = runner.invoke(cli, ["train", "--out", str(run), "--resume", "--steps", "6", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert "trained: 6 steps" in resumed.output and _load(run / "last.pt")["step"] == 6
    nothing = runner.invoke(cli, ["train", "--out", str(folders["root"] / "none"), "--resume"])
    assert nothing.exit_code == 2 and "nothing to resume" in nothing.output


def test_runs_quietly_without_warnings(folders):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(_config(folders, steps=2), progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_with_amp_resumes_and_loads_on_cpu(folders):
    """AMP (fp16 autocast + GradScaler) on CUDA; the scaler state travels in last.pt; the result loads on CPU."""
    part = train(_config(folders, amp=True), device="cuda", stop_after=3, progress=False)
    assert _load(part.last)["scaler"]["scale"] > 0
    result = resume_training(folders["root"] / "run", device="cuda", progress=False)
    assert result.step == 6
    model = load_network(result.last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model(torch.rand(1, 3, 8, 8), scale=2)).all()
