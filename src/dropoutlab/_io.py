"""Atomic file writes shared by the package (data files, figures, metrics, checkpoints).

A reader never sees a half-written file: everything is written to a temporary file in the
destination's own directory (same file system) and moved into place with :func:`os.replace`,
which is atomic on POSIX and Windows. On any failure (exception, ``KeyboardInterrupt``) the
temporary file is removed and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file already exists (empty) when the block starts; write to it by name (for
    example ``fig.savefig(tmp)``, ``torch.save(obj, tmp)``). It keeps the destination's suffix
    (``.figure.png.a1b2c3.tmp.png``) so that tools which infer a format from the extension work.
    Missing parent directories are created. If the block raises, the temporary file is deleted
    and the exception propagates; ``path`` is untouched.

    ``mode`` sets the permission bits of the result (default: ``0o666`` minus the umask, as
    :func:`open` would give; a ``mkstemp`` file would otherwise be private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, (0o666 & ~_UMASK) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (flushed and fsynced before the rename); return the path."""
    path = Path(path)
    with atomic_path(path, mode=mode) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", mode: int | None = None
) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default, newlines written as given)."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode)
