"""``DataError``: unusable input data (raised by the dataset readers here and by the task plugins), and
``read_text``, the one reader of a data file's text that names the file and line of a non-UTF-8 byte."""

from __future__ import annotations

from pathlib import Path

from lorakit.errors import LorakitError

__all__ = ["DataError", "read_text"]


class DataError(LorakitError, ValueError):
    """Unusable input data; the message names the file (and line) and what to do."""


def read_text(path: str | Path) -> str:
    """The file's text (UTF-8, an optional BOM dropped, newlines kept as in the file); an unreadable file or a
    byte that is not UTF-8 raises ``DataError`` with the file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); save the file as "
                        "UTF-8") from None
