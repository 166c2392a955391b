"""numba kernels of the CPU backend: forward (threads over bands of output rows) and backward (threads over Gaussians).

What they compute is `torch_reference`'s sum, term for term: a pixel sees the Gaussians of its lattice neighbourhood
(the same candidate set), at the same float sample points, summed in increasing Gaussian index. The speed comes from
never visiting a (Gaussian, pixel) pair that cannot pass the 1/255 cut: per Gaussian only the rows its ellipse
spans, and per row only the column interval solved in closed form. The squared Mahalanobis distance m is then
evaluated in float64 with multiplications only (z1 = dx / l11, z2 = (dy - l21 z1) / l22 rewritten with
reciprocals). Whether a term is kept must be decided exactly as the reference decides it, in the field's dtype:
terms whose float64 m lies within `_CUT_BAND` (relative) of the cut are re-evaluated with the reference's own
float ops (two divisions) and that value decides; elsewhere the float64 m is so far from the cut that the
dtype's rounding (about 1e-7 relative, 1e-5 for extreme anisotropy) cannot change the decision.

Two forward kernels share that decision rule. `forward_f32` (float32 fields, windows at least `LANES` columns
wide: every render of the benchmark) is written so that LLVM vectorises its inner loop: each row's column
interval is covered by chunks of 16 columns with a constant trip count, every lane computes the same float64 m as
the scalar loop and is kept when it lies inside the interval with m <= cut (1 - _CUT_BAND); other lanes add 0.
Lanes whose m falls inside the band are only flagged, and the row's flagged terms are afterwards decided one by one
by the exact re-evaluation, so the kept set is the scalar kernel's. The weight comes from `_exp_neg_half`, a
branch-free float32 exp (Cody-Waite reduction and cephes' degree-5 polynomial, within 1 ulp of torch.exp): the
scalar kernel's np.exp is a libm call, which numba vectorises only with Intel's SVML (an optional package), and
w * colour is added to the output with one rounding (FMA). fastmath (FMA contraction only) is allowed in those two
helpers, never for m. The kernel also solves a row's spans before it renders them, and takes each Gaussian's
window rows from a table built in a first parallel pass instead of re-solving them in every band. This about
halves the render's time against the scalar kernel (figures in docs/benchmarks.md, from benchmarks/render_speed.py); the
per-pixel counts of kept terms equal the scalar kernel's. `forward` is the
scalar loop, kept for float64 fields (math.exp) and for windows narrower than a chunk.

Array layout (numpy, C-contiguous): means (B, N, 2), chol (B, N, 3), colors (B, N, 3); xs (W,) and ys (R,) the
sample coordinates in the field's dtype; (row|col)_(start|stop)[g] the half-open run of output rows/cols whose
neighbourhood holds lattice row/col g.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Terms whose float64 Mahalanobis^2 is within this relative distance of the cut are decided in the field's dtype.
_CUT_BAND = 1e-3
#: Candidate spans are solved for the cut widened by the band, and widened again by this much of |x| + 1 for
#: the rounding of the dtype's sample coordinates.
_COORD_SLACK = 1e-6


@numba.njit(cache=True, error_model="numpy")
def reach_maxima(means: np.ndarray, chol: np.ndarray, k: int, kw: int, sqrt_cut: float) -> np.ndarray:
    """(drift_x, drift_y, extent_x, extent_y) maxima, the float64 operations of lattice.neighbourhood_reach."""
    result = np.zeros(4)
    for b in range(means.shape[0]):
        for n in range(means.shape[1]):
            bx = (n % kw) / k
            by = (n // kw) / k
            dx = abs(float(means[b, n, 0]) - bx)
            dy = abs(float(means[b, n, 1]) - by)
            l11 = float(chol[b, n, 0])
            l21 = float(chol[b, n, 1])
            l22 = float(chol[b, n, 2])
            ex = abs(l11) * sqrt_cut
            ey = math.sqrt(l21 * l21 + l22 * l22) * sqrt_cut
            result[0] = max(result[0], dx)
            result[1] = max(result[1], dy)
            result[2] = max(result[2], ex)
            result[3] = max(result[3], ey)
    return result


@numba.njit(cache=True, inline="always")
def _exact_mahalanobis(xs, c, mx, ddy, l11, l21, l22):
    """The reference's float ops in the arrays' dtype: z1 = (x - mx) / l11, z2 = (dy - l21 z1) / l22."""
    ddx = xs[c] - mx
    z1 = ddx / l11
    z2 = (ddy - l21 * z1) / l22
    return z1 * z1 + z2 * z2


@numba.njit(cache=True, inline="always")
def _weight(m, single):
    """exp(-m / 2) at the field's precision: float32 exp is cheaper and is what a float32 reference gets."""
    if single:
        return float(np.exp(np.float32(-0.5) * np.float32(m)))
    return math.exp(-0.5 * m)


