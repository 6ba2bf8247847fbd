"""Datasets and batching: Fashion-MNIST (default), MNIST, CIFAR-10, image folders.

Loaders read local files only; nothing is ever downloaded. Images come back as
uint8 arrays (N, C, H, W) with int64 labels (N,); :class:`Normalizer` turns a
batch into float32 ``(x / 255 - mean) / std`` per channel, and
:class:`BatchLoader` yields shuffled batches whose order depends only on
``(seed, epoch)``, so a resumed run sees exactly the batches an uninterrupted one
would.

Where the files are looked for (``fashion-mnist``): ``--data-dir`` if given, else
``$NUMBACNN_DATA`` (and ``$NUMBACNN_DATA/fashion-mnist``), else
``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package ``dataset-fashion-mnist``).
A folder the user named (``--data-dir`` or ``$NUMBACNN_DATA``) is used or refused,
never skipped for the system folder.

Every file is checked as it is read: a truncated or corrupt file, a label outside
the class list, an unreadable image or an empty class folder raises
:class:`numbacnn.errors.DatasetError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import gzip
import os
import pickle
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from numbacnn.errors import DatasetError, DatasetNotFoundError, ImageError

DATA_ENV = "NUMBACNN_DATA"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_SYSTEM_DIR = Path("/usr/share/datasets/mnist")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DATASETS = ("fashion-mnist", "mnist", "cifar10", "imagefolder")

# IDX file stems (the standard names); each may end in .gz or not.
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """Images and labels of one split.

    Attributes
    ----------
    images : uint8 array (N, C, H, W)
    labels : int64 array (N,)
    classes : tuple of str
        Class names; ``labels`` index into it.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"Dataset: images must be (N, C, H, W), got shape {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"Dataset: labels must be ({self.images.shape[0]},) to match images, got {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: np.ndarray) -> "Dataset":
        return Dataset(self.images[indices], self.labels[indices], self.classes)


@dataclass
class DatasetSplits:
    """``train`` and ``test`` splits of one dataset (``val`` is cut from train later)."""

    name: str
    train: Dataset
    test: Dataset
    folder: Path | None = None  # where the files were read (absolute when the caller's path was)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


