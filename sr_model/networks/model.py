"""`ContinuousSR`: LR image -> `GaussianField` (encode once) -> any scale or size (render).

    lr (B, 3, h, w) --encoder--> (B, 64, 4h, 4w) --PixelUnshuffle(2)--> (B, 256, 2h, 2w): one feature per
    Gaussian of the k = 2 lattice (N = 4hw). Then, per Gaussian n at lattice (r, c):
      mean   = (c/2, r/2) + tanh offset          LR px, |offset| < 1 (or the base alone: positions="fixed")
      chol   = mixed dictionary triplet / s_ref  LR px (official: para / 4)
      colour = MLP(feature)                      no activation
               [+ U(base) / S]                   color_anchor="lr": a residual over the LR's interpolation

The field is in LR pixel units, so one encode serves every scale; `gaussian_field.render` does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gaussian_field import GaussianField, render
from gaussian_field.lattice import add_base_positions, base_positions
from sr_model.networks.color_anchor import anchor_colors
from sr_model.networks.covariance_dictionary import OFFICIAL_REFERENCE_SCALE, CovarianceDictionary, load_dictionary
from sr_model.networks.encoder_specs import encoder_spec
from sr_model.networks.encoders import FEATURE_CHANNELS
from sr_model.networks.heads import ColorHead, DictionaryCovarianceHead, FreeCovarianceHead, OffsetHead, per_gaussian
from sr_model.networks.presets import ConfigError, ModelConfig

#: Gaussians per LR pixel along each axis (PixelUnshuffle(2) of the 4x features).
LATTICE_K = 2
GAUSSIAN_FEATURES = FEATURE_CHANNELS * LATTICE_K * LATTICE_K
#: Without gradients, the encoder's tail and the heads run on pieces of at most this many LR pixels a side (plus
#: TAIL_CONTEXT around each): their tensors are the largest of an encode (256 floats per Gaussian, 1 GiB for a
#: 512 x 512 image), and a piece's stay in cache. With gradients the image is one piece, as autograd keeps them all.
HEAD_PIECE = 64

#: What the heads give per Gaussian, and its width.
GAUSSIAN_PARTS = (("color", 3), ("mixed", 3), ("offset", 2))


class ContinuousSR(nn.Module):
    """Encoder + three heads. `encode(lr)` gives the field; `model(lr, scale=... | size=...)` renders it.

    Buffers `dictionary` (K, 3) and `dictionary_scale` (the reference scale) are saved with the weights;
    `dictionary_provenance` (a plain dict) says where the dictionary came from.
    """

    def __init__(self, config: ModelConfig, dictionary: CovarianceDictionary | None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder_spec(config.encoder).build(config)
        self.unshuffle = nn.PixelUnshuffle(LATTICE_K)
        if config.uses_dictionary:
            if dictionary is None:
                raise ConfigError(
                    "covariance='dictionary' needs a dictionary (a .npy file, a prior store or 'official')"
                )
            self.covariance_head = DictionaryCovarianceHead(GAUSSIAN_FEATURES, config.cov_dim, config.cov_hidden)
            self.register_buffer("dictionary", dictionary.kernels.clone().to(torch.float32))
            scale, provenance = dictionary.reference_scale, dict(dictionary.provenance)
        else:
            self.covariance_head = FreeCovarianceHead(GAUSSIAN_FEATURES, config.cov_dim, config.cov_hidden)
            self.register_buffer("dictionary", None)
            scale, provenance = OFFICIAL_REFERENCE_SCALE, {"method": "none (free covariance ablation)"}
        self.register_buffer("dictionary_scale", torch.tensor(float(scale), dtype=torch.float64))
        self.dictionary_provenance = provenance
        self.offset_head = (
            OffsetHead(GAUSSIAN_FEATURES, config.offset_hidden, config.offset_input == "leaky_relu")
            if config.positions == "drift"
            else None
        )
        self.color_head = ColorHead(GAUSSIAN_FEATURES, config.color_hidden)
        if config.color_anchor == "lr":
            self._start_at_anchor()

    def _start_at_anchor(self) -> None:
        """Zero the last layers of the colour and offset heads: a fresh model renders the anchor itself."""
        heads = [self.color_head] + ([self.offset_head] if self.offset_head is not None else [])
        for head in heads:
            last = head.mlp.layers[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    # ------------------------------------------------------------------ pieces
    def features(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 256, 2h, 2w): one feature column per Gaussian."""
        return self.unshuffle(self.encoder(self._check_input(lr)))

    def gaussians(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per Gaussian, (B, N, .) each: `offset` (tanh, LR px), `mixed` (dictionary units), `color` (the final
        colour: the head's output, plus the anchor when `color_anchor` is "lr").

        The trunk runs on the whole image; the tail and the heads on pieces of HEAD_PIECE LR px without gradients
        (one piece with them), each with TAIL_CONTEXT px of trunk around it, so the pieces change no number.
        """
        lr = self._check_input(lr)
        out = self._heads(self.encoder.trunk(lr), tuple(lr.shape[-2:]))  # the trunk is freed here
        if self.config.color_anchor == "lr":
            chol = out["mixed"] / self.dictionary_scale.to(out["mixed"].dtype)
            anchor = anchor_colors(lr, chol, LATTICE_K)
            del chol
            out["color"] = out["color"].add_(anchor) if not torch.is_grad_enabled() else out["color"] + anchor
        return out

    def _heads(self, trunk: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The heads' outputs (B, N, .) over the whole lattice, piece by piece without gradients."""
        h, w = size
        side = max(h, w) if torch.is_grad_enabled() else HEAD_PIECE
        boxes = [(t, l, min(h, t + side), min(w, l + side)) for t in range(0, h, side) for l in range(0, w, side)]
        if len(boxes) == 1:
            out = self._piece(trunk, size, boxes[0])
            return {name: part.reshape(part.shape[0], -1, part.shape[-1]) for name, part in out.items()}
        lattice = (trunk.shape[0], LATTICE_K * h, LATTICE_K * w)
        out = {name: trunk.new_empty(*lattice, width) for name, width in GAUSSIAN_PARTS}
        for top, left, bottom, right in boxes:
            rows, cols = slice(LATTICE_K * top, LATTICE_K * bottom), slice(LATTICE_K * left, LATTICE_K * right)
            for name, part in self._piece(trunk, size, (top, left, bottom, right)).items():
                out[name][:, rows, cols] = part
        return {name: part.view(part.shape[0], -1, part.shape[-1]) for name, part in out.items()}

    def _piece(
        self, trunk: torch.Tensor, size: tuple[int, int], box: tuple[int, int, int, int]
    ) -> dict[str, torch.Tensor]:
        """The heads' outputs (B, 2 rows, 2 cols, .) for the LR box (top, left, bottom, right) of an h x w image."""
        top, left, bottom, right = box
        feat, core = self.encoder.lattice_piece(trunk, size, box)
        lattice = (trunk.shape[0], LATTICE_K * (bottom - top), LATTICE_K * (right - left))
        mixed = self.covariance_head(feat, self.dictionary, core)
        rows = per_gaussian(feat[..., core[0], core[1]])
        del feat  # a copy when the piece has context around it: one 256-wide map at a time
        out = {"color": self.color_head.from_rows(rows), "mixed": mixed}
        if self.offset_head is not None:
            out["offset"] = self.offset_head.from_rows(rows)
        else:
            out["offset"] = out["color"].new_zeros(*out["color"].shape[:-1], 2)
        return {name: part.view(*lattice, part.shape[-1]) for name, part in out.items()}

    # ------------------------------------------------------------------ the API
    def encode(self, lr: torch.Tensor) -> GaussianField:
        """LR image (B, 3, h, w) in [0, 1] -> field in LR px units (k = 2, N = 4hw Gaussians per image).

        Built without the field's strict check: as upstream, a mix that lands exactly on a zero diagonal
        gives det = 0 and the renderer drops that Gaussian.
        """
        h, w = lr.shape[-2:]
        parts = self.gaussians(lr)
        scale = self.dictionary_scale.to(parts["mixed"].dtype)
        if torch.is_grad_enabled():
            base = base_positions(h, w, LATTICE_K, dtype=parts["offset"].dtype, device=parts["offset"].device)
            means, chol = base + parts["offset"], parts["mixed"] / scale
        else:  # in place: the field is the heads' outputs, with no second copy
            means, chol = add_base_positions(parts.pop("offset"), h, w, LATTICE_K), parts.pop("mixed").div_(scale)
        return GaussianField(means, chol, parts["color"], h, w, LATTICE_K, validate=False)

    def forward(
        self,
        lr: torch.Tensor,
        scale: float | Sequence[float] | None = None,
        size: Sequence[int] | None = None,
        backend: str = "auto",
    ) -> torch.Tensor:
        """Encode and render at `scale` (s or (s_h, s_w)) or to `size` (H, W): (B, 3, H, W), unclamped."""
        return render(self.encode(lr), size=size, scale=scale, backend=backend)

    # ------------------------------------------------------------------ helpers
    @property
    def reference_scale(self) -> float:
        return float(self.dictionary_scale)

    def _check_input(self, lr: torch.Tensor) -> torch.Tensor:
        if not isinstance(lr, torch.Tensor) or lr.dim() != 4 or lr.shape[1] != 3:
            shape = tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__
            raise ValueError(f"the model takes an RGB batch (B, 3, h, w) in [0, 1], got {shape}")
        if min(lr.shape) == 0:
            raise ValueError(f"empty input image batch {tuple(lr.shape)}")
        if not lr.is_floating_point():
            raise ValueError(f"input must be a float tensor in [0, 1], got {lr.dtype}")
        param = self.color_head.mlp.layers[0].weight
        lr = lr.to(device=param.device, dtype=param.dtype)
        if not bool(torch.isfinite(lr).all()):
            raise ValueError("input image contains NaN or inf values")
        return lr


def build_model(config: ModelConfig, dictionary: CovarianceDictionary | str | None = None) -> ContinuousSR:
    """A fresh model; `dictionary` is a loaded dictionary or a source for `load_dictionary` ("official", a
    .npy file, a prior store). The free-covariance ablation needs none."""
    if isinstance(dictionary, (str, bytes)) or hasattr(dictionary, "__fspath__"):
        dictionary = load_dictionary(dictionary)
    if not config.uses_dictionary:
        dictionary = None
    return ContinuousSR(config, dictionary)
