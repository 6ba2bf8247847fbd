"""1-D Winograd transforms down the columns: fewer multiply-adds for 5x5 and 7x7 kernels.

A stride-1 correlation of one input column d with one kernel column g (r taps) gives
m outputs per tile of n = m + r - 1 inputs::

    y[i] = sum over j < r of g[j] * d[i + j],        i < m          (m * r multiply-adds)

Winograd's minimal filtering algorithm F(m, r) computes the same m outputs with n
multiplications, in three steps (Lavin and Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016)::

    y = AT @ ((G @ g) * (BT @ d))          AT (m, n), G (n, r), BT (n, n)

In a convolution layer the products are summed over input channels and kernel
columns *before* AT is applied, so the transformed input ``BT @ d`` (once per tile of
input rows, shared by every filter and kernel column) and the transformed weights
``G @ g`` (once per call) cost little against the sum itself: ``n / m`` multiply-adds
per output row and kernel column instead of ``r``. F(4, 5): 2 instead of 5; F(2, 7):
4 instead of 7. The kernel's columns are still summed directly.

Why down the columns: a tile is m output rows, and its transforms combine whole
input rows (``BT @ d`` for every column at once), so every loop here, and the sum in
``conv_rows._conv_winograd_kernel``, runs along contiguous rows and vectorises. Tiles
along a row would need stride-m reads and writes (tried first, with F(2, 5): the
transforms ran scalar).

How the matrices are made (Toom-Cook)
-------------------------------------
Evaluate at n points: n - 1 finite ones (:data:`POINTS`) and infinity (a polynomial's
"value at infinity" is its leading coefficient). With ``V`` the (n, n) evaluation
matrix of polynomials of degree n - 1 at those points, a linear convolution s = g * h
(g of r coefficients, h of m) is ``s = inv(V) @ ((G @ g) * (A @ h))``, where G and A
evaluate g and h at the same points. Correlation is its transpose: for a fixed g,
h -> s is the (n, m) matrix ``S = inv(V) @ diag(G @ g) @ A``, and ``S.T`` maps d to
``y[i] = sum over j of g[j] * d[i + j]``, so ``y = A.T @ ((G @ g) * (inv(V).T @ d))``:
``AT = A.T`` and ``BT = inv(V).T``. :func:`winograd_matrices` builds them in exact
rational arithmetic (``fractions``), scales each row of BT to coprime integers (moving
the scale into G), and only then rounds them to float64.

The weight gradient uses the same identity read as a bilinear form: dotting both
sides with a tile of output gradients e gives, for kernel row kh, ``sum over i of
e[i] * d[i + kh] = sum over k of G[k, kh] * (AT.T @ e)[k] * (BT @ d)[k]`` (derived in
``conv_weight_grad.weight_gradient_winograd_kernel``), so the gradient rows are
transformed by AT.T and G is applied after the sum.

Rounding: the points 0, +-1, +-2 and +-1/2 (F(4, 5) and F(2, 7) both use all 7) keep
the transforms' entries small. Measured on Tiny VGG's 28x28 10 -> 10 layer (float32,
batch 64, against the float64 reference), the largest forward error is 1.0-1.1e-6 of
the largest output, as the direct sums'; one training step of Tiny VGG 5x5 / 7x7
(batch 16) gives weight gradients within 4-9e-7 (relative L2) of the float64 model's,
against the direct sums' 3-6e-7 (F(4, 7), with +-3 as well, gave 1.2e-5: not used).
A NaN or Inf in the input reaches every output row of each tile that reads it (2
tiles for F(4, 5), 4 for F(2, 7)), in the columns whose window holds it (an Inf
becomes NaN: the transforms subtract), where the direct kernels keep it to the
outputs whose window holds it.

The kernels that use these transforms sit beside their direct cousins:
``conv_rows._conv_winograd_kernel`` (forward and grad-input) and
``conv_weight_grad.weight_gradient_winograd_kernel``. This module holds the
transforms only; ``conv_tuning.winograd_outputs`` says where they run.
"""

from fractions import Fraction
from functools import lru_cache
from math import gcd, lcm

import numpy as np
from numba import literally, njit

from numbacnn.kernels.common import FASTMATH
from numbacnn.kernels.cpu.conv_tuning import WINOGRAD_TILE_ROWS

# The finite evaluation points, in the order they are used (n - 1 of them for F(m, r)).
POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2))


def _evaluation_rows(points: tuple, size: int) -> list:
    """(len(points) + 1, size) exact matrix evaluating a polynomial of ``size``
    coefficients (lowest first) at each point and, last, at infinity."""
    rows = [[p ** i for i in range(size)] for p in points]
    rows.append([Fraction(int(i == size - 1)) for i in range(size)])
    return rows