@numba.njit(cache=True, inline="always")
def _row_span(fmy, ey, s_h, row0, lo, hi):
    """Window rows [a, b), clipped to [lo, hi), whose sample y may lie within |y - my| <= ey.

    Output row r samples y = (r + 0.5) / s_h - y_origin (the field's means are relative to LR row y_origin), and
    window row j is r - row_start: `row0` = row_start - y_origin * s_h folds both into one float.
    """
    slack = _COORD_SLACK * (abs(fmy) + ey + 1.0)
    a = max(lo, int(math.ceil((fmy - ey - slack) * s_h - 0.5 - row0)))
    b = min(hi, int(math.floor((fmy + ey + slack) * s_h - 0.5 - row0)) + 1)
    return a, b


@numba.njit(cache=True, inline="always")
def _col_span(fmx, kc, kr, t_a, fdy, s_w, lo, hi):
    """Columns [a, b), clipped to [lo, hi), whose m may pass the widened cut on a row at offset dy.

    With u = dx / l11, m = u^2 + (dy - l21 u)^2 / l22^2 <= T holds for u between
    (dy l21 -+ l22 sqrt(T a - dy^2)) / a, a = l21^2 + l22^2; here kc = l11 l21 / a, kr = l11 l22 / a, t_a = T a.
    """
    disc = t_a - fdy * fdy
    if disc < 0.0:
        return lo, lo
    centre = fmx + kc * fdy
    half = kr * math.sqrt(disc) + _COORD_SLACK * (abs(centre) + 1.0)
    a = max(lo, int(math.ceil((centre - half) * s_w - 0.5)))
    b = min(hi, int(math.floor((centre + half) * s_w - 0.5)) + 1)
    return a, b


@numba.njit(cache=True, inline="always")
def _ellipse(f11, f21, f22, cut_hi):
    """What every kernel needs of one Gaussian's shape (float64): t_a, kc, kr for `_col_span`, and the reciprocals
    of m = (dx i11)^2 + (dy i22 - p dx)^2."""
    a_q = f21 * f21 + f22 * f22
    i11 = 1.0 / f11
    i22 = 1.0 / f22
    return cut_hi * a_q, f11 * f21 / a_q, f11 * f22 / a_q, i11, i22, f21 * i11 * i22


#: Columns per vector chunk of `forward_f32`. A constant trip count of 16 is what LLVM's loop vectoriser takes
#: (numba leaves the SLP vectoriser off, and a constant 8 gets fully unrolled into scalar code instead).
LANES = 16
# float32 exp(-t), t >= 0: t = k ln2 - r with k = round(t / ln2), ln2 split in two (Cody-Waite), then cephes expf's
# exp(r) = 1 + r + r^2 P(r) on |r| <= ln2 / 2, and 2^-k exactly from an integer shift.
_EXP_P0 = np.float32(1.9875691500e-4)
_EXP_P1 = np.float32(1.3981999507e-3)
_EXP_P2 = np.float32(8.3334519073e-3)
_EXP_P3 = np.float32(4.1665795894e-2)
_EXP_P4 = np.float32(1.6666665459e-1)
_EXP_P5 = np.float32(5.0000001201e-1)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_LOG2E = np.float32(1.44269504088896341)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_EXP_SHIFT = 30
_EXP_SCALE = np.float32(2.0**-_EXP_SHIFT)
#: `_exp_neg_half` needs k = round(m / (2 ln2)) <= _EXP_SHIFT: m up to about 40 (the cut is about 11.1).
EXP_M_MAX = 40.0


