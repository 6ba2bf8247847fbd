"""How the fast convolution kernels are shaped: the constants and rules that every
fast variant in ``conv_rows.py`` and ``conv_weight_grad.py`` is built with, and the
one test of whether a convolution gets them (:func:`fast_path_applies`).

Why kernels specialised per shape
---------------------------------
LLVM vectorises the innermost loop only, and only unrolls loops whose trip counts it
knows. Each fast kernel is built by a factory for one (filters, kernel_h, kernel_w):
those numbers are constants inside it, so the loops over filters and kernel taps
unroll completely and the loop over output columns becomes the innermost one, which
LLVM vectorises (16 float32 / 8 float64 columns per AVX-512 instruction). The input
channel count stays a run-time loop: unrolling it too multiplies compile time for
little gain. Factories are cached (one compilation per shape and dtype per process)
and use ``cache=True``: Numba keys a closure's disk-cache entry by the values it
closes over, so a second process loads every shape from disk.

``FASTMATH`` (``kernels/common.py``) lets LLVM fuse multiply-adds and reorder sums; it
leaves out 'nnan' and 'ninf', so a NaN or Inf in the input still reaches the output.
"""

from numbacnn.kernels.common import FASTMATH
from numbacnn.shapes import fft_size

# Register blocking: the forward kernel's inner loop (rows x a block of filters x
# kernel_h * kernel_w taps, one FMA each) must stay within LLVM's unrolling budget,
# or LLVM neither unrolls nor vectorises it.
MAX_UNROLLED_TAPS = 100
# Fewer filters than this gain little from blocking; leaving them to the general
# kernels also keeps the random-shape tests from compiling a kernel per shape.
MIN_FILTERS = 4
VECTOR_BYTES = 64  # one AVX-512 register: forward rows are computed in whole vectors of columns

BUILT_KERNELS = []  # every kernel the factories built in this process (for cache stats)

# Grad-weight splits its sum into this many float64 partial sums (fewer when there are
# fewer rows or images), whatever the thread count: the partials, and their sum, are
# then the same with 1 thread or 16, so a trial gives the same weights in a 1-thread
# sweep worker and in a 2-thread process (with one partial per thread, 5x5 trials of
# the sweep ended 0.2-0.3 points apart). Threads share the chunks out.
GRAD_WEIGHT_CHUNKS = 16


def fast_path_applies(filters, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, groups):
    """True when the register-blocked kernels handle this convolution: stride 1,
    dilation 1, groups 1, at least ``MIN_FILTERS`` filters (output channels; input
    channels for grad-input) and a kernel whose unrolled body fits the budget."""
    return (stride_h == 1 and stride_w == 1 and dilation_h == 1 and dilation_w == 1 and groups == 1
            and MIN_FILTERS <= filters and 2 * kernel_h * kernel_w <= MAX_UNROLLED_TAPS)


def unrolled_body_budget(kernel_h, kernel_w):
    """Multiply-adds per column vector that an unrolled forward body may hold and still
    vectorise. 3x3 bodies of 72-90 vectorise; 5x5 and 7x7 bodies of 98-100 did not
    (8 and 5 GFLOP/s, one thread) while bodies of 49-50 did (64 and 36 GFLOP/s): a
    larger kernel's taps load more distinct input rows, so LLVM gives up sooner. (Such
    kernels now take the kernel-row body, ``kernel_rows_outside``, and its own budget.)"""
    return MAX_UNROLLED_TAPS if kernel_h * kernel_w <= 9 else MAX_UNROLLED_TAPS // 2


def forward_fastmath(kernel_h, kernel_w):
    """Fast-math flags of the forward correlation kernels: kernels larger than 3x3 are
    compiled without 'reassoc': vectorised, the same 5x5 kernel compiled in this
    process and loaded from Numba's disk cache rounded differently
    (``kernels/linking.py`` keeps the 3x3 ones identical, not these). Their loop
    vectorises over columns, so it needs no reassociation (same speed, measured)."""
    return FASTMATH if kernel_h * kernel_w <= 9 else FASTMATH - {"reassoc"}


# The widest kernel row the whole-plane grad-weight body spells out (one named
# accumulator per tap and filter: conv_weight_grad._kernel_row_dots).
MAX_PLANE_KERNEL_WIDTH = 7


def weight_gradient_by_planes(kernel_h, kernel_w):
    """True when ``conv_weight_grad.weight_gradient_kernel`` sums whole planes, one
    kernel row at a time (``conv_weight_grad._weight_gradient_planes_kernel``), instead of
    one dot product per output row and tap: kernels larger than 3x3 and at most
    ``MAX_PLANE_KERNEL_WIDTH`` wide. (3x3 keeps its row dot products, and the fused 3x3
    path its own whole-plane kernel: their sums stay bit for bit what they were.)"""
    return kernel_h * kernel_w > 9 and kernel_w <= MAX_PLANE_KERNEL_WIDTH