def _inverse(matrix: list) -> list:
    """Exact inverse of a square matrix of Fractions (Gauss-Jordan)."""
    size = len(matrix)
    work = [list(row) + [Fraction(int(i == j)) for j in range(size)] for i, row in enumerate(matrix)]
    for col in range(size):
        pivot = next(row for row in range(col, size) if work[row][col] != 0)
        work[col], work[pivot] = work[pivot], work[col]
        scale = work[col][col]
        work[col] = [value / scale for value in work[col]]
        for row in range(size):
            if row != col and work[row][col] != 0:
                factor = work[row][col]
                work[row] = [a - factor * b for a, b in zip(work[row], work[col])]
    return [row[size:] for row in work]


@lru_cache(maxsize=None)
def exact_winograd_matrices(m: int, r: int) -> tuple[list, list, list]:
    """(AT, G, BT) of F(m, r) as lists of lists of Fractions: AT (m, n), G (n, r),
    BT (n, n), n = m + r - 1, such that ``AT @ ((G @ g) * (BT @ d))`` is the
    correlation of d (n,) with g (r,) exactly. Each row of BT is scaled to coprime
    integers and G's row divided by the same factor."""
    n = m + r - 1
    if n - 1 > len(POINTS):
        raise ValueError(f"F({m}, {r}) needs {n - 1} finite points, POINTS has {len(POINTS)}")
    points = POINTS[:n - 1]
    a_rows = _evaluation_rows(points, m)           # (n, m): h at each point
    g_rows = _evaluation_rows(points, r)           # (n, r): g at each point
    interpolate = _inverse(_evaluation_rows(points, n))   # (n, n): values -> coefficients of s
    at = [[a_rows[j][i] for j in range(n)] for i in range(m)]
    bt = [[interpolate[j][k] for j in range(n)] for k in range(n)]  # inv(V).T
    g = [list(row) for row in g_rows]
    for k in range(n):
        denominators = 1
        for value in bt[k]:
            denominators = lcm(denominators, value.denominator)
        numerators = 0
        for value in bt[k]:
            numerators = gcd(numerators, (value * denominators).numerator)
        scale = Fraction(denominators, numerators)
        bt[k] = [value * scale for value in bt[k]]
        g[k] = [value / scale for value in g[k]]
    return at, g, bt