@numba.njit(cache=True, fastmath={"contract"})
def _exp_neg_half(m):
    """float32 exp(-m / 2) for float32 0 <= m <= EXP_M_MAX, branch-free so that a loop of it vectorises.

    Within 0.93 ulp of the exact value over [0, 1.001 cut] (np.exp, which numba maps to libm's expf: 0.5 ulp;
    both within 1 ulp of torch.exp). fastmath only lets these operations use FMAs; the function is not inlined by
    numba so that the flag stays on them alone (LLVM still inlines it).
    """
    t = m * _HALF
    k = np.int32(t * _LOG2E + _HALF)
    kf = np.float32(k)
    r = (kf * _LN2_HI - t) + kf * _LN2_LO
    y = (((((_EXP_P0 * r + _EXP_P1) * r + _EXP_P2) * r + _EXP_P3) * r + _EXP_P4) * r + _EXP_P5) * (r * r) + r + _ONE
    return y * (np.float32(np.int32(1 << _EXP_SHIFT) >> k) * _EXP_SCALE)


@numba.njit(cache=True, fastmath={"contract"})
def _fma(a, b, c):
    """a b + c rounded once (as the float64 accumulation of the scalar kernel nearly was)."""
    return a * b + c


@numba.njit(cache=True, parallel=True, error_model="numpy")
def forward_f32(
    means, chol, colors, xs, ys, s_h, s_w, row0, kw, row_start, row_stop, col_start, col_stop, cut, band, out
):
    """`forward` for float32 arrays and windows at least LANES wide, with vector chunks of LANES columns.

    Per Gaussian: its window rows come from a table made in a first parallel pass; its rows' column spans are
    solved first (independent iterations the CPU overlaps), then each span is covered by chunks of LANES columns
    that end inside the window. A chunk computes m for every lane, keeps the lanes inside the span with
    m <= cut_lo, weights them with `_exp_neg_half` and adds 0 for the others; lanes with m in (cut_lo, cut_hi]
    are flagged and the row's flagged terms are then decided and added one by one with the exact re-evaluation.
    A pixel still receives at most one term per Gaussian, in increasing Gaussian index.
    """
    bsz = means.shape[0]
    n_g = means.shape[1]
    n_rows = ys.shape[0]
    width = xs.shape[0]
    kh = row_start.shape[0]
    f_cut = float(cut)
    cut_lo = f_cut * (1.0 - _CUT_BAND)
    cut_hi = f_cut * (1.0 + _CUT_BAND)
    xs64 = xs.astype(np.float64)
    first = np.empty((bsz, n_g), np.int32)
    stop = np.empty((bsz, n_g), np.int32)
    for g in numba.prange(bsz * n_g):
        b = g // n_g
        n = g % n_g
        f11 = float(chol[b, n, 0])
        f21 = float(chol[b, n, 1])
        f22 = float(chol[b, n, 2])
        ra = 0
        rb = 0
        if f11 > 0 and f22 > 0:
            ey = math.sqrt(cut_hi * (f21 * f21 + f22 * f22))
            ra, rb = _row_span(float(means[b, n, 1]), ey, s_h, row0, 0, n_rows)
        first[b, n] = ra
        stop[b, n] = rb
    n_bands = (n_rows + band - 1) // band
    for job in numba.prange(n_bands * bsz):
        b = job // n_bands
        r0 = (job % n_bands) * band
        r1 = min(n_rows, r0 + band)
        span_a = np.empty(band, np.int64)
        span_b = np.empty(band, np.int64)
        span_q = np.empty(band, np.float64)
        for lr in range(kh):
            rs = max(r0, row_start[lr])
            re = min(r1, row_stop[lr])
            if rs >= re:
                continue
            for lc in range(kw):
                cs = col_start[lc]
                ce = col_stop[lc]
                if cs >= ce:
                    continue
                n = lr * kw + lc
                ra = max(rs, first[b, n])
                rb = min(re, stop[b, n])
                if ra >= rb:
                    continue
                l11 = chol[b, n, 0]
                l21 = chol[b, n, 1]
                l22 = chol[b, n, 2]
                f11 = float(l11)
                f21 = float(l21)
                f22 = float(l22)
                t_a, kc, kr, i11, i22, p = _ellipse(f11, f21, f22, cut_hi)
                mx = means[b, n, 0]
                my = means[b, n, 1]
                fmx = float(mx)
                c0 = colors[b, n, 0]
                c1 = colors[b, n, 1]
                c2 = colors[b, n, 2]
                for r in range(ra, rb):
                    fdy = float(ys[r] - my)
                    ca, cb = _col_span(fmx, kc, kr, t_a, fdy, s_w, cs, ce)
                    span_a[r - ra] = ca
                    span_b[r - ra] = cb
                    span_q[r - ra] = fdy * i22
                for r in range(ra, rb):
                    ca = span_a[r - ra]
                    cb = span_b[r - ra]
                    q = span_q[r - ra]
                    near = False
                    s = ca
                    while s < cb:
                        base = min(s, width - LANES)
                        # Unsigned column indices: numba then emits no negative-index wraparound, which would
                        # turn the chunk's contiguous loads and stores into gathers (or stop the vectoriser).
                        ubase = np.uint64(base)
                        ulo = np.uint64(s)
                        uhi = np.uint64(min(cb, base + LANES))
                        for j in range(LANES):
                            uc = ubase + np.uint64(j)
                            dx = xs64[uc] - fmx
                            z1 = dx * i11
                            z2 = q - p * dx
                            m = z1 * z1 + z2 * z2
                            inside = (uc >= ulo) & (uc < uhi)
                            keep = inside & (m <= cut_lo)
                            near |= inside & (m > cut_lo)
                            wgt = _exp_neg_half(np.float32(m if m <= cut_hi else cut_hi))
                            wgt = wgt if keep else np.float32(0.0)
                            out[b, 0, r, uc] = _fma(wgt, c0, out[b, 0, r, uc])
                            out[b, 1, r, uc] = _fma(wgt, c1, out[b, 1, r, uc])
                            out[b, 2, r, uc] = _fma(wgt, c2, out[b, 2, r, uc])
                        s = base + LANES
                    if near:
                        ddy = ys[r] - my
                        for c in range(ca, cb):
                            dx = xs64[c] - fmx
                            z1 = dx * i11
                            z2 = q - p * dx
                            m = z1 * z1 + z2 * z2
                            if m > cut_lo and m <= cut_hi and _exact_mahalanobis(xs, c, mx, ddy, l11, l21, l22) <= cut:
                                wgt = _exp_neg_half(np.float32(m))
                                out[b, 0, r, c] = _fma(wgt, c0, out[b, 0, r, c])
                                out[b, 1, r, c] = _fma(wgt, c1, out[b, 1, r, c])
                                out[b, 2, r, c] = _fma(wgt, c2, out[b, 2, r, c])


