"""Triton kernels of the GPU backend: neighbourhood reach, forward (a tile of output pixels per program, looping
over the lattice neighbourhood) and backward (a block of Gaussians per program, looping over the pixels that see
them; gathers only, no atomics, deterministic).

They evaluate `torch_reference`'s formula with its float operations and order: sample points
(i + 0.5) / s computed in float64 then rounded to the field's dtype, z1 = dx / l11 and z2 = (dy - l21 z1) / l22
with IEEE division (div_rn; Triton's plain `/` is approximate in float32), m = z1^2 + z2^2 with no fused
multiply-add (launch with enable_fp_fusion=False), kept when m <= cut in the dtype, terms added in increasing
Gaussian index. Only exp() differs in its last bits. float64 scalars (scales, constants) travel as int64 bit
patterns because Triton types Python floats as float32. Integer arguments are not specialised (no recompilation
for every output size or scale whose value happens to be 1 or a multiple of 16).

Importing this module imports triton; set TRITON_INTERPRET=1 before that to run the kernels on CPU tensors.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _f64(bits):
    """A float64 from the int64 bit pattern passed as a kernel scalar."""
    return bits.to(tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def _sample(index, scale, F64: tl.constexpr):
    """(index + 0.5) / scale in float64, rounded to the field's dtype (torch_reference.sample_axis)."""
    value = (index.to(tl.float64) + 0.5) / scale
    if not F64:
        value = value.to(tl.float32)
    return value


@triton.jit
def _div(a, b, F64: tl.constexpr):
    if F64:
        result = a / b
    else:
        result = tl.div_rn(a, b)
    return result