# --------------------------------------------------------------------------- #
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------- #


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a NumPy array.

    The format: two zero bytes, a type code, the number of dimensions, one
    big-endian uint32 per dimension, then the data in C order.
    """
    path = Path(path)
    todo = "the file is damaged; copy it again from the dataset's source"
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the name
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:  # truncated stream, bad CRC or length, bad data
            what = "truncated gzip file" if isinstance(exc, EOFError) else f"corrupt gzip file ({exc})"
            raise DatasetError(what, path, todo) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"not an IDX file (header {raw[:4]!r})", path, todo)
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DatasetError(f"truncated IDX header ({len(raw)} bytes, {ndim} dimensions need {offset})", path, todo)
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DatasetError(f"holds {len(raw) - offset} data bytes, its header {dims} needs {expected}", path, todo)
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` (uint8 / int8 / big-endian numeric) as an IDX file; gzip when
    ``compress`` is True or, if None, when the name ends in .gz. Used by tests."""
    path = Path(path)
    codes = {np.dtype(v).newbyteorder(">") if np.dtype(v).itemsize > 1 else np.dtype(v): k
             for k, v in _IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in codes:
        raise TypeError(f"write_idx: unsupported dtype {array.dtype}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def _find_idx(folder: Path, stem: str) -> Path | None:
    # Also accept the "train-images.idx3-ubyte" spelling some mirrors use.
    alternates = [stem, stem.replace("-idx", ".idx")]
    for name in alternates:
        for suffix in (".gz", ""):
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _idx_folder(candidates: Sequence[Path]) -> Path | None:
    for folder in candidates:
        if all(_find_idx(folder, stem) for stems in _IDX_STEMS.values() for stem in stems):
            return folder
    return None


def _missing_idx(folder: Path) -> list[str]:
    """The IDX files ``folder`` lacks (their standard names)."""
    return [stem for stems in _IDX_STEMS.values() for stem in stems if _find_idx(folder, stem) is None]


def check_labels(labels: np.ndarray, num_classes: int, where: str | os.PathLike) -> None:
    """Raise :class:`DatasetError` naming ``where`` unless every label is in
    ``[0, num_classes)``: a bad label found at load time, not mid-training."""
    labels = np.asarray(labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        first = int(bad[0])
        raise DatasetError(
            f"label {int(labels[first])} at index {first} is outside 0..{num_classes - 1} "
            f"({bad.size} of {labels.size} labels out of range for {num_classes} classes)", where,
            "the labels file does not belong to this dataset, or is damaged")


def _load_idx_splits(folder: Path, name: str, classes: tuple[str, ...]) -> DatasetSplits:
    splits = {}
    for split, (image_stem, label_stem) in _IDX_STEMS.items():
        image_path, label_path = _find_idx(folder, image_stem), _find_idx(folder, label_stem)
        images = read_idx(image_path)  # type: ignore[arg-type]
        labels = read_idx(label_path)  # type: ignore[arg-type]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{name} images must be uint8 (N, H, W), got {images.dtype} {images.shape}",
                               image_path, "this is not an image IDX file")
        if labels.ndim != 1 or labels.shape != (images.shape[0],):
            raise DatasetError(f"{name} labels: {labels.shape} for {images.shape[0]} images in {image_path.name}",
                               label_path, "the images and labels files must be of the same split")
        check_labels(labels, len(classes), label_path)
        splits[split] = Dataset(images[:, None, :, :].copy(), labels.astype(np.int64), classes)
    return DatasetSplits(name, splits["train"], splits["test"], folder=folder)


def _named_idx_folder(name: str, root: Path, subdirs: Sequence[str], source: str) -> Path:
    """The folder under ``root`` (``root`` itself or one of ``subdirs``) holding all four
    IDX files; a folder the user named is used or refused, never skipped."""
    candidates = [root] + [root / s for s in subdirs]
    folder = _idx_folder(candidates)
    if folder is not None:
        return folder
    if not root.exists():
        raise DatasetNotFoundError(f"{name}: the data folder does not exist", f"{root} ({source})",
                                   "check the path; numbacnn never downloads data")
    if not root.is_dir():
        raise DatasetNotFoundError(f"{name}: the data location is not a folder", f"{root} ({source})",
                                   "name the folder holding the four IDX files")
    partial = next((c for c in candidates if c.is_dir() and len(_missing_idx(c)) < 4), root)
    missing = _missing_idx(partial)
    raise DatasetNotFoundError(
        f"{name}: {', '.join(m + '[.gz]' for m in missing)} missing", f"{partial} ({source})",
        "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (each optionally .gz) there; numbacnn never downloads data")


def _env_dirs(*subdirs: str) -> list[Path]:
    root = os.environ.get(DATA_ENV)
    if not root:
        return []
    return [Path(root)] + [Path(root) / s for s in subdirs]


def _user_root(data_dir: str | os.PathLike | None) -> tuple[Path, str] | None:
    """The data location the user named and how: (``--data-dir``'s folder, "--data-dir")
    or (``$NUMBACNN_DATA``, "$NUMBACNN_DATA"); None when neither is set."""
    if data_dir:
        return Path(data_dir), "--data-dir"
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]), f"${DATA_ENV}"
    return None


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """Fashion-MNIST: 60,000 train and 10,000 test 28x28 grey images, 10 classes.

    Looks in ``data_dir`` if given, else ``$NUMBACNN_DATA`` (and its
    ``fashion-mnist`` subfolder), else ``/usr/share/datasets/fashion-mnist``.
    Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``.

    Raises
    ------
    DatasetNotFoundError
        With both ways to get the files.
    """
    named = _user_root(data_dir)
    if named is not None:
        folder = _named_idx_folder("fashion-mnist", named[0], ("fashion-mnist", "fashion_mnist"), named[1])
    else:
        folder = _idx_folder([FASHION_MNIST_SYSTEM_DIR])
    if folder is None:
        raise DatasetNotFoundError(
            "fashion-mnist: the four IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) were not found",
            FASHION_MNIST_SYSTEM_DIR,
            f"get them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or copy them from "
            f"the Fashion-MNIST project into a folder and pass --data-dir FOLDER (or set {DATA_ENV}=FOLDER); "
            f"numbacnn never downloads data")
    return _load_idx_splits(folder, "fashion-mnist", FASHION_MNIST_CLASSES)