def kernel_rows_outside(kernel_h, kernel_w):
    """True when the forward row kernels loop over kernel rows outside the column loop
    (``conv_rows._accumulate_rows_by_kernel_row``): kernels larger than 3x3. Their
    whole-kernel body fits LLVM's budget only for one or two rows of one filter."""
    return kernel_h * kernel_w > 9


# The kernel-row body (kernels larger than 3x3) unrolls rows x filter block x kernel_w
# FMAs per column vector. Measured (float32, one thread, 10 filters, alternating in one
# process): rows of two or more vectors ran fastest with 4 rows x 2 filters for 5x5
# (40 FMAs: 67 GFLOP/s at 28 wide, against 42 for the whole-kernel body) and 2 x 2 or
# 1 x 2 for 7x7 (4 x 2, 56 FMAs, vectorised only partly: 30); one-vector rows (14 wide)
# with 1 row x 5 filters (25 and 35 FMAs: 81 and 51 GFLOP/s, against 30 and 23).
KERNEL_ROW_BODY_BUDGET = 40
KERNEL_ROW_ONE_VECTOR_BUDGET = 35
KERNEL_ROW_FILTER_BLOCK = 2  # filters per block on rows of two or more vectors
# The functional kernel (correlation_kernel: two rows, run-time widths) ran fastest with
# 2 rows x 5 filters for 5x5 (50 FMAs: 66 GFLOP/s at 28 wide, against 53 for 2 x 2) and
# 2 x 2 for 7x7 (28 FMAs: 43; 2 x 5, 70 FMAs, fell to 17).
KERNEL_ROW_PAIR_BUDGET = 50


# The plane body (conv_rows._accumulate_planes_by_kernel_row: kernels larger than 3x3 on
# rows of two or more vectors) runs one long loop over a task's flattened rows with a
# block of filters x kernel_w FMAs per column vector. Measured (float32, one thread,
# Tiny VGG's 10 filters, 28 wide, alternating in one process): 5 filters x whole plane
# 82 GFLOP/s for 5x5 (the kernel-row body's best block, 4 rows x 2 filters: 65-67) and
# 73 for 7x7 (64); 14 rows per task 81 and 69; 10 filters 53-59; C = 1: 46 against 29.
# Rows of one vector (14 wide) keep the kernel-row body (81 against 76: the padded row,
# 18 wide, wastes more columns than the rounding to one vector, 16).
PLANE_FILTER_BLOCK = 5
# A task's sums (filters x rows x padded width) stay within this many bytes (about L1):
# the whole 28x28 plane for 5x5 and 7x7 (36 and 38 KB), fewer rows of wider planes.
PLANE_SUMS_BYTES = 40 * 1024


def planes_outside(kernel_h, kernel_w, vectors_per_row):
    """True when ``conv_rows.conv_rows_kernel`` sums flattened planes
    (``conv_rows._accumulate_planes_by_kernel_row``): kernels larger than 3x3 whose
    output rows are two or more 64-byte vectors."""
    return kernel_rows_outside(kernel_h, kernel_w) and vectors_per_row >= 2


# 1-D Winograd F(m, K) down the columns (conv_rows._conv_winograd_kernel,
# conv_weight_grad.weight_gradient_winograd_kernel, conv_winograd.py): m + K - 1
# multiply-adds per m output rows and kernel column instead of m * K. Measured (float32,
# one thread, Tiny VGG's 10 -> 10 filters, batch 64, 28 wide, against the plane body):
# 5x5 forward 3.07 ms direct, 2.64 with F(2, 5), 1.91 with F(4, 5); 7x7 6.40 direct,
# 5.44 with F(2, 7) (F(4, 7) needs the points +-3: 10x the rounding error, not used).
# Not taken (measured with F(2, 5) and F(2, 7)): 14 wide (rows of one float32 vector,
# the kernel-row body), 5x5 forward Winograd 0.90 ms against direct 0.78, 7x7 1.49
# against 1.41, and no gain in the steps' backward; one input channel (a first layer),
# 5x5 forward 0.54 against 0.46, grad-weight 0.85 against 0.46. Nor 3x3 (tenth session,
# the whole plain step with its 28x28 3x3 layers' forward and grad-input on F(m, 3),
# alternating in one process): F(4, 3) 5.01 ms against 4.21 direct, F(2, 3) 5.19
# against 4.13; the 3x3 whole-kernel body does 3 multiply-adds per output and kernel
# column with no transforms to pay for.
WINOGRAD_KERNEL_SIZES = (5, 7)
WINOGRAD_TILE_ROWS = {5: 4, 7: 2}  # output rows per tile m of F(m, K), by kernel size K
WINOGRAD_ENABLED = True  # switched off by tests and benchmarks that compare with the direct body


