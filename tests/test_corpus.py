"""Tests for dropoutlab.corpus: the KJV route, its checksums, the errors, the fixed splits.

No writes outside tmp_path: every test passes ``root=tmp_path`` (or sets $DROPOUTLAB_DATA there). The
Debian route is exercised with a fake ``bible`` program and a fake compressed file whose checksums
are patched into the registry; one test reads the real packages and is skipped where they are absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from pathlib import Path

import pytest

from dropoutlab import corpus, pipeline
from dropoutlab.corpus import CorpusError, fetch_corpus, load_corpus, parse_kjv

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = corpus.DEBIAN_KJV_DATA

# A canonical `bible` printout in miniature: 40 chapters of 2 verses.
TOY = "".join(f"\nBook {k}\n\n  1 Verse one of chapter {k}.\n  2 And verse two; the end?\n" for k in range(1, 41))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real Debian files unless a test puts them back; a fresh cache; data root in tmp_path."""
    monkeypatch.setenv("DROPOUTLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(corpus, "DEBIAN_KJV_DATA", tmp_path / "no-such-bible.data")
    corpus.clear_cache()
    yield
    corpus.clear_cache()


def _toy_registry(monkeypatch, tmp_path, text: str = TOY, data_bytes: bytes = b"EC02 fake"):
    data_file = tmp_path / "bible.data"
    data_file.write_bytes(data_bytes)
    info = dataclasses.replace(
        corpus._REGISTRY["kjv"],
        sha256=_sha(text.encode()),
        size=len(text),
        debian_data={str(data_file): _sha(data_bytes)},
    )
    monkeypatch.setitem(corpus._REGISTRY, "kjv", info)
    return data_file


def _fake_bible(tmp_path: Path, text: str) -> Path:
    out = tmp_path / "printout.txt"
    out.write_text(text)
    program = tmp_path / "bible"
    program.write_text(f"#!/bin/sh\ncat '{out}'\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    return program


def test_missing_packages_error_names_them_and_the_install_command(tmp_path):
    with pytest.raises(CorpusError) as err:
        load_corpus("kjv", "train", root=tmp_path)
    message = str(err.value)
    assert "bible-kjv-text is not installed" in message
    assert "apt-get install -y bible-kjv-text bible-kjv" in message
    assert str(tmp_path / "kjv" / "kjv.txt") in message and "not found" in message


def test_missing_reader_program_is_named(monkeypatch, tmp_path):
    data_file = _toy_registry(monkeypatch, tmp_path)
    monkeypatch.setattr(corpus, "DEBIAN_KJV_DATA", data_file)
    monkeypatch.setattr(corpus, "BIBLE_PROGRAM", "no-such-bible-program")
    with pytest.raises(CorpusError, match="bible-kjv is not installed"):
        fetch_corpus("kjv", root=tmp_path)


def test_wrong_compressed_file_and_wrong_printout_are_refused(monkeypatch, tmp_path):
    data_file = _toy_registry(monkeypatch, tmp_path)
    monkeypatch.setattr(corpus, "DEBIAN_KJV_DATA", data_file)
    monkeypatch.setattr(corpus, "BIBLE_PROGRAM", str(_fake_bible(tmp_path, TOY + "tampered")))
    with pytest.raises(CorpusError, match="printed .* bytes with sha256"):
        fetch_corpus("kjv", root=tmp_path)
    data_file.write_bytes(b"another version")
    with pytest.raises(CorpusError, match="sha256 mismatch"):
        fetch_corpus("kjv", root=tmp_path)


def test_fetch_writes_the_verified_text_and_load_reads_it(monkeypatch, tmp_path):
    data_file = _toy_registry(monkeypatch, tmp_path)
    monkeypatch.setattr(corpus, "DEBIAN_KJV_DATA", data_file)
    monkeypatch.setattr(corpus, "BIBLE_PROGRAM", str(_fake_bible(tmp_path, TOY)))
    root = tmp_path / "raw"
    assert not (root / "kjv").exists()
    split = load_corpus("kjv", "train", root=root)  # loading never writes
    assert not (root / "kjv").exists()
    directory = fetch_corpus("kjv", root=root)
    assert (directory / "kjv.txt").read_text() == TOY
    monkeypatch.setattr(corpus, "DEBIAN_KJV_DATA", tmp_path / "gone")  # now the local file alone suffices
    corpus.clear_cache()
    again = load_corpus("kjv", "train", root=root)
    assert again.text == split.text and again.vocab == split.vocab
    (directory / "kjv.txt").write_text(TOY.replace("one", "One"))  # a corrupt local copy is not used
    corpus.clear_cache()
    with pytest.raises(CorpusError, match="sha256 mismatch"):
        load_corpus("kjv", "train", root=root)


def test_splits_follow_the_chapter_rule_and_share_one_vocabulary(monkeypatch, tmp_path):
    _toy_registry(monkeypatch, tmp_path)
    (tmp_path / "kjv").mkdir()
    (tmp_path / "kjv" / "kjv.txt").write_text(TOY)
    chapters = parse_kjv(TOY)
    assert len(chapters) == 40 and chapters[0] == "Verse one of chapter 1.\nAnd verse two; the end?\n"
    parts = {s: load_corpus("kjv", s, root=tmp_path) for s in corpus.CORPUS_SPLITS}
    assert parts["test"].text == chapters[19] + chapters[39]
    assert parts["val"].text == chapters[9] + chapters[29]
    assert len(parts["train"].text) + len(parts["val"].text) + len(parts["test"].text) == len("".join(chapters))
    vocab = parts["train"].vocab
    assert all(p.vocab == vocab for p in parts.values()) and list(vocab) == sorted(vocab)
    assert "".join(vocab[i] for i in parts["val"].ids.tolist()) == parts["val"].text
    head = load_corpus("kjv", "train", n_chars=30, root=tmp_path)
    assert head.text == parts["train"].text[:30] and head.ids.shape == (30,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="ptb", split="train"), "unknown corpus"),
        (dict(name="kjv", split="dev"), "split must be one of"),
        (dict(name="kjv", split="train", n_chars=1), "n_chars must be"),
        (dict(name="kjv", split="train", n_chars=10**9), "n_chars=1000000000 exceeds"),
    ],
)
def test_bad_arguments_are_refused_naming_them(monkeypatch, tmp_path, kwargs, message):
    _toy_registry(monkeypatch, tmp_path)
    (tmp_path / "kjv").mkdir()
    (tmp_path / "kjv" / "kjv.txt").write_text(TOY)
    with pytest.raises(ValueError, match=message):
        load_corpus(root=tmp_path, **kwargs)