@triton.jit(do_not_specialize=["total", "NPER", "KW", "K", "sqrt_cut_bits"])
def reach_kernel(means_ptr, chol_ptr, out_ptr, total, NPER, KW, K, sqrt_cut_bits, BLOCK: tl.constexpr):
    """out (4,) int64 <- max bit patterns of (|drift_x|, |drift_y|, extent_x, extent_y) in float64, as
    lattice.neighbourhood_reach computes them. All values are >= 0, so int64 order is float order."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = idx < total
    n = idx % NPER
    sqrt_cut = _f64(sqrt_cut_bits)
    base_x = (n % KW).to(tl.float64) / K
    base_y = (n // KW).to(tl.float64) / K
    mx = tl.load(means_ptr + 2 * idx, mask=valid, other=0.0).to(tl.float64)
    my = tl.load(means_ptr + 2 * idx + 1, mask=valid, other=0.0).to(tl.float64)
    l11 = tl.load(chol_ptr + 3 * idx, mask=valid, other=0.0).to(tl.float64)
    l21 = tl.load(chol_ptr + 3 * idx + 1, mask=valid, other=0.0).to(tl.float64)
    l22 = tl.load(chol_ptr + 3 * idx + 2, mask=valid, other=0.0).to(tl.float64)
    drift_x = tl.where(valid, tl.abs(mx - base_x), 0.0)
    drift_y = tl.where(valid, tl.abs(my - base_y), 0.0)
    ext_x = tl.where(valid, tl.abs(l11) * sqrt_cut, 0.0)
    ext_y = tl.where(valid, tl.sqrt(l21 * l21 + l22 * l22) * sqrt_cut, 0.0)
    tl.atomic_max(out_ptr + 0, tl.max(drift_x, 0).to(tl.int64, bitcast=True))
    tl.atomic_max(out_ptr + 1, tl.max(drift_y, 0).to(tl.int64, bitcast=True))
    tl.atomic_max(out_ptr + 2, tl.max(ext_x, 0).to(tl.int64, bitcast=True))
    tl.atomic_max(out_ptr + 3, tl.max(ext_y, 0).to(tl.int64, bitcast=True))


@triton.jit
def _reach_bounds(reach_ptr, K, grow_bits, pad_bits):
    """(dy_lo, dy_hi, dx_lo, dx_hi) from the maxima, exactly as lattice.neighbourhood_reach rounds them."""
    grow = _f64(grow_bits)
    pad = _f64(pad_bits)
    rx = tl.load(reach_ptr + 0).to(tl.float64, bitcast=True) + tl.load(reach_ptr + 2).to(tl.float64, bitcast=True)
    ry = tl.load(reach_ptr + 1).to(tl.float64, bitcast=True) + tl.load(reach_ptr + 3).to(tl.float64, bitcast=True)
    rx = rx * grow + pad
    ry = ry * grow + pad
    kf = K * 1.0  # K may arrive as the constexpr 1
    dy_lo = -tl.floor(kf * ry).to(tl.int32)
    dy_hi = tl.ceil(kf * ry).to(tl.int32)
    dx_lo = -tl.floor(kf * rx).to(tl.int32)
    dx_hi = tl.ceil(kf * rx).to(tl.int32)
    return dy_lo, dy_hi, dx_lo, dx_hi


@triton.jit(
    do_not_specialize=[
        "NPER",
        "KH",
        "KW",
        "K",
        "R",
        "W",
        "ROW0",
        "Y0",
        "s_h_bits",
        "s_w_bits",
        "cut_bits",
        "grow_bits",
        "pad_bits",
    ]
)
def forward_kernel(
    means_ptr,
    chol_ptr,
    colors_ptr,
    reach_ptr,
    out_ptr,
    NPER,
    KH,
    KW,
    K,
    R,
    W,
    ROW0,
    Y0,
    s_h_bits,
    s_w_bits,
    cut_bits,
    grow_bits,
    pad_bits,
    BH: tl.constexpr,
    BW: tl.constexpr,
    F64: tl.constexpr,
    FAST: tl.constexpr = False,
):
    """out (B, 3, R, W): rows ROW0 + [0, R) of the render; one BH x BW tile of pixels per program.

    FAST: m from reciprocals (cheap, a few ulp off) and, only in the loop steps where some pixel of the tile has
    m within 1e-3 (relative) of the cut, the exact divisions for those pixels, so every keep/drop decision is
    still the reference's; weights then differ from the reference's by about 1e-6 relative.
    """
    pid_c = tl.program_id(0)
    pid_r = tl.program_id(1)
    b = tl.program_id(2)
    dy_lo, dy_hi, dx_lo, dx_hi = _reach_bounds(reach_ptr, K, grow_bits, pad_bits)
    cut64 = _f64(cut_bits)
    if F64:
        cut = cut64
    else:
        cut = cut64.to(tl.float32)
    cut_lo = cut * 0.999
    cut_hi = cut * 1.001

    rows = pid_r * BH + tl.arange(0, BH)[:, None]  # local row index, (BH, 1)
    cols = pid_c * BW + tl.arange(0, BW)[None, :]  # (1, BW)
    row_ok = rows < R
    col_ok = cols < W
    y = _sample(rows + ROW0, _f64(s_h_bits), F64) - Y0  # exact: Y0 is a whole number of LR rows
    x = _sample(cols, _f64(s_w_bits), F64)
    gy = tl.floor(y.to(tl.float64) * K).to(tl.int32)
    gx = tl.floor(x.to(tl.float64) * K).to(tl.int32)

    acc0 = tl.zeros([BH, BW], dtype=y.dtype)
    acc1 = tl.zeros([BH, BW], dtype=y.dtype)
    acc2 = tl.zeros([BH, BW], dtype=y.dtype)
    batch = b * NPER
    for dy in range(dy_lo, dy_hi + 1):
        lat_r = gy + dy
        r_ok = row_ok & (lat_r >= 0) & (lat_r < KH)
        for dx in range(dx_lo, dx_hi + 1):
            lat_c = gx + dx
            ok = r_ok & col_ok & (lat_c >= 0) & (lat_c < KW)
            g = batch + lat_r * KW + lat_c
            mx = tl.load(means_ptr + 2 * g, mask=ok, other=0.0)
            my = tl.load(means_ptr + 2 * g + 1, mask=ok, other=0.0)
            l11 = tl.load(chol_ptr + 3 * g, mask=ok, other=1.0)
            l21 = tl.load(chol_ptr + 3 * g + 1, mask=ok, other=0.0)
            l22 = tl.load(chol_ptr + 3 * g + 2, mask=ok, other=1.0)
            valid = ok & (l11 > 0) & (l22 > 0)
            l11 = tl.where(valid, l11, 1.0)
            l22 = tl.where(valid, l22, 1.0)
            if FAST:
                z1 = (x - mx) * (1.0 / l11)
                z2 = ((y - my) - l21 * z1) * (1.0 / l22)
                m = z1 * z1 + z2 * z2
                near = valid & (m > cut_lo) & (m < cut_hi)
                if tl.sum(near.to(tl.int32)) > 0:
                    e1 = _div(x - mx, l11, F64)
                    e2 = _div((y - my) - l21 * e1, l22, F64)
                    m = tl.where(near, e1 * e1 + e2 * e2, m)
            else:
                z1 = _div(x - mx, l11, F64)
                z2 = _div((y - my) - l21 * z1, l22, F64)
                m = z1 * z1 + z2 * z2
            keep = valid & (m <= cut)
            w = tl.where(keep, tl.exp(-0.5 * m), 0.0)
            acc0 += w * tl.load(colors_ptr + 3 * g, mask=keep, other=0.0)
            acc1 += w * tl.load(colors_ptr + 3 * g + 1, mask=keep, other=0.0)
            acc2 += w * tl.load(colors_ptr + 3 * g + 2, mask=keep, other=0.0)

    pixel = rows * W + cols
    plane = R * W
    store = row_ok & col_ok
    out = out_ptr + b * 3 * plane + pixel
    tl.store(out, acc0, mask=store)
    tl.store(out + plane, acc1, mask=store)
    tl.store(out + 2 * plane, acc2, mask=store)


@triton.jit(do_not_specialize=["NPER", "KW", "R", "W", "ROW0", "Y0", "s_h_bits", "s_w_bits", "cut_bits"])
def backward_kernel(
    means_ptr,
    chol_ptr,
    colors_ptr,
    grad_ptr,
    row_start_ptr,
    row_stop_ptr,
    col_start_ptr,
    col_stop_ptr,
    grad_means_ptr,
    grad_chol_ptr,
    grad_colors_ptr,
    longest_ptr,
    NPER,
    KW,
    R,
    W,
    ROW0,
    Y0,
    s_h_bits,
    s_w_bits,
    cut_bits,
    BLOCK: tl.constexpr,
    F64: tl.constexpr,
):
    """Gradients of sum(grad * render) for a block of Gaussians; each lane loops over the output pixels whose
    neighbourhood holds its Gaussian (rows [row_start, row_stop) of its lattice row, likewise for columns). The
    loops run to the longest runs, read from `longest_ptr` (2 int32 on the device: rows, columns), so the host
    never waits for them.

    With w = exp(-m/2) and G = sum_ch g_ch c_ch: dm = -w G / 2, gz2 = 2 dm z2, gz1 = 2 dm z1 - gz2 l21 / l22;
    then d/d(mean_x) = -gz1 / l11, d/dl11 = -gz1 z1 / l11, d/d(mean_y) = -gz2 / l22, d/dl21 = -gz2 z1 / l22,
    d/dl22 = -gz2 z2 / l22 and d/dc_ch = g_ch w.
    """
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    b = tl.program_id(1)
    in_field = n < NPER
    lat_r = n // KW
    lat_c = n % KW
    rs = tl.load(row_start_ptr + lat_r, mask=in_field, other=0)
    re = tl.load(row_stop_ptr + lat_r, mask=in_field, other=0)
    cs = tl.load(col_start_ptr + lat_c, mask=in_field, other=0)
    ce = tl.load(col_stop_ptr + lat_c, mask=in_field, other=0)
    g = b * NPER + n
    mx = tl.load(means_ptr + 2 * g, mask=in_field, other=0.0)
    my = tl.load(means_ptr + 2 * g + 1, mask=in_field, other=0.0)
    l11 = tl.load(chol_ptr + 3 * g, mask=in_field, other=1.0)
    l21 = tl.load(chol_ptr + 3 * g + 1, mask=in_field, other=0.0)
    l22 = tl.load(chol_ptr + 3 * g + 2, mask=in_field, other=1.0)
    c0 = tl.load(colors_ptr + 3 * g, mask=in_field, other=0.0)
    c1 = tl.load(colors_ptr + 3 * g + 1, mask=in_field, other=0.0)
    c2 = tl.load(colors_ptr + 3 * g + 2, mask=in_field, other=0.0)
    valid = in_field & (l11 > 0) & (l22 > 0)
    l11 = tl.where(valid, l11, 1.0)
    l22 = tl.where(valid, l22, 1.0)
    s_h = _f64(s_h_bits)
    s_w = _f64(s_w_bits)
    cut64 = _f64(cut_bits)
    if F64:
        cut = cut64
    else:
        cut = cut64.to(tl.float32)

    g_mx = tl.zeros([BLOCK], dtype=mx.dtype)
    g_my = tl.zeros([BLOCK], dtype=mx.dtype)
    g_l11 = tl.zeros([BLOCK], dtype=mx.dtype)
    g_l21 = tl.zeros([BLOCK], dtype=mx.dtype)
    g_l22 = tl.zeros([BLOCK], dtype=mx.dtype)
    g_c0 = tl.zeros([BLOCK], dtype=mx.dtype)
    g_c1 = tl.zeros([BLOCK], dtype=mx.dtype)
    g_c2 = tl.zeros([BLOCK], dtype=mx.dtype)
    plane = R * W
    RMAX = tl.load(longest_ptr)
    CMAX = tl.load(longest_ptr + 1)
    for i in range(0, RMAX):
        r = rs + i
        r_ok = valid & (r < re)
        ddy = (_sample(r + ROW0, s_h, F64) - Y0) - my
        for j in range(0, CMAX):
            c = cs + j
            ok = r_ok & (c < ce)
            z1 = _div(_sample(c, s_w, F64) - mx, l11, F64)
            z2 = _div(ddy - l21 * z1, l22, F64)
            m = z1 * z1 + z2 * z2
            keep = ok & (m <= cut)
            w = tl.where(keep, tl.exp(-0.5 * m), 0.0)
            at = grad_ptr + b * 3 * plane + r * W + c
            go0 = tl.load(at, mask=keep, other=0.0)
            go1 = tl.load(at + plane, mask=keep, other=0.0)
            go2 = tl.load(at + 2 * plane, mask=keep, other=0.0)
            g_c0 += go0 * w
            g_c1 += go1 * w
            g_c2 += go2 * w
            dm = -0.5 * w * (go0 * c0 + go1 * c1 + go2 * c2)
            gz2 = 2.0 * dm * z2
            gz1 = 2.0 * dm * z1 - gz2 * l21 / l22
            g_mx -= gz1 / l11
            g_l11 -= gz1 * z1 / l11
            g_my -= gz2 / l22
            g_l21 -= gz2 * z1 / l22
            g_l22 -= gz2 * z2 / l22

    tl.store(grad_means_ptr + 2 * g, g_mx, mask=in_field)
    tl.store(grad_means_ptr + 2 * g + 1, g_my, mask=in_field)
    tl.store(grad_chol_ptr + 3 * g, g_l11, mask=in_field)
    tl.store(grad_chol_ptr + 3 * g + 1, g_l21, mask=in_field)
    tl.store(grad_chol_ptr + 3 * g + 2, g_l22, mask=in_field)
    tl.store(grad_colors_ptr + 3 * g, g_c0, mask=in_field)
    tl.store(grad_colors_ptr + 3 * g + 1, g_c1, mask=in_field)
    tl.store(grad_colors_ptr + 3 * g + 2, g_c2, mask=in_field)