def winograd_outputs(kernel_h: int, kernel_w: int, out_height: int, out_width: int, itemsize: int,
                     channels: int) -> int:
    """Output rows per tile of the 1-D Winograd F(m, KH) that ``conv_rows.conv_rows_kernel``
    and the fused grad-weight sum with, or 0 where they keep the direct bodies:
    Winograd for square 5x5 and 7x7 kernels whose output rows are two or more vectors
    (the plane body's shapes, :func:`planes_outside`), whose output height is whole
    tiles, and with ``MIN_FILTERS`` or more input channels (``channels``; 0, not known,
    counts as too few). With one input channel the transforms cost more than they save
    (figures above)."""
    vectors = (out_width * itemsize + VECTOR_BYTES - 1) // VECTOR_BYTES
    if (WINOGRAD_ENABLED and kernel_h == kernel_w and kernel_h in WINOGRAD_KERNEL_SIZES
            and planes_outside(kernel_h, kernel_w, vectors) and out_height % WINOGRAD_TILE_ROWS[kernel_h] == 0
            and channels >= MIN_FILTERS):
        return WINOGRAD_TILE_ROWS[kernel_h]
    return 0


def winograd_on_padded(padded_shape: tuple, itemsize: int, kernel_h: int, kernel_w: int) -> bool:
    """:func:`winograd_outputs` asked of a stride-1 correlation of a zero-padded input
    (N, C, OH + KH - 1, OW + KW - 1) with a KH x KW kernel: what the fused ops
    (``fused/bordered_ops.py``) and the functional API (``conv._correlate``,
    ``conv.conv2d_backward_weight``) both ask."""
    _, channels, height, width = padded_shape
    return winograd_outputs(kernel_h, kernel_w, height - kernel_h + 1, width - kernel_w + 1, itemsize, channels) > 0


# The FFT forward and input gradient (kernels/cpu/conv_fft.py): largest transform, and
# how many times its estimated multiply-adds must undercut the direct sum's (its
# butterflies and products run at a fraction of the direct kernels' rate, and the
# direct 5x5 sums have 1-D Winograd). The estimate's ratio for 10 -> 10 channels: 28x28
# 7x7 8.1 (whole 7x7 steps 0.91 and 0.93 of the direct kernels' in one process), 28x28
# 5x5 4.1 and 14x14 5x5 4.5 (the 5x5 step 1.41 and 1.47 with both), 14x14 7x7 2.0
# (1.8x slower alone).
FFT_MAX_SIZE = 32
FFT_ADVANTAGE = 5.0
FFT_ENABLED = True  # switched off by tests and benchmarks that compare with the direct kernels


