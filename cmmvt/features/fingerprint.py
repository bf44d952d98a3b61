"""Fingerprints of source files: a cached clip is served only while its file is the one it was made from.

A :class:`Fingerprint` records a file's size, modification time (ns) and a BLAKE2b digest of its
content sampled at three places: the first, middle and last MiB (the whole file when it is 3 MiB or
less). :func:`is_current` checks a file against a fingerprint the way rsync and git do: a different
size means changed; the same size and mtime mean unchanged without reading a byte; the same size with
another mtime (a copy, a ``touch``, a fresh checkout) reads the three MiB and compares digests. So
resuming a cache of 240,000 clips costs one ``stat`` per clip, and moving a dataset to another disk
does not force a re-extraction.

Example:
    >>> import pathlib, tempfile, os
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "clip.mp4"
    >>> _ = f.write_bytes(b"abc")
    >>> fp = fingerprint(f)
    >>> is_current(f, fp)
    True
    >>> os.utime(f, ns=(0, 0))  # touched: same content
    >>> is_current(f, fp)
    True
    >>> _ = f.write_bytes(b"abd")  # same size, new content
    >>> is_current(f, fp)
    False
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

SAMPLE_BYTES = 1 << 20  #: bytes hashed at the start, middle and end of a file


@dataclass(frozen=True)
class Fingerprint:
    """What a cached clip was made from.

    Attributes:
        path: The source file as given to the extractor.
        size: Bytes.
        mtime_ns: Modification time in nanoseconds.
        digest: BLAKE2b-128 hex digest of the sampled content (see :func:`digest`).
    """

    path: str
    size: int
    mtime_ns: int
    digest: str


def digest(path: str | Path, size: int | None = None) -> str:
    """BLAKE2b-128 of the first, middle and last :data:`SAMPLE_BYTES` of a file (all of it when small)."""
    size = os.stat(path).st_size if size is None else size
    h = hashlib.blake2b(digest_size=16)
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= 3 * SAMPLE_BYTES:
            h.update(f.read())
        else:
            for start in (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES):
                f.seek(start)
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def fingerprint(path: str | Path) -> Fingerprint:
    """Fingerprint a file (one ``stat`` and at most 3 MiB read).

    Raises:
        OSError: The file cannot be read.
    """
    st = os.stat(path)
    return Fingerprint(str(path), st.st_size, st.st_mtime_ns, digest(path, st.st_size))


def is_current(path: str | Path, fp: Fingerprint | None) -> bool:
    """Whether ``path`` still holds the content ``fp`` was taken of (``False`` for no fingerprint or no file)."""
    if fp is None:
        return False
    try:
        st = os.stat(path)
        if st.st_size != fp.size:
            return False
        return st.st_mtime_ns == fp.mtime_ns or digest(path, st.st_size) == fp.digest
    except OSError:
        return False