def test_a_changed_format_is_refused():
    with pytest.raises(CorpusError, match="line 2 is neither"):
        parse_kjv("\nsomething else entirely:\n")


def test_dry_run_cuts_every_split(monkeypatch, tmp_path):
    _toy_registry(monkeypatch, tmp_path)
    (tmp_path / "kjv").mkdir()
    (tmp_path / "kjv" / "kjv.txt").write_text(TOY)
    monkeypatch.setenv("DROPOUTLAB_DRY_RUN", "2:1")
    assert len(load_corpus("kjv", "train", root=tmp_path)) == corpus.DRY_RUN_CHARS_PER_EXAMPLE


def test_pipeline_and_apt_know_the_corpus():
    assert set(pipeline.TEXT_CORPORA) == set(corpus.list_corpora())
    packages = (ROOT / "apt.txt").read_text().split()
    assert {"bible-kjv-text", "bible-kjv"} <= set(packages)
    assert "bible-kjv-text bible-kjv" in pipeline.DATA_HINTS["kjv"]


# CI's `make test` installs apt.txt (both packages) as root, so there the test must run, never skip; elsewhere a
# machine without root may lack the packages.
@pytest.mark.skipif(not REAL_DATA.is_file() and not os.environ.get("CI"),
                    reason="needs the Debian packages bible-kjv-text and bible-kjv (make setup installs them as root)")
def test_the_real_debian_packages_give_the_pinned_text(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus, "DEBIAN_KJV_DATA", REAL_DATA)
    test = load_corpus("kjv", "test", root=tmp_path)
    assert len(test) == 202_035 and test.vocab_size == 63
    assert test.text.startswith("And Abraham journeyed from thence toward the south country")
    assert not (tmp_path / "kjv").exists()


def test_cli_data_fetch_routes_the_corpus_to_its_module(monkeypatch, tmp_path, capsys):
    from dropoutlab import cli, data

    calls = []
    monkeypatch.setattr(corpus, "fetch_corpus", lambda name: calls.append(("corpus", name)) or tmp_path)
    monkeypatch.setattr(data, "fetch", lambda name: calls.append(("data", name)) or tmp_path)
    assert cli.main(["data", "fetch", "kjv", "mnist"]) == 0
    assert calls == [("corpus", "kjv"), ("data", "mnist")]
    assert "kjv: ready in" in capsys.readouterr().out