def fft_size_for(filters: int, channels: int, kernel_h: int, kernel_w: int, in_height: int, in_width: int,
                 pad_h: int, pad_w: int, batch: int) -> int:
    """N of the N x N transforms (``shapes.fft_size``) the fused forward and input
    gradient of a stride-1 conv of ``batch`` images use (``kernels/cpu/conv_fft.py``),
    or 0 where the direct (or Winograd) kernels run: kernels of 25 taps or more,
    ``MIN_FILTERS`` or more filters and input channels, N <= ``FFT_MAX_SIZE`` (N covers
    each axis's input and padding, and the kernel: its wrapped taps must fit), and an
    estimate of the multiply-adds per image (the products, the planes' transforms, and
    the F x C kernels' transforms shared by the batch) ``FFT_ADVANTAGE`` times below
    the direct sum's: of Tiny VGG's layers, the 28x28 7x7 one, at a batch of 16 or more."""
    if not FFT_ENABLED or kernel_h * kernel_w < 25 or min(filters, channels) < MIN_FILTERS or batch < 1:
        return 0
    n = max(fft_size(in_height, pad_h), fft_size(in_width, pad_w), fft_size(max(kernel_h, kernel_w), 0))
    if n > FFT_MAX_SIZE:
        return 0
    out_h, out_w = in_height + 2 * pad_h - kernel_h + 1, in_width + 2 * pad_w - kernel_w + 1
    direct = filters * channels * kernel_h * kernel_w * out_h * out_w
    products = 4 * filters * channels * n * (n // 2 + 1)
    plane = 5 * n * n * (n.bit_length() - 1) // 2  # a radix-2 transform of one plane
    transforms = (filters + channels) * plane + filters * channels * plane // batch
    return n if FFT_ADVANTAGE * (products + transforms) < direct else 0


def plane_blocking(filters, out_height, in_width, itemsize):
    """(filter_block, rows_per_task) of the plane body (:func:`planes_outside`): up to
    ``PLANE_FILTER_BLOCK`` filters (a divisor of ``filters``), and the output rows split
    into equal blocks of an even number of rows (2x2 pool windows stay inside a task)
    whose sums fit ``PLANE_SUMS_BYTES`` (the whole plane when it fits)."""
    block = _largest_divisor(filters, PLANE_FILTER_BLOCK)
    most_rows = max(2, PLANE_SUMS_BYTES // (filters * in_width * itemsize))
    blocks = (out_height + most_rows - 1) // most_rows
    rows = (out_height + blocks - 1) // blocks
    if blocks > 1 and rows % 2:
        rows += 1
    return block, min(rows, out_height)


def _largest_divisor(filters, limit):
    """The largest divisor of ``filters`` that is at most ``limit`` (at least 1)."""
    for block in range(min(filters, max(limit, 1)), 0, -1):
        if filters % block == 0:
            return block
    return 1


def filter_block_size(filters, kernel_h, kernel_w):
    """Filters accumulated together by the functional forward (two rows at a time): the
    largest divisor of ``filters`` whose 2 rows x block x taps FMAs stay within
    ``unrolled_body_budget`` (5 for Tiny VGG's 10 filters and 3x3 kernels: 90 FMAs per
    column vector); for larger kernels (the kernel-row body, kh looped outside) 2 rows x
    block x kernel_w within ``KERNEL_ROW_PAIR_BUDGET`` (5 for 5x5, 2 for 7x7)."""
    if kernel_rows_outside(kernel_h, kernel_w):  # 2 rows x block x kernel_w FMAs per column vector
        return _largest_divisor(filters, KERNEL_ROW_PAIR_BUDGET // (2 * kernel_w))
    budget = unrolled_body_budget(kernel_h, kernel_w)
    for block in range(filters, 0, -1):
        if filters % block == 0 and 2 * block * kernel_h * kernel_w <= budget:
            return block
    return 1


def row_blocking(filters, kernel_h, kernel_w, out_height, vectors_per_row):
    """(rows_together, filter_block, rows_per_task) of ``conv_rows.conv_rows_kernel``.

    The unrolled body (rows_together x filter_block x kernel_h * kernel_w FMAs per
    column vector) must stay within ``unrolled_body_budget`` or LLVM neither unrolls
    nor vectorises it (5x5: 2 rows x 1 filter, 64 GFLOP/s, against 8 for 4 x 1;
    7x7: 1 x 1, 36 against 5 for 2 x 1, one thread). Measured (float32, 2 threads, Tiny
    VGG's 10 filters, 3x3): rows of two or more vectors run fastest with 4 rows x 2
    filters (201 GFLOP/s at 28 wide, 238 at 62 wide, against 148 and 210 for 2 rows x
    5 filters); one-vector rows (14 wide) with 1 row x 10 filters (197 against 128). A
    task covers an even number of rows, so that 2x2 pool windows never straddle two
    tasks.
    """
    if kernel_rows_outside(kernel_h, kernel_w):
        return _kernel_row_blocking(filters, kernel_w, out_height, vectors_per_row)
    taps = kernel_h * kernel_w
    budget = unrolled_body_budget(kernel_h, kernel_w)
    rows = 1 if vectors_per_row <= 1 else 4
    while rows > 1 and (rows * taps > budget or rows > out_height):
        rows //= 2
    block = 1
    for candidate in range(filters, 0, -1):
        if filters % candidate == 0 and rows * candidate * taps <= budget:
            block = candidate
            break
    per_task = rows if rows % 2 == 0 else 2 * rows
    return rows, block, min(per_task, out_height)


def _kernel_row_blocking(filters, kernel_w, out_height, vectors_per_row):
    """:func:`row_blocking` for the kernel-row body (``kernel_rows_outside``): rows x
    filter block x kernel_w FMAs per column vector within ``KERNEL_ROW_BODY_BUDGET``
    (one-vector rows: 1 row, as many filters as ``KERNEL_ROW_ONE_VECTOR_BUDGET`` holds).
    ``conv_rows.conv_rows_kernel`` runs rows of two or more vectors on the plane body
    instead (:func:`planes_outside`), so only the one-vector blocking is used there."""
    if vectors_per_row <= 1:
        rows = 1
        block = _largest_divisor(filters, KERNEL_ROW_ONE_VECTOR_BUDGET // kernel_w)
    else:
        block = _largest_divisor(filters, min(KERNEL_ROW_FILTER_BLOCK, KERNEL_ROW_BODY_BUDGET // kernel_w))
        rows = 4
        while rows > 1 and (rows * block * kernel_w > KERNEL_ROW_BODY_BUDGET or rows > out_height):
            rows //= 2
    per_task = rows if rows % 2 == 0 else 2 * rows
    return rows, block, min(per_task, out_height)