def load_mnist(data_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """MNIST digits from the same four IDX files (``data_dir``, ``$NUMBACNN_DATA/mnist``
    or ``/usr/share/datasets/mnist``)."""
    named = _user_root(data_dir)
    if named is not None:
        folder = _named_idx_folder("mnist", named[0], ("mnist",), named[1])
    else:
        folder = _idx_folder([MNIST_SYSTEM_DIR])
    if folder is None:
        raise DatasetNotFoundError(
            "mnist: the four IDX files (train-images-idx3-ubyte[.gz], ..., t10k-labels-idx1-ubyte[.gz]) "
            "were not found", MNIST_SYSTEM_DIR,
            f"put them in a folder and pass --data-dir FOLDER (or set {DATA_ENV}); numbacnn never downloads data")
    return _load_idx_splits(folder, "mnist", MNIST_CLASSES)


# --------------------------------------------------------------------------- #
# CIFAR-10 (python pickle batches)
# --------------------------------------------------------------------------- #


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    todo = "the file is damaged or not a CIFAR-10 python batch; unpack the archive again"
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as exc:  # what unpickling a truncated or foreign file raises
        raise DatasetError(f"cifar10: cannot unpickle ({type(exc).__name__}: {exc})", path, todo) from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"cifar10: holds a {type(batch).__name__}, not a batch dict", path, todo)
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DatasetError("cifar10: no 'data'/'labels' entries", path, todo)
    data, labels = np.asarray(data), np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DatasetError(f"cifar10: data {data.shape} and labels {labels.shape}, expected (N, 3072) and (N,)",
                           path, todo)
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, labels.astype(np.int64)


def load_cifar10(data_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """CIFAR-10 from the "python version" batches: ``data_batch_1`` .. ``data_batch_5``,
    ``test_batch`` and optionally ``batches.meta``, in ``data_dir`` (or its
    ``cifar-10-batches-py`` subfolder, or ``$NUMBACNN_DATA/cifar10``).

    Note: the pickle files are unpickled, so only use copies you trust.
    """
    named = _user_root(data_dir)
    if named is None:
        raise DatasetNotFoundError(
            "cifar10: no data folder given", "--data-dir",
            f"unpack the CIFAR-10 python version into a folder and pass --data-dir FOLDER (or set {DATA_ENV}); "
            f"numbacnn never downloads data")
    root, source = named
    subdirs = ("cifar-10-batches-py",) if data_dir else ("cifar10", "cifar-10-batches-py")
    candidates = [root] + [root / s for s in subdirs] + [root / s / "cifar-10-batches-py" for s in subdirs[:-1]]
    folder = next((c for c in candidates if (c / "data_batch_1").is_file() and (c / "test_batch").is_file()), None)
    if folder is None:
        raise DatasetNotFoundError(
            "cifar10: data_batch_1..5 and test_batch not found" if root.is_dir()
            else "cifar10: the data folder does not exist", f"{root} ({source})",
            "unpack the CIFAR-10 python version there; numbacnn never downloads data")
    train_paths = sorted(folder.glob("data_batch_*"))
    train_parts = [_read_cifar_batch(p) for p in train_paths]
    classes = CIFAR10_CLASSES
    meta = folder / "batches.meta"
    if meta.is_file():
        try:
            with open(meta, "rb") as f:
                names = pickle.load(f, encoding="bytes").get(b"label_names")
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
                IndexError, KeyError) as exc:
            raise DatasetError(f"cifar10: cannot read the class names ({type(exc).__name__}: {exc})", meta,
                               "the file is damaged; unpack the archive again") from exc
        if names:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    for path, (_, labels) in zip(train_paths, train_parts):
        check_labels(labels, len(classes), path)
    train = Dataset(np.concatenate([p[0] for p in train_parts]), np.concatenate([p[1] for p in train_parts]), classes)
    test_images, test_labels = _read_cifar_batch(folder / "test_batch")
    check_labels(test_labels, len(classes), folder / "test_batch")
    return DatasetSplits("cifar10", train, Dataset(test_images, test_labels, classes), folder=folder)