def winograd_matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AT, G, BT) of F(m, r) rounded to float64 arrays: AT (m, n), G (n, r), BT (n, n)."""
    at, g, bt = exact_winograd_matrices(m, r)
    return (np.array(at, dtype=np.float64), np.array(g, dtype=np.float64), np.array(bt, dtype=np.float64))


def constant_rows(matrix: np.ndarray, dtype: type) -> tuple:
    """A matrix as a tuple of row tuples of ``dtype`` scalars: how the kernels receive
    the transforms. A tuple is a value, not memory: inside a parallel loop LLVM keeps
    its entries out of the loop (an array argument was reloaded every vector, since a
    store to the output might change it as far as LLVM knows: 2.5x slower, measured),
    and a kernel that closes over it still loads from Numba's disk cache (one that
    closed over an array or a jitted function recompiled in every process)."""
    return tuple(tuple(dtype(value) for value in row) for row in matrix)


def kernel_transforms(kernel_h: int, out_height: int, itemsize: int) -> tuple[int, tuple, tuple, tuple]:
    """(m, AT, G, BT) for a kernel factory of F(m, KH), m = ``WINOGRAD_TILE_ROWS[KH]``:
    AT and BT as rows of the data's type (itemsize 4: float32, else float64), G as
    float64 rows (the weights are transformed in float64), all :func:`constant_rows`.
    Raises ValueError unless the output height is whole tiles of m rows
    (``conv_tuning.winograd_outputs`` decides where the kernels run)."""
    outputs = WINOGRAD_TILE_ROWS[kernel_h]
    if out_height % outputs:
        raise ValueError(f"F({outputs}, {kernel_h}) needs an output height of whole tiles, got {out_height} rows "
                         "(conv_tuning.winograd_outputs decides where this kernel runs)")
    at, g, bt = winograd_matrices(outputs, kernel_h)
    dtype = np.float32 if itemsize == 4 else np.float64
    return outputs, constant_rows(at, dtype), constant_rows(g, np.float64), constant_rows(bt, dtype)


@njit(inline="always", fastmath=FASTMATH - {"reassoc"})
def transform_weights(transformed, w, g):
    """transformed (n, F, C, KW) = G @ w's kernel columns: transformed[k, f, c, kw] =
    sum over j of g[k][j] * w[f, c, j, kw];  w (F, C, r, KW), g (n, r) float64 rows
    (:func:`constant_rows`; float64 sums, rounded to transformed's type once)."""
    for k in range(transformed.shape[0]):
        for f in range(w.shape[0]):
            for c in range(w.shape[1]):
                for kw in range(w.shape[3]):
                    s = 0.0
                    for j in range(w.shape[2]):
                        s += g[k][j] * w[f, c, j, kw]
                    transformed[k, f, c, kw] = s


@njit(cache=True, inline="never", fastmath=FASTMATH - {"reassoc"})
def transform_input_rows(d, x, n, c, top_row, tiles, bt, outputs):
    """d (n_points, >= tiles * W) = BT @ each column of each tile of input rows, for
    F(outputs, KH) (bt: BT's rows, :func:`constant_rows`; x (N, C, H, W))::

        d[k, t * W + col] = sum over j < n_points of BT[k, j] *
                            x[n, c, top_row + outputs * t + j, col]

    (tile t: input rows outputs * t .. outputs * t + n_points - 1 from top_row, the
    input already zero-padded). Whole input rows are combined, so the loop over columns
    reads and writes contiguous memory and vectorises. Compiled per ``outputs``
    (``literally``) and per n_points (the tuple's length), so the loops over k and j
    have constant trip counts and unroll. BT's zero entries are multiplied anyway: 0 * x
    cannot be dropped while a NaN or Inf must reach the output, and a test on them
    inside the loop stopped it vectorising."""
    literally(outputs)
    points = len(bt)
    width = x.shape[3]
    for k in range(points):
        row = bt[k]
        for t in range(tiles):
            for col in range(width):
                s = x.dtype.type(0)
                for j in range(points):
                    s += row[j] * x[n, c, top_row + outputs * t + j, col]
                d[k, t * width + col] = s


@njit(inline="always", fastmath=FASTMATH - {"reassoc"})
def accumulate_transformed(products, d, gw, c, length, filters, kernel_w, filter_block, points):
    """products (n_points, F, >= length) += channel c's transformed weights times its
    transformed input, every kernel column: products[k, f, i] += gw[k, f, c, kw] *
    d[k, i + kw] for i < length (position i = tile * in_width + column). Inlined into
    ``conv_rows._conv_winograd_kernel`` with its counts compiled in: the loops over a
    block of filters and kernel columns unroll and the loop over positions vectorises,
    filter_block x KW FMAs per vector, as the plane body
    (``conv_rows._accumulate_planes_by_kernel_row``) on the direct input."""
    for k in range(points):
        for first_filter in range(0, filters, filter_block):
            for i in range(length):
                for f in range(first_filter, first_filter + filter_block):
                    s = products[k, f, i]
                    for kw in range(kernel_w):
                        s += gw[k, f, c, kw] * d[k, i + kw]
                    products[k, f, i] = s


@njit(cache=True, inline="never", fastmath=FASTMATH - {"reassoc"})
def transform_output_rows(sums, products, b, tiles, at):
    """sums (F, outputs * tiles, W) = b[f] + AT @ each tile's products, for F(outputs,
    KH) (at: AT's rows, :func:`constant_rows`; outputs = len(at))::

        sums[f, outputs * t + i, col] = b[f] + sum over k of AT[i, k] *
                                        products[k, f, t * W + col]

    (columns past the output width hold garbage: never stored, and the pool drops
    their windows). Loop counts from the tuple's shape, as :func:`transform_input_rows`."""
    outputs = len(at)
    points = len(at[0])
    width = sums.shape[2]
    for f in range(sums.shape[0]):
        for t in range(tiles):
            for i in range(outputs):
                row = at[i]
                for col in range(width):
                    s = sums.dtype.type(b[f])
                    for k in range(points):
                        s += row[k] * products[k, f, t * width + col]
                    sums[f, outputs * t + i, col] = s


@njit(cache=True, inline="never", fastmath=FASTMATH - {"reassoc"})
def transform_gradient_rows(e, dout, n, f, top, left, tiles, width, out_width, at):
    """The weight gradient's transform for F(outputs, KH) (at: AT's rows,
    :func:`constant_rows`; outputs = len(at)): e (n_points, >= tiles * width) = AT.T @
    each column of each tile of ``outputs`` gradient rows, on rows of the input's width::

        e[k, t * width + col] = sum over i < outputs of AT[i, k] *
                                dout[n, f, top + outputs * t + i, left + col]   (col < OW)
        e[k, t * width + col] = 0                                               (col >= OW)

    (the gradient's interior at (top, left) of a bordered buffer). The zero columns
    make a dot product of e with the transformed input over whole rows of ``width`` add
    only real outputs. Why the weight gradient takes AT.T: see
    ``conv_weight_grad.weight_gradient_winograd_kernel``."""
    outputs = len(at)
    points = len(at[0])
    for k in range(points):
        for t in range(tiles):
            for col in range(out_width):
                s = dout.dtype.type(0)
                for i in range(outputs):
                    s += at[i][k] * dout[n, f, top + outputs * t + i, left + col]
                e[k, t * width + col] = s
            for col in range(out_width, width):
                e[k, t * width + col] = 0
