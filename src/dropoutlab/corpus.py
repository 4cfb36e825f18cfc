"""Text corpora for the language-model experiments: a checksummed route, fixed splits, characters.

Public API
----------
``load_corpus(name, split, n_chars=None, root=None) -> Corpus``
    One split of a corpus as a string and as int64 character ids over the corpus's fixed
    vocabulary.
``fetch_corpus(name, root=None) -> Path``
    Make sure ``<root>/<name>/<file>`` holds the canonical text with its checksum (the DVC data
    stage, ``dropoutlab data fetch kjv``).
``list_corpora()``, ``corpus_info(name) -> CorpusInfo``, ``parse_kjv``, ``CorpusError``.

The corpus: ``kjv``
-------------------
The King James Version of the Bible (1611; public domain), as shipped by the Debian package
``bible-kjv-text`` (the Bible Retrieval System's compressed text, ``/usr/lib/bible.data``,
1,740,565 bytes) and read with the ``bible`` program of the package ``bible-kjv``:
``bible -l100000 gen1:1-rev22:21`` prints every verse on one line (a line width of 100,000
columns never wraps), 4,298,239 bytes, sha256 ``6f74f558…``. Both the compressed file and the
printed text are pinned by sha256, so every route yields byte-identical text. No other route
exists (no registry ships the text), so the error names the two packages and the command that
installs them.

Canonical text → language-model text (:func:`parse_kjv`): the 1,189 chapter headings
(``Genesis 1``) and the verse numbers are dropped; each of the 31,102 verses is one line
ending in ``\\n``. That leaves 4,137,850 characters over 63 distinct characters (52 letters less
``X``, punctuation, space, newline; no digits remain).

Splits (fixed, no seed): chapters in canonical order k = 0 … 1,188; chapter k goes to ``test``
when ``k % 20 == 19``, to ``val`` when ``k % 20 == 9``, else to ``train``: 3,738,911 / 196,904 /
202,035 characters (every book
contributes to all three when it is long enough, so the splits share the style of the whole
text). ``n_chars`` keeps the first ``n_chars`` characters of a split (a prefix, not a sample).
The vocabulary is that of the whole text, sorted by code point, the same for every split.

Where the file comes from (``<root>`` is :func:`dropoutlab.data.default_root`)
-----------------------------------------------------------------------------
1. ``<root>/kjv/kjv.txt`` when its sha256 matches;
2. the Debian packages (``bible-kjv-text`` + ``bible-kjv``): ``/usr/lib/bible.data`` is
   checked, ``bible`` is run, its output checked.
:func:`fetch_corpus` writes the text into ``<root>/kjv/`` (atomically); :func:`load_corpus`
reads the first route that works and never writes.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._io import atomic_write_bytes
from .data import DataError, default_root, sha256_hex
from .paths import dry_run

__all__ = [
    "CORPUS_SPLITS",
    "Corpus",
    "CorpusError",
    "CorpusInfo",
    "corpus_info",
    "fetch_corpus",
    "list_corpora",
    "load_corpus",
    "parse_kjv",
]

CORPUS_SPLITS = ("train", "val", "test")

#: Where the Debian package ``bible-kjv-text`` installs the compressed text, and the reader of
#: the package ``bible-kjv`` (module attributes so tests can point them elsewhere).
DEBIAN_KJV_DATA = Path("/usr/lib/bible.data")
BIBLE_PROGRAM = "bible"
BIBLE_TIMEOUT_S = 120
#: In a dry run a split keeps at most this many characters per dry-run "example".
DRY_RUN_CHARS_PER_EXAMPLE = 100


class CorpusError(DataError):
    """The corpus is missing or fails its checksum, and no route could provide it."""


@dataclass(frozen=True)
class CorpusInfo:
    """Static facts about one text corpus."""

    name: str
    file: str  # the canonical file under <root>/<name>/
    description: str
    licence: str
    sha256: str  # of the canonical file
    size: int  # bytes of the canonical file
    debian_packages: tuple[str, ...] = ()
    debian_data: dict[str, str] = field(default_factory=dict)  # installed path -> sha256
    command: tuple[str, ...] = ()  # arguments of BIBLE_PROGRAM that print the canonical text


_REGISTRY: dict[str, CorpusInfo] = {
    "kjv": CorpusInfo(
        name="kjv",
        file="kjv.txt",
        description="King James Version of the Bible (1611), 31,102 verses, as printed by the Debian package "
        "bible-kjv's `bible` from bible-kjv-text's compressed text (version 4.38)",
        licence="public domain (the text); the Debian packaging GPL-2+",
        sha256="6f74f5589333c56c263963e6347dba662bae2d96861302e690aaae0b4a855eda",
        size=4_298_239,
        debian_packages=("bible-kjv-text", "bible-kjv"),
        debian_data={str(DEBIAN_KJV_DATA): "6c746c2acc8a34bfded980883ff1701a5d68934a1c853ebf88a07b978fe0ae0e"},
        command=("-l100000", "gen1:1-rev22:21"),
    ),
}


def list_corpora() -> list[str]:
    """Names accepted by :func:`load_corpus` and :func:`fetch_corpus`."""
    return sorted(_REGISTRY)


def corpus_info(name: str) -> CorpusInfo:
    """Static facts (file, checksum, Debian packages) about corpus ``name``."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown corpus {name!r}; choose one of: {', '.join(list_corpora())}")
    return _REGISTRY[key]


