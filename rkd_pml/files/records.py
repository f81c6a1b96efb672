"""JSON and JSON Lines: results and configs as JSON text, JSON objects read with clear
errors, records appended and read back after a crash."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any

from .errors import WriteError, one_line


def _json_default(value: Any):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return repr(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(x) for x in value]
    return value


def to_json(data: Any, indent: int | None = 2) -> str:
    """JSON text of ``data`` ending with a newline; NaN and infinities become ``null``,
    tensors and NumPy scalars numbers, paths strings, sets and tuples lists."""
    plain = json.loads(json.dumps(_finite(data), default=_json_default))
    return json.dumps(_finite(plain), indent=indent) + "\n"  # again: a tensor may have been NaN


def read_json_object(path: str | os.PathLike, what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in ``path``; ValueError naming the file (and line) when it cannot be
    read, is not UTF-8 JSON or holds anything but an object; FileNotFoundError when missing."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (expected the {what})") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {one_line(exc)}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not valid JSON (not UTF-8 text); expected the {what}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"expected the {what}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object (the {what}), got a JSON {_json_kind(data)}")
    return data


def _json_kind(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_jsonl(path: str | os.PathLike, *, skip_damaged: bool = False) -> list[dict[str, Any]]:
    """The records (JSON objects, one a line) of a JSON Lines file; blank lines are skipped.

    A last line without its newline that does not parse (a write cut by a crash) is dropped.
    Any other line that is not a JSON object raises ValueError naming the file and the line,
    or, with ``skip_damaged``, is skipped too (files whose writers ended a cut line with a
    newline before appending the next record).
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        cut = number == len(lines)  # the last line, not ended by a newline
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if cut or skip_damaged:
                continue
            raise ValueError(
                f"{path}, line {number}: not a JSON record ({one_line(exc)}); the file is damaged: "
                "repair or delete that line"
            ) from None
        if not isinstance(record, dict):
            if cut or skip_damaged:
                continue
            raise ValueError(
                f"{path}, line {number}: expected a JSON object, got a JSON {_json_kind(record)}; "
                "the file is damaged: repair or delete that line"
            )
        records.append(record)
    return records


def latest_by_key(path: str | os.PathLike, key: str = "key", *,
                  skip_damaged: bool = False) -> dict[str, dict[str, Any]]:
    """The last record of each value of ``record[key]`` in the JSON Lines file ``path``, in the
    order the values first appear; ``{}`` when the file does not exist. Records without ``key``
    are left out; lines are read as :func:`read_jsonl` reads them."""
    if not Path(path).is_file():
        return {}
    latest: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(path, skip_damaged=skip_damaged):
        if key in record:
            latest[record[key]] = record
    return latest


def append_jsonl(path: str | os.PathLike, record: dict[str, Any], *, what: str = "") -> None:
    """Append ``record`` as one line to ``path`` and flush it to disk.

    A last line left without its newline by a crash is cut off first (:func:`read_jsonl` would
    drop it anyway), so the new record starts a line of its own. On an OSError the file is
    truncated back to its previous length and :class:`WriteError` names it.
    """
    path = Path(path)
    line = to_json(record, indent=None).encode("utf-8")
    try:
        with open(path, "ab+") as f:
            size = f.seek(0, os.SEEK_END)
            keep = _complete_length(f, size)
            try:
                if keep != size:
                    f.truncate(keep)
                    f.seek(keep)
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                try:
                    f.truncate(keep)
                except OSError:
                    pass
                raise
    except OSError as exc:
        raise WriteError(path, exc, what) from exc


def _complete_length(f: IO[bytes], size: int, block: int = 1 << 16) -> int:
    """Length of the file up to and including its last newline."""
    end = size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        chunk = f.read(end - start)
        if end == size and chunk.endswith(b"\n"):
            return size
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
