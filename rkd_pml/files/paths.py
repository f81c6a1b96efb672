"""How two paths on disk relate: the same folder, one inside the other (links resolved)."""

from __future__ import annotations

import os
from pathlib import Path


def path_relation(path: str | os.PathLike, other: str | os.PathLike) -> str | None:
    """``"is"``, ``"lies inside"`` or ``"contains"`` when ``path`` is ``other``, lies inside it
    or contains it (symbolic links resolved, folders compared by device and inode where they
    exist); None when they are unrelated or ``other`` does not exist."""
    if not os.path.lexists(other):
        return None
    mine, theirs = _chain(Path(path)), _chain(Path(other))
    if mine[0] == theirs[0]:
        return "is"
    if theirs[0] in mine[1:]:
        return "lies inside"
    if mine[0] in theirs[1:]:
        return "contains"
    return None


def _chain(path: Path) -> list[object]:
    """Identities of ``path`` and of each of its parents: ``(device, inode)`` where they
    exist, the resolved path otherwise."""
    real = Path(os.path.realpath(path))
    chain: list[object] = []
    for item in (real, *real.parents):
        try:
            st = os.stat(item)
            chain.append((st.st_dev, st.st_ino))
        except OSError:
            chain.append(str(item))
    return chain
