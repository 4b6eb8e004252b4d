"""Keep the VICIdial password out of every string that leaves the process.

api.php echoes the submitted password (and an SQL statement holding it) on a failed login, so
redaction is applied to text, never trusted to the care of whoever logs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "<redacted>"

# `pass=...` in a query string or form body, `pass='...'` in the SQL api.php echoes.
_PASS_PARAM = re.compile(r"(?i)(\bpass(?:word)?=)('[^']*'|[^&\s|]*)")
# The echoed login line: `Invalid Username/Password: |user|PASS|n|n|MSG|...SQL...|`. The user, the
# two counters and MSG (GOOD, BAD, LOCK...) are kept; the password and the SQL echo are not.
_LOGIN_ECHO = re.compile(
    r"(Invalid Username/Password: \|[^|\n]*\|)[^|\n]*(\|[^|\n]*\|[^|\n]*\|[^|\n]*\|)?([^\n]*)"
)


def _mask_login_echo(match: re.Match[str]) -> str:
    kept = match.group(1) + MASK + (match.group(2) or "")
    return kept + (MASK if match.group(3) else "")


class Redactor:
    """Replaces known secrets, and the places api.php is known to echo them, with ``<redacted>``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def including(self, secrets: Iterable[str]) -> Redactor:
        """A redactor that also masks ``secrets`` (one learnt later, e.g. the database password)."""
        return Redactor([*self._secrets, *secrets])

    def text(self, value: str) -> str:
        value = _LOGIN_ECHO.sub(_mask_login_echo, value)
        value = _PASS_PARAM.sub(lambda m: m.group(1) + MASK, value)
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def value(self, value: Any) -> Any:
        """Redact strings inside any JSON-like value (dicts, lists, tuples)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, Mapping):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value


def redact_shapes(text: str) -> str:
    """Redact what api.php is known to echo, without knowing the password (used by pure parsers)."""
    return Redactor().text(text)
