"""Store and endpoint URLs: their secrets masked for anything we print, log or store, and
relative SQLite paths made absolute. Pure functions, low in the tree, for every layer that
names a store (the trace writer, the prompt registry, the server)."""

from __future__ import annotations

import functools
import re
import urllib.parse
from pathlib import Path

__all__ = ["MASK", "mask_url", "resolve_tracking_uri", "scrub", "url_secrets"]

MASK = "***"
_SECRET_QUERY = re.compile(
    r"(?i)((?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)=)[^&;\s]+"
)


@functools.lru_cache(maxsize=256)
def mask_url(url: str) -> str:
    """``url`` with a password (and ``password=``/``token=`` query values) masked."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return _SECRET_QUERY.sub(rf"\g<1>{MASK}", url)
    if password:
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
    return _SECRET_QUERY.sub(rf"\g<1>{MASK}", url)


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url`` (to scrub from error text)."""
    found: list[str] = []
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, urllib.parse.unquote(password)]
    found += [m.group(0).split("=", 1)[1] for m in _SECRET_QUERY.finditer(url)]
    return [s for s in found if len(s) >= 3]


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every known secret replaced by ``***`` (and URLs masked)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return re.sub(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", lambda m: mask_url(m.group(0)), text)


def resolve_tracking_uri(uri: str, base: Path | None = None) -> str:
    """``sqlite:///relative.db`` as an absolute path (relative to ``base`` or the current
    folder), so the trace lands where the CLI says."""
    if uri.startswith("sqlite:///") and not uri.startswith(("sqlite:////", "sqlite:///file:")):
        path = uri.removeprefix("sqlite:///")
        if path and path != ":memory:":
            return "sqlite:///" + str(((base or Path.cwd()) / path).resolve())
    return uri
