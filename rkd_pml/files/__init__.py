"""File helpers shared by the whole package.

* :func:`atomic_write` (text, bytes or a writer callback), :func:`atomic_write_text`,
  :func:`atomic_write_path`: files replaced atomically, with the permissions ``open()`` would
  give them; a failed write is one :class:`WriteError` naming the file.
* :func:`remove_orphaned_temporaries`: the temporary files that a killed process left.
* :func:`read_jsonl` / :func:`append_jsonl`: JSON Lines records; a last line cut by a crash is
  dropped, a bad line elsewhere is an error naming the file and the line.
* :func:`read_json_object`, :func:`to_json`: JSON files with clear errors; JSON text of
  results and configs (NaN/inf as null, tensors as numbers).
* :func:`one_line`: an exception as one short line, for error messages.
"""

from .atomic import (
    TEMP_PATTERN,
    atomic_write,
    atomic_write_path,
    atomic_write_text,
    fsync_directory,
    is_temporary,
    remove_orphaned_temporaries,
    temp_name,
)
from .errors import WriteError, one_line
from .records import append_jsonl, read_json_object, read_jsonl, to_json

__all__ = [
    "TEMP_PATTERN",
    "WriteError",
    "append_jsonl",
    "atomic_write",
    "atomic_write_path",
    "atomic_write_text",
    "fsync_directory",
    "is_temporary",
    "one_line",
    "read_json_object",
    "read_jsonl",
    "remove_orphaned_temporaries",
    "temp_name",
    "to_json",
]