# --------------------------------------------------------------------------- #
# image folders (CNN Explainer's Tiny ImageNet subset layout)
# --------------------------------------------------------------------------- #


def _require_pillow():
    try:
        from PIL import Image
    except ImportError as exc:  # optional dependency
        raise ImportError(
            'reading image files needs Pillow, which is not installed; install it with: '
            'pip install "numbacnn[viz]"  (or: pip install pillow)'
        ) from exc
    return Image


def _to_8_bit(img):
    """An image with more than 8 bits per sample, as 8-bit grey scaled by its own range.

    Pillow's ``convert("L")`` clips 16-bit samples at 255 (a 0..65535 ramp would load
    as almost all white). Integer images (modes ``I;16*``, ``I``) are scaled by
    their bit depth's range, 0..65535 (or their maximum, when larger); float
    images (mode ``F``) by their minimum..maximum over finite samples; NaN and
    infinite samples load as 0 (without NumPy's RuntimeWarnings reaching the terminal).
    """
    from PIL import Image

    values = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(values)  # a float image may hold NaN or infinite samples: they load as 0
    if img.mode == "F":
        low = float(values[finite].min()) if finite.any() else 0.0
        high = float(values[finite].max()) if finite.any() else 0.0
    else:
        low, high = 0.0, max(65535.0, float(values.max(initial=0.0)))
    scaled = np.zeros_like(values)
    if high > low:
        scaled[finite] = (values[finite] - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def load_image(path: str | os.PathLike, image_size: int, channels: int = 3) -> np.ndarray:
    """Read one image file as uint8 (channels, image_size, image_size), resized with
    bilinear filtering; ``channels`` 1 converts to grey, 3 to RGB. Images with 16-bit
    or float samples are scaled to 0..255 by their own range (see :func:`_to_8_bit`).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    numbacnn.errors.ImageError
        (a ``ValueError``) ``path`` is a folder, an empty file, not an image Pillow
        can read, or a truncated / damaged image; the message names the file.
    """
    Image = _require_pillow()
    if channels not in (1, 3):
        raise ValueError(f"load_image: channels must be 1 or 3, got {channels!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"load_image: image_size must be a positive int, got {image_size!r}")
    path = Path(path)
    if path.is_dir():
        raise ImageError("is a folder, not an image file", path, "name an image file, or rename the folder")
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError("empty image file (0 bytes)", path, "copy the image again, or remove the file")
    try:
        # a large image (Pillow warns above ~89M pixels, refuses above ~179M) is read or
        # refused in one line, never with Pillow's warning as extra terminal lines
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            img.load()  # decode now: a truncated file fails here, inside the try
            if img.mode in ("I", "F") or img.mode.startswith("I;16"):
                img = _to_8_bit(img)
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except Image.UnidentifiedImageError as exc:
        raise ImageError("not an image file Pillow can read", path,
                         f"use PNG, JPEG, BMP, GIF or WebP ({', '.join(IMAGE_EXTENSIONS)}), or remove the file") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"the image is too large to read ({str(exc).split(', could')[0]})", path,
                         "resize it to a few thousand pixels per side first") from None
    except (OSError, ValueError, SyntaxError) as exc:
        # Pillow reports truncated or damaged data as OSError ("image file is truncated"),
        # SyntaxError (broken PNG chunks) or ValueError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"cannot decode the image ({reason})", path,
                         "the file is truncated or damaged; copy it again, or remove it") from exc
    return array[None, :, :] if channels == 1 else array.transpose(2, 0, 1).copy()


