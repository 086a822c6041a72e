"""Credentials never reach a log line, a file or an error message: redaction of known secrets
and of anything shaped like a token or a key."""

from __future__ import annotations

import logging
import re

# Patterns of credentials that must never reach a log line, a file or an error message.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"ya29\.[A-Za-z0-9._-]+"),
    re.compile(
        r"(?i)(\"?(?:access_token|refresh_token|client_secret|private_key|id_token|token)\"?"
        r"\s*[:=]\s*\"?)[^\"&\s,}]+"
    ),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
]
_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a credential value (a token, a key) so `redact` removes it wherever it appears."""
    if value and len(value) >= 8:
        _known_secrets.add(value)


def redact(text: str) -> str:
    """`text` with bearer tokens, OAuth tokens, private keys and registered secrets removed."""
    for secret in _known_secrets:
        text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


class RedactingFilter(logging.Filter):
    """Removes credentials from log records before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


# Loggers that write server responses or exception texts; some servers echo request headers.
# (A filter on a logger applies to the records created there, so each is named.)
for _name in (
    "google.api_core.retry",
    "google.cloud.storage",
    "google.resumable_media",
    "urllib3.connectionpool",
    "objectron_wds.storage",
):
    logging.getLogger(_name).addFilter(RedactingFilter())
