"""Where spiral's files are written and how their headers are checked: one home for both.

Writes are atomic. A file or folder is written under a hidden temporary name beside its final
place (the same file system, so moving it in is a rename), then moved in whole; a writer that
fails leaves the old version as it was and no partial file behind. A reader, or a run that
crashes mid-write, sees the old version or the new one, never half of either.

Every JSON document spiral writes (an agent's ``agent.json``, a classifier's
``classifier.json``, a painting program) starts with ``format`` and ``version``; a
``FileFormat`` stamps them and refuses documents of another kind or version, with a message
that names the file. Pure Python: the environment layer uses it too.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar


class _HasIndex(Protocol):
    index: int


Indexed = TypeVar("Indexed", bound=_HasIndex)


@dataclass(frozen=True)
class FileFormat:
    """A kind of JSON document: its ``format`` name, the one ``version`` this code reads, and what
    it is called in messages (``"spiral agent manifest"``)."""

    name: str
    version: int
    description: str

    def stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` headed by this format's ``format`` and ``version``."""
        return {"format": self.name, "version": self.version, **body}

    def check(self, document: Any, source: str) -> dict[str, Any]:
        """The body of a parsed document (without its header), or a ValueError naming ``source``."""
        if not isinstance(document, dict):
            raise ValueError(f"Not a {self.description}: {source} holds a JSON {type(document).__name__}, "
                             f"not an object with format {self.name!r}.")
        if document.get("format") != self.name:
            raise ValueError(f"Not a {self.description}: {source} has format {document.get('format')!r}, "
                             f"{self.name!r} expected.")
        if document.get("version") != self.version:
            raise ValueError(f"Unsupported {self.description} version {document.get('version')!r} in {source}: "
                             f"this spiral reads version {self.version}.")
        return {key: value for key, value in document.items() if key not in ("format", "version")}

    def parse(self, text: str, source: str) -> dict[str, Any]:
        """The body of a JSON text, refusing invalid JSON as well as a foreign header."""
        return self.check(_parse_json(text, f"Not a {self.description}: {source}"), source)

    def read(self, path: Path) -> dict[str, Any]:
        """The body of the document in the file ``path``."""
        try:
            text = path.read_text()
        except UnicodeDecodeError as error:
            raise ValueError(f"Not a {self.description}: {path} is not UTF-8 text ({error}).") from error
        return self.parse(text, str(path))


def read_json_lines(path: Path, file_format: FileFormat) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    """A JSON Lines file headed by a line of ``file_format``: the header's body and the other lines.

    For files that are appended to as work finishes (one JSON object a line): the lines come
    numbered from 1, the header's line, with blank lines left out, and a last line without its
    newline is kept only if it parses, since an interrupted write leaves a line cut short there.
    Parsing and checking the lines is the caller's.
    """
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise ValueError(f"Not a {file_format.description}: {path} is not UTF-8 text ({error}).") from error
    lines = text.split("\n")
    last = lines.pop()  # "" when the file ends with a newline; else a line that may have been cut short
    if not lines:
        raise ValueError(f"Not a {file_format.description}: {path} has no complete header line.")
    header = file_format.parse(lines[0], f"{path} (header line)")
    numbered = [(number, line) for number, line in enumerate(lines[1:], 2) if line.strip()]
    if last.strip() and _parses(last):
        numbered.append((len(lines) + 1, last))
    return header, numbered


def indexed_records(path: Path, lines: list[tuple[int, str]], read_record: Callable[[Any, str], Indexed]
                    ) -> list[Indexed]:
    """The records of ``read_json_lines``'s ``lines``, sorted by their ``index``: each line is parsed as JSON
    and given to ``read_record(value, where)``, which checks it (a ValueError naming ``where``, the file
    and line) and returns a record; an index that appears twice is refused."""
    records, seen = [], set()
    for number, line in lines:
        where = f"{path}, line {number}"
        record = read_record(_parse_json(line, where), where)
        if record.index in seen:
            raise ValueError(f"{where}: index {record.index} appears twice.")
        seen.add(record.index)
        records.append(record)
    return sorted(records, key=lambda record: record.index)


def _parse_json(text: str, what: str) -> Any:
    """``text`` as JSON, or a ValueError that starts with ``what`` (the document and where it is)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} is not valid JSON ({error}).") from None
    except RecursionError:
        raise ValueError(f"{what} nests arrays or objects too deeply.") from None


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return False
    return True


def require_plain_name(name: str, what: str) -> str:
    """``name``, refused unless it names one entry of a folder: a path in it (``../x``) would put
    what is written under that name outside the folder meant for it. ``what`` starts the message."""
    if name in {"", ".", ".."} or Path(name).name != name:
        raise ValueError(f"{what} must be a plain name (no '/', not '.' or '..'), got {name!r}.")
    return name


def write_file(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Replace the file ``path`` with what ``fill`` writes to the temporary path it is given.

    The temporary file keeps ``path``'s suffix, so writers that choose a format by the name (an
    image library's ``save``) work unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    staging = Path(name)
    try:
        fill(staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return path


def write_folder(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Replace the folder ``folder`` with what ``fill`` writes into the empty folder it is given.

    Where the system can swap two folders in one step (Linux), ``folder`` is never missing, not
    even for an instant; elsewhere the old folder is renamed away just before the new one is
    renamed in, and a crash between the two leaves the old one at ``.NAME-old``.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        fill(staging)
        if not folder.exists():
            os.replace(staging, folder)
        elif _exchange(staging, folder):
            shutil.rmtree(staging)  # now the old folder
        else:
            retired = folder.with_name(f".{folder.name}-old")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(folder, retired)
            os.replace(staging, folder)
            shutil.rmtree(retired)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def copy_folder(source: str | Path, folder: str | Path) -> Path:
    """Replace the folder ``folder`` with a copy of ``source``, in one step as ``write_folder`` does."""
    return write_folder(folder, lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True))


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically with Linux's ``renameat2``; False where it is not offered
    (another system, an old C library, a file system without it)."""
    renameat2 = _renameat2()
    return renameat2 is not None and renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                                               _RENAME_EXCHANGE) == 0


@functools.cache
def _renameat2() -> Any:
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # no such function, or no C library to ask (Windows)
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2