def _class_names(root: Path) -> list[str]:
    """Sorted names of the class subfolders of ``root`` (hidden ones skipped); a
    folder named like an image (``x.png``) is a class too, as torchvision's
    ImageFolder sees it."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted; hidden files and other
    extensions (notes, ``.DS_Store``) are skipped.

    Raises
    ------
    numbacnn.errors.ImageError
        An entry with an image extension is a folder (``x.png/``).
    """
    paths = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.is_dir():
            raise ImageError("is a folder, not an image file", path, "rename or move it out of the class folder")
        paths.append(path)
    return paths


def _read_class_folders(root: Path, image_size: int, channels: int,
                        classes: Sequence[str] | None = None) -> Dataset:
    found = _class_names(root)
    discovered = classes is None  # the training split: its folders define the classes
    if not discovered:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DatasetError(f"imagefolder: class folder {extra[0]!r} is not among the training classes "
                               f"{tuple(classes)}", root / extra[0],
                               "the test folder must use the training folder's class names")
    classes = tuple(classes) if classes is not None else tuple(found)
    if not classes:
        raise DatasetNotFoundError("imagefolder: no class subfolders", root,
                                   "expected ROOT/<class>/<image>.png, one subfolder per class")
    if discovered and len(classes) < 2:  # one class trains "to 100%" and learns nothing
        raise DatasetError(f"imagefolder: one class folder ({classes[0]!r}); a classifier needs at least two",
                           root, "add a subfolder of images for each other class")
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue  # a test split may lack a class; the training split may not (checked below)
        paths = image_files(folder)
        if not paths and discovered:
            raise DatasetError(f"imagefolder: class folder {name!r} has no images ({', '.join(IMAGE_EXTENSIONS)})",
                               folder, "add images or remove the folder: a model would learn a class it never saw")
        for path in paths:
            images.append(load_image(path, image_size, channels))
            labels.append(label)
    if not images:
        raise DatasetError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders", root,
                           "put images in ROOT/<class>/")
    return Dataset(np.stack(images), np.asarray(labels, dtype=np.int64), classes)


def count_idx_images(name: str, data_dir: str | os.PathLike | None = None) -> int | None:
    """Images (train + test) in the IDX files :func:`load_dataset` would read for
    ``name`` (``fashion-mnist`` or ``mnist``), from the files' headers alone (16
    bytes each, nothing else decoded): for estimating memory before reading them.
    None when the files are not found or their headers are not readable (loading
    them then says why)."""
    subdirs = {"fashion-mnist": ("fashion-mnist", "fashion_mnist"), "mnist": ("mnist",)}.get(name)
    system = {"fashion-mnist": FASHION_MNIST_SYSTEM_DIR, "mnist": MNIST_SYSTEM_DIR}.get(name)
    if subdirs is None or system is None:
        return None
    named = _user_root(data_dir)
    folder = _idx_folder([named[0]] + [named[0] / s for s in subdirs] if named else [system])
    if folder is None:
        return None
    total = 0
    for image_stem, _ in _IDX_STEMS.values():
        path = _find_idx(folder, image_stem)
        try:
            with open(path, "rb") as raw:  # type: ignore[arg-type]
                gzipped = raw.read(2) == b"\x1f\x8b"
            with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:  # type: ignore[arg-type]
                header = f.read(8)
        except (OSError, EOFError, zlib.error):
            return None
        if len(header) < 8 or header[:2] != b"\0\0" or header[3] < 1:
            return None
        total += int.from_bytes(header[4:8], "big")
    return total