def _install_hint(info: CorpusInfo) -> str:
    packages = " ".join(info.debian_packages)
    return (
        f"install the Debian packages {packages} (as root: apt-get update && apt-get install -y {packages}; "
        f"`make setup` does this when run as root), or put the verified file at <data root>/{info.name}/{info.file}"
    )


def _debian_route(info: CorpusInfo) -> bytes:
    """The canonical text printed by the Debian packages' ``bible`` program, verified."""
    data_path = DEBIAN_KJV_DATA
    if not data_path.is_file():
        raise CorpusError(f"{data_path} not found: the Debian package {info.debian_packages[0]} is not installed")
    expected = info.debian_data.get(str(data_path)) or next(iter(info.debian_data.values()))
    actual = sha256_hex(data_path.read_bytes())
    if actual != expected:
        raise CorpusError(
            f"{data_path}: sha256 mismatch: expected {expected}, got {actual} (another version of "
            f"{info.debian_packages[0]}?)"
        )
    program = shutil.which(BIBLE_PROGRAM)
    if program is None:
        raise CorpusError(
            f"the program `{BIBLE_PROGRAM}` was not found: the Debian package "
            f"{info.debian_packages[1]} is not installed"
        )
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    try:
        proc = subprocess.run(
            [program, *info.command],
            capture_output=True,
            timeout=BIBLE_TIMEOUT_S,
            check=False,
            env=env,
            cwd=data_path.parent,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CorpusError(f"`{BIBLE_PROGRAM} {' '.join(info.command)}` could not run: {exc}") from exc
    if proc.returncode != 0:
        raise CorpusError(
            f"`{BIBLE_PROGRAM} {' '.join(info.command)}` failed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[-300:]}"
        )
    text = proc.stdout
    if sha256_hex(text) != info.sha256:
        raise CorpusError(
            f"`{BIBLE_PROGRAM} {' '.join(info.command)}` printed {len(text)} bytes with sha256 "
            f"{sha256_hex(text)}, expected {info.size} bytes with sha256 {info.sha256}"
        )
    return text


def _local(info: CorpusInfo, root: Path) -> bytes | None:
    path = root / info.name / info.file
    if not path.is_file():
        return None
    raw = path.read_bytes()
    if sha256_hex(raw) != info.sha256:
        return None
    return raw


def _obtain(info: CorpusInfo, root: Path) -> tuple[bytes, str]:
    """(canonical bytes, where from), trying the local file, then the Debian packages."""
    raw = _local(info, root)
    if raw is not None:
        return raw, str(root / info.name / info.file)
    problems = []
    path = root / info.name / info.file
    problems.append(f"{path}: " + ("sha256 mismatch" if path.is_file() else "not found"))
    try:
        return _debian_route(info), "Debian packages " + " + ".join(info.debian_packages)
    except CorpusError as exc:
        problems.append(str(exc))
    raise CorpusError(
        f"could not obtain the corpus {info.name!r}. Routes tried:\n"
        + "\n".join(f"  {i + 1}. {p}" for i, p in enumerate(problems))
        + f"\nTo fix: {_install_hint(info)}."
    )


def fetch_corpus(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Make sure ``<root>/<name>/<file>`` holds the verified canonical text; return its directory.

    A file already there with the right sha256 is kept; otherwise the Debian route is run and its
    verified output written atomically. Raises :class:`CorpusError` naming the packages and the
    install command when no route works.
    """
    info = corpus_info(name)
    base = default_root() if root is None else Path(root).expanduser().resolve()
    raw, source = _obtain(info, base)
    target = base / info.name / info.file
    if source != str(target):
        atomic_write_bytes(target, raw)
    return target.parent


_VERSE = re.compile(r"^ +\d+ (.*)$")
_HEADING = re.compile(r"^\S.* \d+$")


def parse_kjv(text: str) -> list[str]:
    """The chapters of the canonical ``bible`` output, each its verses' text, one ``\\n``-ended line per verse.

    Headings (``Genesis 1``) start a chapter; verse lines (``  1 In the beginning …``) lose their
    number; blank lines are skipped. Any other line raises :class:`CorpusError` (a changed format).
    """
    chapters: list[list[str]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        verse = _VERSE.match(line)
        if verse and chapters:
            chapters[-1].append(verse.group(1) + "\n")
        elif _HEADING.match(line):
            chapters.append([])
        else:
            raise CorpusError(f"kjv: line {number} is neither a chapter heading nor a verse: {line[:80]!r}")
    return ["".join(verses) for verses in chapters]


def _split_of(chapter: int) -> str:
    r = chapter % 20
    return "test" if r == 19 else "val" if r == 9 else "train"


@functools.lru_cache(maxsize=2)
def _chapters(name: str, root: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    info = corpus_info(name)
    raw, _ = _obtain(info, Path(root))
    chapters = tuple(parse_kjv(raw.decode("ascii")))
    vocab = tuple(sorted(set("".join(chapters))))
    return chapters, vocab


@dataclass(frozen=True, eq=False)
class Corpus:
    """One split of a text corpus: ``text`` and ``ids`` (int64 ``(n_chars,)``) over ``vocab``."""

    name: str
    split: str
    text: str
    ids: torch.Tensor
    vocab: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return f"Corpus(name={self.name!r}, split={self.split!r}, n_chars={len(self)}, vocab_size={self.vocab_size})"


def load_corpus(
    name: str, split: str, n_chars: int | None = None, root: str | os.PathLike[str] | None = None
) -> Corpus:
    """One fixed split of corpus ``name`` (module docstring), optionally its first ``n_chars`` characters.

    Reads ``<root>/<name>/<file>`` when verified, else the Debian route (nothing is written). The
    parsed chapters are cached in memory (:func:`clear_cache`). In a dry run
    (:func:`dropoutlab.paths.dry_run`) a split is cut to at most ``DRY_RUN_CHARS_PER_EXAMPLE`` (100)
    characters per dry-run example (51,200 at the default 512).
    """
    info = corpus_info(name)
    if split not in CORPUS_SPLITS:
        raise ValueError(f"split must be one of {CORPUS_SPLITS}, got {split!r}")
    if n_chars is not None and (isinstance(n_chars, bool) or not isinstance(n_chars, int) or n_chars < 2):
        raise ValueError(f"n_chars must be None or an integer ≥ 2, got {n_chars!r}")
    base = default_root() if root is None else Path(root).expanduser().resolve()
    chapters, vocab = _chapters(info.name, str(base))
    text = "".join(c for k, c in enumerate(chapters) if _split_of(k) == split)
    caps = dry_run()
    if caps is not None:
        n_chars = min(n_chars or len(text), caps.examples * DRY_RUN_CHARS_PER_EXAMPLE, len(text))
    if n_chars is not None:
        if n_chars > len(text):
            raise ValueError(f"n_chars={n_chars} exceeds the {split} split's {len(text)} characters")
        text = text[:n_chars]
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.int64)
    return Corpus(name=info.name, split=split, text=text, ids=ids, vocab=vocab)


def clear_cache() -> None:
    """Forget the parsed chapters held in memory."""
    _chapters.cache_clear()
