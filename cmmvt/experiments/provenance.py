"""Where published numbers come from, and whether the code has changed under them (``cmmvt report --check``).

Every block of results in ``README.md``, ``reports/RESULTS.md`` and ``docs/*.md`` (:func:`files`) carries a marker on
a line of its own::

    <!-- measured: commit=1a2b3c4 data=realav depends=cmmvt/models,cmmvt/train -->

naming the commit the numbers were measured on, the dataset, and the paths whose code they depend on (default
:data:`DEPENDS`: models, training, features, data). :func:`check` lists each block of one file measured before the
last commit that changed one of its paths, :func:`check_files` does so for every file that carries markers — a
check to run before publishing and in the before-stop review, not a gate for unrelated landings.

Example:
    >>> parse("text\\n<!-- measured: commit=abc1234 data=synth -->\\n| a |")
    [Block(line=2, commit='abc1234', data='synth', depends=('cmmvt/models', 'cmmvt/train', 'cmmvt/features', 'cmmvt/data'))]
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEPENDS = ("cmmvt/models", "cmmvt/train", "cmmvt/features", "cmmvt/data")
_MARKER = re.compile(r"^<!-- measured: (?P<fields>[^>]*?)\s*-->[ \t]*$")


class ProvenanceError(ValueError):
    """A marker that cannot be read, or no git history to read it against."""


@dataclass(frozen=True)
class Block:
    """One marked block: its line in the file, the commit and dataset it was measured on, what it depends on."""

    line: int
    commit: str
    data: str
    depends: tuple[str, ...] = DEPENDS


@dataclass(frozen=True)
class Stale:
    """A block whose code changed after it was measured: the later commits that touch its paths."""

    block: Block
    changes: list[str]  # "<sha> <subject>", newest first; ["unknown commit"] when the commit is not in history


def marker(commit: str, data: str, depends: tuple[str, ...] = DEPENDS) -> str:
    """The marker line for a block measured at ``commit`` on ``data``."""
    extra = "" if depends == DEPENDS else f" depends={','.join(depends)}"
    return f"<!-- measured: commit={commit} data={data}{extra} -->"


def parse(text: str) -> list[Block]:
    """The marked blocks of a Markdown text (markers on lines of their own; quoted in prose they do not count)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        m = _MARKER.match(line.strip())
        if not m:
            continue
        fields = dict(f.split("=", 1) for f in m.group("fields").split() if "=" in f)
        if "commit" not in fields or "data" not in fields:
            raise ProvenanceError(f"line {n}: a measured marker needs commit= and data=: {line.strip()}")
        depends = tuple(fields["depends"].split(",")) if "depends" in fields else DEPENDS
        out.append(Block(n, fields["commit"], fields["data"], depends))
    return out


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def files(root: Path) -> list[Path]:
    """The Markdown files of the work tree ``root`` that may carry results blocks, those that exist:
    ``README.md``, ``reports/RESULTS.md``, then ``docs/*.md`` by name."""
    out = [root / "README.md", root / "reports" / "RESULTS.md", *sorted((root / "docs").glob("*.md"))]
    return [f for f in out if f.is_file()]


def _toplevel(path: Path) -> Path:
    """The git work tree holding ``path`` (its folder where git knows none, so that the check names every block)."""
    folder = path.resolve().parent
    top = _git(folder, "rev-parse", "--show-toplevel")
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else folder


def check(path: Path, root: Path | None = None) -> tuple[list[Block], list[Stale]]:
    """Every marked block of ``path`` and those whose code changed after they were measured.

    Args:
        path: The Markdown file.
        root: The git work tree the ``depends`` paths are relative to (default: the one holding ``path``).

    Returns:
        All blocks, and the stale ones with the later commits (``git log <commit>..HEAD -- <paths>``).
    """
    root = root or _toplevel(path)
    try:
        blocks = parse(path.read_text())
    except ProvenanceError as exc:
        raise ProvenanceError(f"{path.name}: {exc}") from None
    stale = []
    for b in blocks:
        if _git(root, "cat-file", "-e", f"{b.commit}^{{commit}}").returncode != 0:
            stale.append(Stale(b, ["unknown commit"]))
            continue
        log = _git(root, "log", "--format=%h %s", f"{b.commit}..HEAD", "--", *b.depends)
        if log.returncode != 0:
            raise ProvenanceError(f"git log failed in {root}: {log.stderr.strip()}")
        if log.stdout.strip():
            stale.append(Stale(b, log.stdout.strip().splitlines()))
    return blocks, stale


def check_files(root: Path, paths: list[Path] | None = None) -> dict[Path, tuple[list[Block], list[Stale]]]:
    """:func:`check` of every file that carries results blocks (``paths``, default :func:`files` of ``root``), each
    against the work tree ``root``.

    Example:
        >>> check_files(Path("."), [])
        {}
    """
    return {p: check(p, root) for p in (files(root) if paths is None else paths)}
