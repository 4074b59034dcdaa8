"""Every file the runner writes is written whole or not at all: the one way to write one.

::

    .NAME.tmp  <- written, flushed, fsync'ed
    NAME       <- os.replace(.NAME.tmp, NAME), then the directory is fsync'ed (the rename is durable)

A process killed at any point leaves the old ``NAME`` (or none) and perhaps a ``.NAME.tmp``, never a
torn ``NAME``; readers glob names without the leading dot, so they never see a temporary file. The
parts, the results file, ``state.json``, ``spec.json``, ``batch.json``, the batch shards and the HTML
report all go through here [luigi's ``AtomicLocalFile``].

Files hold prompts and completions, so a new file is private to its owner (``0600``, whatever the
umask); a file that already exists keeps its permissions when it is replaced (one the user opened to
a group stays open).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is put in place: ``.NAME.tmp`` beside it."""
    return path.with_name(f".{path.name}.tmp")


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A file written under its temporary name; :meth:`commit` puts it in place, :meth:`discard` drops it.

    For writers that keep a file open across calls (a batch shard); :func:`atomic_write` is the usual
    way in.
    """

    def __init__(self, path: Path, mode: str = "wb", encoding: str | None = None) -> None:
        self.path = path
        self.tmp = temporary_name(path)
        self.handle: IO[Any] = _open_private(self.tmp, mode, encoding, keep_mode_of=path)

    def commit(self) -> None:
        """Flush, fsync, rename into place, fsync the directory; on failure nothing is left behind."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


PRIVATE_FILE_MODE = 0o600
"""Permissions of every new file in a job directory (and of the HTML report)."""


def _open_private(path: Path, mode: str, encoding: str | None, *, keep_mode_of: Path) -> IO[Any]:
    """Open ``path`` for writing (truncated), created ``0600`` or with ``keep_mode_of``'s permissions."""
    try:
        perms = os.stat(keep_mode_of).st_mode & 0o777
    except OSError:
        perms = PRIVATE_FILE_MODE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, perms)
    try:
        os.fchmod(fd, perms)  # the umask applies to os.open's mode; a reused temporary file has its own
        return open(fd, mode, encoding=encoding)
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Write ``path`` through a handle to its temporary file; in place when the block ends without error.

    ``OSError`` passes through (callers say which file and what to do); the temporary file is removed.
    """
    file = AtomicFile(path, mode, encoding)
    try:
        yield file.handle
    except BaseException:
        file.discard()
        raise
    file.commit()


def write_text(path: Path, text: str) -> None:
    """``path`` holds ``text`` (UTF-8), written atomically."""
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
