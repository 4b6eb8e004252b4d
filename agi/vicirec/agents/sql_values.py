"""Column values as the database driver hands them back, to plain text (no I/O)."""

from __future__ import annotations

from typing import Any


def column_text(value: Any) -> str:
    """NULL -> ``""``; bytes (binary collations) decoded as UTF-8, never failing; anything else ``str``."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
