"""`GaussianField`: one continuous image as a lattice of 2D Gaussians (ARCHITECTURE.md, "Conventions of the field").

All quantities are in continuous LR pixel units (x right, y down, LR pixel (i, j) covers [j, j+1) x [i, i+1)).
Tensors are batched: means (B, N, 2) as (x, y), Cholesky triplets (B, N, 3) as (l11, l21, l22) with
Sigma = L L^T and L = [[l11, 0], [l21, l22]], colours (B, N, 3). N = h * w * k * k.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import InitVar, dataclass
from pathlib import Path

import numpy as np
import torch

from gaussian_field.integrity import DamagedFileError, UnverifiedFileWarning, damaged, first_line, write_atomically
from gaussian_field.lattice import base_positions

#: Covariances with det(Sigma) = (l11 * l22)^2 at or below this (LR px^4) are degenerate for `conic()`: it marks
#: them invalid rather than return an overflowing inverse. Renderers never form the inverse (they solve with the
#: Cholesky factor) and do not read this guard: they give zero weight to a Gaussian whose l11 or l22 is not
#: positive, and evaluate a near-singular one like any other (the Mahalanobis cut-off drops it wherever its
#: value is below 1/255).
DET_GUARD = 1e-24

#: 2: the file carries a digest of its arrays (version-1 files are loaded with a notice that they have none).
FIELD_FILE_VERSION = 2
FIELD_FORMAT = "pixel2gauss-field"
#: The arrays a field file's digest covers (every one it writes but the digest itself), and those it must have.
_DIGESTED = ("format", "version", "lattice", "means", "chol", "colors", "metadata")
_REQUIRED = ("version", "lattice", "means", "chol", "colors")
_KNOWN = (*_DIGESTED, "digest")
#: Deflate never shrinks data more than about 1032:1, so a compressed member that claims more is forged.
_MAX_DEFLATE_RATIO = 1032
#: Notices about field files without a digest already given in this process.
_ANNOUNCED: set[str] = set()
_REDO = "write it again with `p2g upscale --save-field` or gaussian_field.save_field"


def _as_batched(t: torch.Tensor, width: int, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(np.asarray(t))
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[-1] != width:
        raise ValueError(f"{name} must have shape (B, N, {width}) or (N, {width}), got {tuple(t.shape)}")
    return t


@dataclass(eq=False)
class GaussianField:
    """A batch of fields on one lattice. Build once (encode or fit), render at any scale.

    Equality is identity (`eq=False`): fields hold tensors, whose `==` is elementwise. `validate` is an
    init-only flag (not stored): False skips `check()` for fields built from already-checked parts.
    """

    means: torch.Tensor
    chol: torch.Tensor
    colors: torch.Tensor
    h: int
    w: int
    k: int = 2
    validate: InitVar[bool] = True

    def __post_init__(self, validate: bool) -> None:
        self.means = _as_batched(self.means, 2, "means")
        self.chol = _as_batched(self.chol, 3, "chol")
        self.colors = _as_batched(self.colors, 3, "colors")
        if validate:
            self.check()

    # ------------------------------------------------------------------ validation
    def check(self) -> GaussianField:
        """Raise ValueError naming the first problem (shape, dtype, device, non-finite, bad diagonal)."""
        for name in ("h", "w", "k"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise ValueError(f"lattice {name} must be a non-negative integer, got {value!r}")
            setattr(self, name, int(value))
        if self.h == 0 or self.w == 0 or self.k == 0:
            raise ValueError(f"empty field: lattice (h, w, k) = ({self.h}, {self.w}, {self.k}) holds no Gaussians")
        n = self.h * self.w * self.k * self.k
        tensors = {"means": self.means, "chol": self.chol, "colors": self.colors}
        if self.means.shape[0] == 0:
            raise ValueError("empty field: batch size is 0")
        for name, t in tensors.items():
            if t.shape[0] != self.means.shape[0]:
                raise ValueError(f"batch sizes differ: means has {self.means.shape[0]} fields, {name} has {t.shape[0]}")
            if t.shape[1] != n:
                raise ValueError(
                    f"{name} holds {t.shape[1]} Gaussians but the lattice {self.h}x{self.w} with k={self.k} needs {n}"
                )
            if not t.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
            if t.dtype != self.means.dtype or t.device != self.means.device:
                raise ValueError(
                    f"means, chol and colors must share dtype and device; {name} is {t.dtype} on {t.device}, "
                    f"means is {self.means.dtype} on {self.means.device}"
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or inf values")
        if not bool((self.chol[..., 0] > 0).all() and (self.chol[..., 2] > 0).all()):
            raise ValueError("Cholesky diagonal (l11, l22) must be positive for every Gaussian")
        return self

    # ------------------------------------------------------------------ shape
    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    @property
    def lr_size(self) -> tuple[int, int]:
        """(h, w) of the LR image the field covers."""
        return self.h, self.w

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, *args, **kwargs) -> GaussianField:
        return GaussianField(
            self.means.to(*args, **kwargs),
            self.chol.to(*args, **kwargs),
            self.colors.to(*args, **kwargs),
            self.h,
            self.w,
            self.k,
            validate=False,
        )

    def detach(self) -> GaussianField:
        return GaussianField(
            self.means.detach(), self.chol.detach(), self.colors.detach(), self.h, self.w, self.k, validate=False
        )

    def base_positions(self) -> torch.Tensor:
        """Lattice base positions (N, 2), x then y, in the field's dtype."""
        return base_positions(self.h, self.w, self.k, dtype=self.dtype, device=self.device)

    def offsets(self) -> torch.Tensor:
        """Drift of each Gaussian from its lattice base (B, N, 2), in LR pixels."""
        return self.means - self.base_positions()

    def window(self, first: int, stop: int) -> GaussianField:
        """LR rows [first, stop) as a field of their own, means relative to row `first` (exact: a whole number).

        `render(window, size, scale, rows=..., y_origin=first)` with the whole image's size and scale gives the
        whole field's pixels wherever every Gaussian that reaches them lies in the window.
        """
        if not 0 <= first < stop <= self.h:
            raise ValueError(f"window rows {first}..{stop} must lie within the field's 0..{self.h}")
        lattice = slice(self.k * first * self.k * self.w, self.k * stop * self.k * self.w)
        means = self.means[:, lattice].clone()
        means[..., 1] -= first
        return GaussianField(
            means, self.chol[:, lattice], self.colors[:, lattice], stop - first, self.w, self.k, validate=False
        )

    # ------------------------------------------------------------------ covariance maths
    def covariance(self) -> torch.Tensor:
        """Sigma = L L^T as (B, N, 2, 2) in LR px^2."""
        l11, l21, l22 = self.chol.unbind(-1)
        a = l11 * l11
        b = l11 * l21
        c = l21 * l21 + l22 * l22
        return torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2)

    def conic(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse covariance as (B, N, 3) = (A, B, C) with Sigma^-1 = [[A, B], [B, C]], and a validity mask.

        det(Sigma) = (l11 * l22)^2 exactly; Gaussians with det <= DET_GUARD get a zero conic and valid = False
        instead of an overflowing inverse. No renderer calls this (see DET_GUARD for what renderers do).
        """
        l11, l21, l22 = self.chol.unbind(-1)
        det = (l11 * l22) ** 2
        valid = det > DET_GUARD
        safe = torch.where(valid, det, torch.ones_like(det))
        a = l11 * l11
        b = l11 * l21
        c = l21 * l21 + l22 * l22
        conic = torch.stack([c / safe, -b / safe, a / safe], -1)
        return torch.where(valid.unsqueeze(-1), conic, torch.zeros_like(conic)), valid

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_covariance(
        cls, means: torch.Tensor, cov: torch.Tensor, colors: torch.Tensor, lattice: Sequence[int]
    ) -> GaussianField:
        """Build from LR-pixel means (.., N, 2) and covariances (.., N, 2, 2) via their Cholesky factor."""
        cov = torch.as_tensor(cov)
        a = cov[..., 0, 0]
        b = 0.5 * (cov[..., 0, 1] + cov[..., 1, 0])
        c = cov[..., 1, 1]
        if not bool((a > 0).all()):
            raise ValueError("covariance has a non-positive variance sigma_x^2; it is not positive definite")
        l11 = torch.sqrt(a)
        l21 = b / l11
        rest = c - l21 * l21
        if not bool((rest > 0).all()):
            raise ValueError("covariance is not positive definite (det <= 0)")
        chol = torch.stack([l11, l21, torch.sqrt(rest)], -1)
        h, w, k = lattice
        return cls(torch.as_tensor(means), chol, torch.as_tensor(colors), h, w, k)

    @classmethod
    def from_hr(
        cls,
        mean_hr_px: torch.Tensor,
        cov_hr_px2: torch.Tensor,
        colors: torch.Tensor,
        scale: float | Sequence[float],
        lattice: Sequence[int],
    ) -> GaussianField:
        """Build from Gaussians in HR pixels at scale (s_h, s_w), HR pixel centres at (j+.5, i+.5).

        mean_lr = S^-1 mean_hr and cov_lr = S^-1 cov_hr S^-1 with S = diag(s_w, s_h).
        """
        s_h, s_w = _scale_pair(scale)
        mean_hr_px = torch.as_tensor(mean_hr_px)
        cov_hr_px2 = torch.as_tensor(cov_hr_px2)
        inv = torch.tensor([1.0 / s_w, 1.0 / s_h], dtype=mean_hr_px.dtype, device=mean_hr_px.device)
        means = mean_hr_px * inv
        cov = cov_hr_px2 * inv.to(cov_hr_px2.dtype)[:, None] * inv.to(cov_hr_px2.dtype)[None, :]
        return cls.from_covariance(means, cov, torch.as_tensor(colors).to(means.dtype), lattice)

    # ------------------------------------------------------------------ rendering and files
    def render(self, size=None, scale=None, backend: str = "auto") -> torch.Tensor:
        """Render to `size` (H, W) or at `scale` (s or (s_h, s_w)): `field.render(...)` takes what
        `render(field, ...)` takes, in the same order, so a number given as the size is refused there, not taken
        as a scale (the order was (scale, size) before; `field.render(3.7)` now says to write scale=3.7)."""
        from gaussian_field.render import render

        return render(self, size, scale, backend=backend)

    def save(self, path: str | Path, **metadata) -> None:
        save_field(self, path, **metadata)


def _scale_pair(scale: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(scale, (int, float)):
        return float(scale), float(scale)
    if isinstance(scale, torch.Tensor):
        scale = scale.flatten().tolist()
    values = [float(s) for s in scale]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ValueError(f"scale must be one number or a pair (s_h, s_w), got {scale!r}")
    return values[0], values[1]


def field_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and bytes (sorted by name): what a field file is checked by."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    return f"sha256:{digest.hexdigest()}"


def save_field(field: GaussianField, path: str | Path, **metadata) -> None:
    """Write one `.npz` file holding the field, so it is built once and rendered later (`p2g render`).

    The file carries a digest of its arrays (checked by `load_field`) and is written atomically.
    """
    arrays = {
        "format": np.array(FIELD_FORMAT),
        "version": np.array(FIELD_FILE_VERSION, dtype=np.int64),
        "lattice": np.array([field.h, field.w, field.k], dtype=np.int64),
        "means": field.means.detach().cpu().numpy(),
        "chol": field.chol.detach().cpu().numpy(),
        "colors": field.colors.detach().cpu().numpy(),
        "metadata": np.array(json.dumps(metadata, sort_keys=True, default=str)),
    }
    arrays["digest"] = np.array(field_digest(arrays))
    write_atomically(path, lambda fh: np.savez(fh, allow_pickle=False, **arrays))


def load_field(path: str | Path, device: str | torch.device = "cpu") -> GaussianField:
    """Read a field written by `save_field`; a missing, foreign, forged or damaged file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"field file not found: {path}")
    arrays = _read_field_arrays(path)
    try:
        version = int(arrays["version"])
    except (TypeError, ValueError):
        raise ValueError(f"{path} is not a readable field file (its version is not a number); {_REDO}") from None
    if version > FIELD_FILE_VERSION:
        raise ValueError(f"{path} was written by a newer pixel2gauss (field format {version}); upgrade")
    _check_digest(path, arrays, version)
    try:
        h, w, k = (int(v) for v in arrays["lattice"])
    except (TypeError, ValueError):
        raise ValueError(f"{path} is not a readable field file (its lattice is not three numbers); {_REDO}") from None
    tensors = {name: torch.from_numpy(arrays[name]).to(device) for name in ("means", "chol", "colors")}
    return GaussianField(tensors["means"], tensors["chol"], tensors["colors"], h, w, k)


