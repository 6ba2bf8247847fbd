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
along a row would need stride-2 reads and writes (tried first: the transforms ran
scalar).

How the matrices are made (Toom-Cook)
-------------------------------------
Evaluate at n points: n - 1 finite ones (:data:`POINTS`) and infinity (a polynomial's
"value at infinity" is its leading coefficient). With ``V`` the (n, n) evaluation
matrix of polynomials of degree n - 1 at those points, a linear convolution s = g * h
(g of r coefficients, h of m) is ``s = inv(V) @ ((G @ g) * (A @ h))``, where G and A
evaluate g and h at the same points. Correlation is its transpose, so
``AT = A.T`` and ``BT = inv(V).T``. :func:`winograd_matrices` builds them in exact
rational arithmetic (``fractions``), scales each row of BT to coprime integers (moving
the scale into G), and only then rounds them to float64.

Rounding: the points 0, +-1, +-2 and +-1/2 (F(4, 5) and F(2, 7) both use all 7) keep
the transforms' entries small; measured on Tiny VGG's 10 -> 10 layers (float32,
against the float64 reference), the largest error is 1.0-1.1e-6 of the largest
output, as the direct sums' 1.0-1.1e-6, and a training step's weight gradients are
within 4-9e-7 (relative L2) of float64 against the direct sums' 3-6e-7 (F(4, 7), with
+-3 as well, gave 1.2e-5: not used). A NaN or Inf
in an input tile reaches every output of its tile (an Inf becomes NaN: the
transforms subtract), where the direct kernels keep it to the outputs whose window
holds it.

