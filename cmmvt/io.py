"""Safe writes and locks, one implementation for every stage: atomic file replacement and one writer per folder.

A file written through :func:`atomic_path` or :func:`atomic_write` is either the old one or the complete new
one, whatever happens (a kill, a full disk): the data goes to a temporary sibling, is fsynced, and is renamed
over the target; a failure removes the temporary file and re-raises. :class:`FolderLock` is an exclusive,
non-blocking lock on a folder (``filelock`` over ``flock``: released by the OS when its process dies).

Example:
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write(p, b"{}")
    >>> with atomic_path(p) as tmp:
    ...     _ = tmp.write_text('{"x": 1}')
    >>> p.read_text()
    '{"x": 1}'
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


class LockBusy(RuntimeError):
    """Another process (or writer) holds the folder's lock."""


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (skipped where a folder cannot be fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems cannot fsync a directory
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; a folder that vanished or is read-only is not an error here."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | Path, tmp: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path`` atomically.

    Args:
        path: The file to (re)write.
        tmp: The temporary sibling (default ``<name>.tmp``); give one whose extension the writer needs
            (e.g. ``.x.partial.mp4`` for an encoder that picks the container from the name).
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write(path, text.encode("utf-8"))


class FolderLock:
    """An exclusive lock on a folder, held from :meth:`acquire` to :meth:`release` (``<folder>/<name>``).

    Args:
        folder: The folder.
        name: The lock file; writers that share a folder but own different files each lock their own name.
        wait: Seconds :meth:`acquire` waits for a holder to let go (0: not at all).

    Raises:
        LockBusy: From :meth:`acquire`, when another writer holds it (after ``wait`` seconds).
    """

    def __init__(self, folder: str | Path, name: str = ".lock", wait: float = 0.0) -> None:
        self._lock = FileLock(str(Path(folder) / name), timeout=wait)

    def acquire(self) -> FolderLock:
        try:
            self._lock.acquire()
        except Timeout:
            raise LockBusy(f"{Path(self._lock.lock_file).parent} is locked by another writer") from None
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)