def count_images(data_dir: str | os.PathLike) -> tuple[int, int]:
    """(number of image files, number of classes) of an image folder, from the file
    names only (nothing is decoded): what :func:`load_imagefolder` would read, for
    estimating memory before reading it. (0, 0) when ``data_dir`` is not a folder."""
    root = Path(data_dir)
    if not root.is_dir():
        return 0, 0
    split_dirs = [root / n for n in ("train", "test", "val", "valid", "validation") if (root / n).is_dir()]
    if not ((root / "train").is_dir() and len(split_dirs) > 1):
        split_dirs = [root]
    count, classes = 0, 0
    for split in split_dirs:
        names = _class_names(split)
        classes = max(classes, len(names))
        for name in names:
            count += sum(1 for p in (split / name).iterdir()
                         if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    return count, classes


def load_imagefolder(data_dir: str | os.PathLike, image_size: int = 64, channels: int = 3,
                     test_fraction: float = 0.2, seed: int = 0) -> DatasetSplits:
    """Images in one subfolder per class, resized to ``image_size``.

    Layouts: ``ROOT/train/<class>/*`` with ``ROOT/test/<class>/*`` (or ``val/``), or
    just ``ROOT/<class>/*``, in which case a seeded ``test_fraction`` of each class
    is held out for testing. Classes are the sorted subfolder names.
    """
    if data_dir is None:
        raise DatasetNotFoundError("imagefolder: no data folder given", "--data-dir",
                                   "pass --data-dir FOLDER, a folder with one subfolder per class")
    root = Path(data_dir)
    if not root.exists():
        raise DatasetNotFoundError("imagefolder: the data folder does not exist", root, "check --data-dir")
    if not root.is_dir():
        raise DatasetNotFoundError("imagefolder: the data location is not a folder", root,
                                   "pass --data-dir FOLDER, a folder with one subfolder per class")
    test_dir = next((root / n for n in ("test", "val", "valid", "validation") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        train = _read_class_folders(root / "train", image_size, channels)
        test = _read_class_folders(test_dir, image_size, channels, train.classes)
        if not len(test):
            raise DatasetError("imagefolder: the test split is empty", test_dir, "put images in its class folders")
        return DatasetSplits("imagefolder", train, test, folder=root)
    full = _read_class_folders(root, image_size, channels)
    train_idx, test_idx = stratified_split(full.labels, test_fraction, seed)
    if test_idx.size == 0:
        raise DatasetError(
            f"imagefolder: holding out {test_fraction:.0%} of each class for testing leaves the test split empty "
            f"({len(full)} images in {len(full.classes)} classes)", root,
            "add images (2 or more per class), or add ROOT/train/ and ROOT/test/ folders")
    return DatasetSplits("imagefolder", full.subset(train_idx), full.subset(test_idx), folder=root)


# --------------------------------------------------------------------------- #
# splitting, normalising, batching
# --------------------------------------------------------------------------- #


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices into (keep, held_out), holding out ``fraction`` of each
    class (at least one image of a class with 2+ images when fraction > 0)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(idx.size)]
        n_held = int(round(fraction * idx.size))
        if fraction > 0 and n_held == 0 and idx.size > 1:
            n_held = 1
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, image_size: int = 64,
                 channels: int = 3, seed: int = 0) -> DatasetSplits:
    """Load a dataset by name: "fashion-mnist", "mnist", "cifar10" or "imagefolder".

    ``image_size``, ``channels`` and ``seed`` (its test split) apply to imagefolder only.
    """
    key = name.lower().replace("_", "-")
    if key in ("fashion-mnist", "fashionmnist"):
        return load_fashion_mnist(data_dir)
    if key == "mnist":
        return load_mnist(data_dir)
    if key in ("cifar10", "cifar-10"):
        return load_cifar10(data_dir)
    if key == "imagefolder":
        return load_imagefolder(data_dir, image_size=image_size, channels=channels, seed=seed)  # type: ignore[arg-type]
    raise ValueError(f"dataset: got {name!r}, expected one of {DATASETS}")


@dataclass
class Normalizer:
    """Per-channel ``(x / 255 - mean) / std`` for uint8 images, to a float dtype.

    Attributes
    ----------
    mean, std : tuple of float, one per channel (of the [0, 1] scaled images)
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def scale_only(cls, channels: int) -> "Normalizer":
        """Plain ``x / 255`` into [0, 1] (PyTorch's ``ToTensor``): a black pixel stays 0,
        so a convolution's zero padding looks like the black background."""
        return cls((0.0,) * channels, (1.0,) * channels)

    @classmethod
    def fit(cls, images: np.ndarray, max_images: int = 10000) -> "Normalizer":
        """Mean and std per channel of (up to ``max_images`` of) uint8 images (N, C, H, W)."""
        if images.dtype != np.uint8 or images.ndim != 4:
            raise TypeError(f"Normalizer.fit: images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        sample = images[:max_images].astype(np.float64) / 255.0
        mean = tuple(float(m) for m in sample.mean(axis=(0, 2, 3)))
        std = tuple(max(float(s), 1e-6) for s in sample.std(axis=(0, 2, 3)))
        return cls(mean, std)

    def __call__(self, images: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """uint8 (N, C, H, W) -> normalised C-contiguous ``dtype`` array of the same shape."""
        if images.dtype != np.uint8:
            raise TypeError(f"Normalizer: images must be uint8, got {images.dtype}")
        if images.shape[1] != len(self.mean):
            raise ValueError(f"Normalizer: images have {images.shape[1]} channels, expected {len(self.mean)}")
        scale = (1.0 / (255.0 * np.asarray(self.std))).astype(dtype).reshape(1, -1, 1, 1)
        shift = (np.asarray(self.mean) / np.asarray(self.std)).astype(dtype).reshape(1, -1, 1, 1)
        # one C-contiguous copy, then in place: the same arithmetic, no full-size temporaries per batch
        normalised = images.astype(dtype, order="C")
        normalised *= scale
        normalised -= shift
        return normalised


class BatchLoader:
    """Iterate (images, labels) batches, shuffled by ``(seed, epoch)``.

    Parameters
    ----------
    dataset : Dataset
    batch_size : int
    normalizer : Normalizer
    shuffle : bool
    seed : int
    drop_last : bool
        Drop a last batch smaller than ``batch_size``.
    dtype : float32 or float64

    Yields
    ------
    images : float array (B, C, H, W), normalised, C-contiguous
    labels : int64 array (B,)

    Notes
    -----
    Call :meth:`set_epoch` before iterating: the permutation is drawn from
    ``default_rng([seed, epoch])``, so epoch k's order is the same whether or not
    the run was interrupted before it.
    """

    def __init__(self, dataset: Dataset, batch_size: int, normalizer: Normalizer, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, dtype: np.dtype | type = np.float32) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.normalizer = normalizer
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.dtype = np.dtype(dtype)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self) -> np.ndarray:
        """The index order of this epoch."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.order()
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield (self.normalizer(self.dataset.images[idx], self.dtype),
                   self.dataset.labels[idx])


__all__ = [
    "BatchLoader", "DATASETS", "Dataset", "DatasetNotFoundError", "DatasetSplits", "Normalizer",
    "check_labels", "count_images", "image_files", "load_cifar10", "load_dataset", "load_fashion_mnist",
    "load_image", "load_imagefolder", "load_mnist", "read_idx", "stratified_split", "write_idx",
]