The kernels that use these transforms sit beside their direct cousins:
``conv_rows._conv_winograd_kernel`` (forward and grad-input) and
``conv_weight_grad.weight_gradient_winograd_kernel``. This module holds the
transforms only; ``conv_tuning.winograd_outputs`` says where they run.
"""

from fractions import Fraction
from functools import lru_cache
from math import gcd, lcm

import numpy as np
from numba import njit

from numbacnn.kernels.common import FASTMATH

# The finite evaluation points, in the order they are used (n - 1 of them for F(m, r)).
POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2))


def _evaluation_rows(points, size):
    """(len(points) + 1, size) exact matrix evaluating a polynomial of ``size``
    coefficients (lowest first) at each point and, last, at infinity."""
    rows = [[p ** i for i in range(size)] for p in points]
    rows.append([Fraction(int(i == size - 1)) for i in range(size)])
    return rows


def _inverse(matrix):
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
def exact_winograd_matrices(m, r):
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


def winograd_matrices(m, r):
    """(AT, G, BT) of F(m, r) rounded to float64 arrays: AT (m, n), G (n, r), BT (n, n)."""
    at, g, bt = exact_winograd_matrices(m, r)
    return (np.array(at, dtype=np.float64), np.array(g, dtype=np.float64), np.array(bt, dtype=np.float64))


@njit(inline="always", fastmath=FASTMATH - {"reassoc"})
def transform_weights(transformed, w, g):
    """transformed (n, F, C, KW) = G @ w's kernel columns: transformed[k, f, c, kw] =
    sum over j of g[k, j] * w[f, c, j, kw];  w (F, C, r, KW), g (n, r) (float64 sums,
    rounded to transformed's type once)."""
    for k in range(transformed.shape[0]):
        for f in range(w.shape[0]):
            for c in range(w.shape[1]):
                for kw in range(w.shape[3]):
                    s = 0.0
                    for j in range(w.shape[2]):
                        s += g[k, j] * w[f, c, j, kw]
                    transformed[k, f, c, kw] = s


@lru_cache(maxsize=None)
def input_transform_kernel(outputs, kernel_h, in_width, itemsize):
    """``transform_input_rows(d, x, n, c, top_row, tiles)`` for F(outputs, kernel_h):
    d (n_points, tiles * in_width) = BT @ each column of each tile of input rows::

        d[k, t * in_width + col] = sum over j < n_points of BT[k, j] *
                                   x[n, c, top_row + outputs * t + j, col]

    (tile t: input rows outputs * t .. outputs * t + n_points - 1 from top_row, the
    input already zero-padded). Whole input rows are combined, so the loop over columns
    reads and writes contiguous memory and vectorises.

    BT is a constant of this function, not an argument: the loops over k and j unroll
    and its entries become immediates. (Passed in as an array inside the kernel's
    parallel loop it was reloaded every vector, since a store to d might change it as
    far as LLVM knows: 2.5 times slower, measured.) A separate function, not inlined,
    so that the constant survives. Its zero entries are multiplied anyway: 0 * x cannot
    be folded while a NaN or Inf must reach the output, and a test on them inside the
    loop stopped it vectorising."""
    points = outputs + kernel_h - 1
    dtype = np.float32 if itemsize == 4 else np.float64
    bt = winograd_matrices(outputs, kernel_h)[2].astype(dtype)

    @njit(cache=True, inline="never", fastmath=FASTMATH - {"reassoc"})
    def transform_input_rows(d, x, n, c, top_row, tiles):
        for k in range(points):
            for t in range(tiles):
                for col in range(in_width):
                    s = x.dtype.type(0)
                    for j in range(points):
                        s += bt[k, j] * x[n, c, top_row + outputs * t + j, col]
                    d[k, t * in_width + col] = s

    return transform_input_rows


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


@lru_cache(maxsize=None)
def output_transform_kernel(outputs, kernel_h, in_width, itemsize):
    """``transform_output_rows(sums, products, b, tiles)`` for F(outputs, kernel_h):
    sums (F, outputs * tiles, in_width) = b[f] + AT @ each tile's products::

        sums[f, outputs * t + i, col] = b[f] + sum over k of AT[i, k] *
                                        products[k, f, t * in_width + col]

    (columns past the output width hold garbage and are never stored). AT is a
    constant of the function, as BT of :func:`input_transform_kernel`."""
    points = outputs + kernel_h - 1
    dtype = np.float32 if itemsize == 4 else np.float64
    at = winograd_matrices(outputs, kernel_h)[0].astype(dtype)

    @njit(cache=True, inline="never", fastmath=FASTMATH - {"reassoc"})
    def transform_output_rows(sums, products, b, tiles):
        for f in range(sums.shape[0]):
            for t in range(tiles):
                for i in range(outputs):
                    for col in range(in_width):
                        s = sums.dtype.type(b[f])
                        for k in range(points):
                            s += at[i, k] * products[k, f, t * in_width + col]
                        sums[f, outputs * t + i, col] = s

    return transform_output_rows


@lru_cache(maxsize=None)
def gradient_transform_kernel(outputs, kernel_h, width, out_width, itemsize):
    """``transform_gradient_rows(e, dout, n, f, top, left, tiles)`` for the weight
    gradient by F(outputs, kernel_h): e (n_points, >= tiles * width) = AT.T @ each
    column of each tile of ``outputs`` gradient rows, on rows of the input's width::

        e[k, t * width + col] = sum over i < outputs of AT[i, k] *
                                dout[n, f, top + outputs * t + i, left + col]   (col < OW)
        e[k, t * width + col] = 0                                               (col >= OW)

    (the gradient's interior at (top, left) of a bordered buffer). The zero columns
    make a dot product of e with the transformed input over whole rows of ``width``
    add only real outputs. Why the weight gradient takes AT.T: see
    ``conv_weight_grad.weight_gradient_winograd_kernel``. AT is a constant of the
    function, as BT of :func:`input_transform_kernel`."""
    points = outputs + kernel_h - 1
    dtype = np.float32 if itemsize == 4 else np.float64
    at = winograd_matrices(outputs, kernel_h)[0].astype(dtype)

    @njit(cache=True, inline="never", fastmath=FASTMATH - {"reassoc"})
    def transform_gradient_rows(e, dout, n, f, top, left, tiles):
        for k in range(points):
            for t in range(tiles):
                for col in range(out_width):
                    s = dout.dtype.type(0)
                    for i in range(outputs):
                        s += at[i, k] * dout[n, f, top + outputs * t + i, left + col]
                    e[k, t * width + col] = s
                for col in range(out_width, width):
                    e[k, t * width + col] = 0

    return transform_gradient_rows