@numba.njit(cache=True, parallel=True, error_model="numpy")
def forward(
    means, chol, colors, xs, ys, s_h, s_w, row0, kw, row_start, row_stop, col_start, col_stop, cut, single, band, out
):
    """out (B, 3, R, W) += every kept term; out must be zero on entry.

    `cut` is in the arrays' dtype; `single` says that dtype is float32 (weights then come from float32 exp).
    """
    bsz = means.shape[0]
    n_rows = ys.shape[0]
    kh = row_start.shape[0]
    f_cut = float(cut)
    cut_lo = f_cut * (1.0 - _CUT_BAND)
    cut_hi = f_cut * (1.0 + _CUT_BAND)
    n_bands = (n_rows + band - 1) // band
    for job in numba.prange(n_bands * bsz):
        b = job // n_bands
        r0 = (job % n_bands) * band
        r1 = min(n_rows, r0 + band)
        for lr in range(kh):
            rs = max(r0, row_start[lr])
            re = min(r1, row_stop[lr])
            if rs >= re:
                continue
            for lc in range(kw):
                cs = col_start[lc]
                ce = col_stop[lc]
                if cs >= ce:
                    continue
                n = lr * kw + lc
                l11 = chol[b, n, 0]
                l21 = chol[b, n, 1]
                l22 = chol[b, n, 2]
                if not (l11 > 0 and l22 > 0):
                    continue
                f11 = float(l11)
                f21 = float(l21)
                f22 = float(l22)
                mx = means[b, n, 0]
                my = means[b, n, 1]
                t_a, kc, kr, i11, i22, p = _ellipse(f11, f21, f22, cut_hi)
                ra, rb = _row_span(float(my), math.sqrt(t_a), s_h, row0, rs, re)
                if ra >= rb:
                    continue
                fmx = float(mx)
                c0 = colors[b, n, 0]
                c1 = colors[b, n, 1]
                c2 = colors[b, n, 2]
                for r in range(ra, rb):
                    ddy = ys[r] - my
                    fdy = float(ddy)
                    ca, cb = _col_span(fmx, kc, kr, t_a, fdy, s_w, cs, ce)
                    q = fdy * i22
                    o0 = out[b, 0, r]
                    o1 = out[b, 1, r]
                    o2 = out[b, 2, r]
                    for c in range(ca, cb):
                        dx = float(xs[c]) - fmx
                        z1 = dx * i11
                        z2 = q - p * dx
                        m = z1 * z1 + z2 * z2
                        if m > cut_lo:
                            if m > cut_hi or not _exact_mahalanobis(xs, c, mx, ddy, l11, l21, l22) <= cut:
                                continue
                        wgt = _weight(m, single)
                        o0[c] += wgt * c0
                        o1[c] += wgt * c1
                        o2[c] += wgt * c2


