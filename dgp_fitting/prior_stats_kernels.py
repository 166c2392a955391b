"""Compiled per-block passes of the prior statistics: one loop over a block's Gaussians instead of ~30 numpy passes.

At a million crops (10^9 Gaussians) the statistics are bound by these loops, so they are numba kernels that
release the GIL (blocks run in parallel on threads). Each computes exactly what the numpy definitions in
`dgp_fitting.prior_stats` say (`elements_lr`, `bin_index`, the per-crop means and gradient energy): bins and
extremes are identical, sums differ from numpy's pairwise sums only in rounding (sequential float64).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_TWO_PI = 2.0 * math.pi


@numba.njit(inline="always")
def _elements(chol, g, e):
    l11 = np.float64(chol[g, 0])
    l21 = np.float64(chol[g, 1])
    l22 = np.float64(chol[g, 2])
    e[0] = l11
    e[1] = l21
    e[2] = l22
    e[3] = l11 * l11
    e[4] = l11 * l21
    e[5] = l21 * l21 + l22 * l22


@numba.njit(inline="always")
def _bin(x, lo, hi, scale, bins):
    """`prior_stats.bin_index` for one value: -1 below, `bins` above, hi in the last bin."""
    if x == hi:
        return bins - 1
    v = math.floor((x - lo) * scale)
    if v < -1.0:
        return -1
    if v > bins:
        return bins
    return int(v)


@numba.njit(nogil=True, cache=True)
def block_moments(
    chol, paper, hist_lo, hist_hi, hist_scale, hist_bins, pairs, joint_bins, sums, mins, maxs, m2, hist, joint, inside
):
    """Fill the partial moments of (N, 3) Cholesky rows; returns N, or -1 if a value is not finite.

    sums (6,), mins/maxs (6,), m2 (6, 6) about this block's mean, hist (6, hist_bins + 2) with outside counts
    first and last, joint (3, joint_bins, joint_bins) over the same ranges, inside (4,): paper ranges per
    Cholesky element and all three."""
    n = chol.shape[0]
    e = np.empty(6)
    for g in range(n):
        _elements(chol, g, e)
        for i in range(6):
            x = e[i]
            if not math.isfinite(x):
                return -1
            sums[i] += x
            if x < mins[i]:
                mins[i] = x
            if x > maxs[i]:
                maxs[i] = x
    if n == 0:
        return 0
    mean = sums / n
    d = np.empty(6)
    acc = np.zeros((6, 6))
    joint_scale = np.empty(6)
    for i in range(6):
        joint_scale[i] = joint_bins / (hist_hi[i] - hist_lo[i])
    for g in range(n):
        _elements(chol, g, e)
        for i in range(6):
            d[i] = e[i] - mean[i]
        for i in range(6):
            for j in range(i, 6):
                acc[i, j] += d[i] * d[j]
        for i in range(6):
            hist[i, _bin(e[i], hist_lo[i], hist_hi[i], hist_scale[i], hist_bins) + 1] += 1
        for p in range(pairs.shape[0]):
            a, b = pairs[p, 0], pairs[p, 1]
            ix = _bin(e[a], hist_lo[a], hist_hi[a], joint_scale[a], joint_bins)
            iy = _bin(e[b], hist_lo[b], hist_hi[b], joint_scale[b], joint_bins)
            if 0 <= ix < joint_bins and 0 <= iy < joint_bins:
                joint[p, ix, iy] += 1
        all_in = True
        for i in range(3):
            if e[i] >= paper[i, 0] and e[i] <= paper[i, 1]:
                inside[i] += 1
            else:
                all_in = False
        if all_in:
            inside[3] += 1
    for i in range(6):
        for j in range(i, 6):
            m2[i, j] += acc[i, j]
            if j != i:
                m2[j, i] += acc[i, j]
    return n


@numba.njit(nogil=True, cache=True)
def block_fine_histogram(chol, lo, hi, scale, bins, counts):
    """Add each element's bin counts over [lo, hi] (bins equal bins, hi in the last) to counts (6, bins)."""
    e = np.empty(6)
    for g in range(chol.shape[0]):
        _elements(chol, g, e)
        for i in range(6):
            k = _bin(e[i], lo[i], hi[i], scale[i], bins)
            counts[i, min(max(k, 0), bins - 1)] += 1


@numba.njit(nogil=True, cache=True)
def per_crop_rows(chol, colors, h, w, k, out):
    """out (c, 8) per crop: means of l11, l21, l22, sxx, sxy, syy, l11*l22, then the gradient energy of the
    cells' colour mass (colour x 2 pi l11 l22 summed over each LR cell's k x k Gaussians)."""
    c, g_count = chol.shape[0], chol.shape[1]
    e = np.empty(6)
    mass = np.empty((h, w, 3))
    for i in range(c):
        sums = np.zeros(7)
        mass[:] = 0.0
        for g in range(g_count):
            l11 = np.float64(chol[i, g, 0])
            l21 = np.float64(chol[i, g, 1])
            l22 = np.float64(chol[i, g, 2])
            e[0] = l11
            e[1] = l21
            e[2] = l22
            e[3] = l11 * l11
            e[4] = l11 * l21
            e[5] = l21 * l21 + l22 * l22
            for j in range(6):
                sums[j] += e[j]
            area = l11 * l22
            sums[6] += area
            y = g // (k * w * k)
            x = (g // k) % w
            for ch in range(3):
                mass[y, x, ch] += np.float64(colors[i, g, ch]) * (_TWO_PI * area)
        for j in range(7):
            out[i, j] = sums[j] / g_count
        energy = 0.0
        if h > 1:
            total = 0.0
            for y in range(h - 1):
                for x in range(w):
                    for ch in range(3):
                        diff = mass[y + 1, x, ch] - mass[y, x, ch]
                        total += diff * diff
            energy += total / ((h - 1) * w)
        if w > 1:
            total = 0.0
            for y in range(h):
                for x in range(w - 1):
                    for ch in range(3):
                        diff = mass[y, x + 1, ch] - mass[y, x, ch]
                        total += diff * diff
            energy += total / (h * (w - 1))
        out[i, 7] = energy