def _check_digest(path: Path, arrays: dict[str, np.ndarray], version: int) -> None:
    """Refuse a field whose arrays differ from its digest; a field written before digests is loaded, with a notice."""
    digest = arrays.pop("digest", None)
    if digest is None and version < 2:
        message = (
            f"{path} carries no digest (written before pixel2gauss checked its field files), so damage to it "
            f"cannot be detected; saving it again adds one"
        )
        if message not in _ANNOUNCED:  # once per process: Python's own bookkeeping resets with its filters
            _ANNOUNCED.add(message)
            warnings.warn(message, UnverifiedFileWarning, stacklevel=3)
        return
    if digest is None or str(digest) != field_digest({k: v for k, v in arrays.items() if k in _DIGESTED}):
        raise damaged(path, "arrays", _REDO)


def _read_field_arrays(path: Path) -> dict[str, np.ndarray]:
    """The field file's arrays, each npy header checked against the bytes the file holds before anything is
    allocated (a forged header cannot ask for terabytes); any unreadable part is one ValueError line."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if "format" not in members or str(_read_member(path, archive, members["format"])) != FIELD_FORMAT:
                raise ValueError(f"{path} is not a pixel2gauss field file (write one with `p2g upscale --save-field`)")
            missing = [name for name in _REQUIRED if name not in members]
            if missing:
                raise ValueError(f"{path} is not a readable field file (it has no {missing[0]!r} array); {_REDO}")
            size = path.stat().st_size
            return {name: _read_member(path, archive, info, size) for name, info in members.items() if name in _KNOWN}
    except ValueError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError) as err:
        raise ValueError(f"{path} is not a readable field file ({first_line(err)}); {_REDO}") from None


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int | None = None) -> np.ndarray:
    """One npy member of the archive, read only after its header's claim fits the bytes that hold it."""
    with archive.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{path} is not a readable field file (npy format {version}); {_REDO}")
        held = info.file_size - fh.tell()
    name = info.filename.removesuffix(".npy")
    claimed = math.prod(shape) * dtype.itemsize
    stored = info.compress_type == zipfile.ZIP_STORED
    limit = info.compress_size if stored else info.compress_size * _MAX_DEFLATE_RATIO
    if dtype.hasobject or claimed > held or info.file_size > limit + 1024 or (size and info.compress_size > size):
        raise DamagedFileError(
            f"{path} is damaged: its {name!r} array claims {math.prod(shape)} elements of {dtype} "
            f"({_bytes_text(claimed)}) but the file holds {_bytes_text(max(held, 0))} for it; {_REDO}"
        )
    try:
        with archive.open(info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except zipfile.BadZipFile:  # the zip's own CRC-32 of the member's bytes: damage, as the digest would say
        raise damaged(path, "arrays", _REDO) from None


def _bytes_text(count: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"