@numba.njit(cache=True, parallel=True, error_model="numpy")
def backward(
    means,
    chol,
    colors,
    xs,
    ys,
    s_h,
    s_w,
    row0,
    kw,
    row_start,
    row_stop,
    col_start,
    col_stop,
    cut,
    single,
    grad_out,
    grad_means,
    grad_chol,
    grad_colors,
):
    """Gradients of sum(grad_out * render) into the zeroed grad arrays; each Gaussian is owned by one thread.

    With w = exp(-m/2), m = z1^2 + z2^2, z1 = dx / l11, z2 = (dy - l21 z1) / l22 and G = sum_ch g_ch c_ch:
    dm = -w G / 2, gz2 = 2 dm z2, gz1 = 2 dm z1 - gz2 l21 / l22, then the chain rule to mean, l11, l21, l22.
    """
    bsz = means.shape[0]
    kh = row_start.shape[0]
    f_cut = float(cut)
    cut_lo = f_cut * (1.0 - _CUT_BAND)
    cut_hi = f_cut * (1.0 + _CUT_BAND)
    for job in numba.prange(kh * bsz):
        b = job // kh
        lr = job % kh
        rs = row_start[lr]
        re = row_stop[lr]
        if rs >= re:
            continue
        for lc in range(kw):
            cs = col_start[lc]
            ce = col_stop[lc]
            if cs >= ce:
                continue
            n = lr * kw + lc
            l11 = chol[b, n, 0]
            l21 = chol[b, n, 1]
            l22 = chol[b, n, 2]
            if not (l11 > 0 and l22 > 0):
                continue
            f11 = float(l11)
            f21 = float(l21)
            f22 = float(l22)
            mx = means[b, n, 0]
            my = means[b, n, 1]
            t_a, kc, kr, i11, i22, p = _ellipse(f11, f21, f22, cut_hi)
            ra, rb = _row_span(float(my), math.sqrt(t_a), s_h, row0, rs, re)
            if ra >= rb:
                continue
            fmx = float(mx)
            c0 = float(colors[b, n, 0])
            c1 = float(colors[b, n, 1])
            c2 = float(colors[b, n, 2])
            g_mx = 0.0
            g_my = 0.0
            g_l11 = 0.0
            g_l21 = 0.0
            g_l22 = 0.0
            g_c0 = 0.0
            g_c1 = 0.0
            g_c2 = 0.0
            for r in range(ra, rb):
                ddy = ys[r] - my
                fdy = float(ddy)
                ca, cb = _col_span(fmx, kc, kr, t_a, fdy, s_w, cs, ce)
                q = fdy * i22
                for c in range(ca, cb):
                    dx = float(xs[c]) - fmx
                    z1 = dx * i11
                    z2 = q - p * dx
                    m = z1 * z1 + z2 * z2
                    if m > cut_lo:
                        if m > cut_hi or not _exact_mahalanobis(xs, c, mx, ddy, l11, l21, l22) <= cut:
                            continue
                    wgt = _weight(m, single)
                    go0 = float(grad_out[b, 0, r, c])
                    go1 = float(grad_out[b, 1, r, c])
                    go2 = float(grad_out[b, 2, r, c])
                    g_c0 += go0 * wgt
                    g_c1 += go1 * wgt
                    g_c2 += go2 * wgt
                    dm = -0.5 * wgt * (go0 * c0 + go1 * c1 + go2 * c2)
                    gz2 = 2.0 * dm * z2
                    gz1 = 2.0 * dm * z1 - gz2 * f21 * i22
                    g_mx -= gz1 * i11
                    g_l11 -= gz1 * z1 * i11
                    g_my -= gz2 * i22
                    g_l21 -= gz2 * z1 * i22
                    g_l22 -= gz2 * z2 * i22
            grad_means[b, n, 0] = g_mx
            grad_means[b, n, 1] = g_my
            grad_chol[b, n, 0] = g_l11
            grad_chol[b, n, 1] = g_l21
            grad_chol[b, n, 2] = g_l22
            grad_colors[b, n, 0] = g_c0
            grad_colors[b, n, 1] = g_c1
            grad_colors[b, n, 2] = g_c2
