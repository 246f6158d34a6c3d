"""Which provider errors are transient, in one place for every provider.

``classify_error(exc)`` names the kind of a failed model call's error, or ``None`` when another
attempt would fail the same way (a bad request, a wrong key, an unknown model). It reads HTTP
status codes and exception class names, so it needs none of the provider packages installed
and covers their wrapped errors too (it follows ``__cause__`` / ``__context__``):

* ``rate_limit``: HTTP 429; ``RateLimitError`` (openai, anthropic), ``ResourceExhausted``
  (google), ``TooManyRequests``.
* ``server_error``: HTTP 5xx (Anthropic's 529 "overloaded" included); ``InternalServerError``,
  ``ServiceUnavailable``, ``OverloadedError``, ``BadGateway``, ``GatewayTimeout``.
* ``timeout``: HTTP 408; ``TimeoutError`` and every ``*Timeout*`` class (``httpx.ReadTimeout``,
  ``openai.APITimeoutError``, ``DeadlineExceeded``).
* ``connection``: ``ConnectionError`` (builtin, and ``requests``'), ``APIConnectionError``,
  ``httpx.ConnectError`` / ``RemoteProtocolError`` / ``NetworkError``.
"""

from __future__ import annotations

from typing import get_args

from ..config.schema import TransientKind

KINDS: tuple[TransientKind, ...] = get_args(TransientKind)

_NAMES: dict[str, TransientKind] = {
    "RateLimitError": "rate_limit",
    "ResourceExhausted": "rate_limit",
    "TooManyRequests": "rate_limit",
    "InternalServerError": "server_error",
    "ServiceUnavailable": "server_error",
    "OverloadedError": "server_error",
    "BadGateway": "server_error",
    "GatewayTimeout": "server_error",
    "ServerError": "server_error",
    "DeadlineExceeded": "timeout",
    "APIConnectionError": "connection",
    "ConnectError": "connection",
    "RemoteProtocolError": "connection",
    "NetworkError": "connection",
    "ConnectionError": "connection",
}


def _status(exc: BaseException) -> int | None:
    """The HTTP status of an error: ``status_code`` (openai, anthropic, ollama), ``code``
    (google) or ``response.status_code`` (httpx)."""
    for owner in (exc, _attribute(exc, "response")):
        for attr in ("status_code", "status", "code"):
            value = _attribute(owner, attr)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
                return value
    return None


def _attribute(owner: object, name: str) -> object:
    try:
        return getattr(owner, name, None)
    except Exception:  # noqa: BLE001 - a property that raises (httpx's ``request``) is no status
        return None


def _by_status(status: int | None) -> TransientKind | None:
    if status == 429:
        return "rate_limit"
    if status == 408:
        return "timeout"
    if status is not None and status >= 500:
        return "server_error"
    return None


def _by_class(exc: BaseException) -> TransientKind | None:
    names = [cls.__name__ for cls in type(exc).__mro__]
    # Timeouts first: openai's APITimeoutError is an APIConnectionError, TimeoutError an OSError.
    if any("Timeout" in name and name != "GatewayTimeout" for name in names):
        return "timeout"
    for name in names:
        if name in _NAMES:
            return _NAMES[name]
    return None


def classify_error(exc: BaseException) -> TransientKind | None:
    """The transient kind of ``exc`` (or of an error it wraps), or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = _status(current)
        kind = _by_status(status)
        if kind is None and (status is None or status < 400):
            kind = _by_class(current)
        if kind is not None:
            return kind
        if status is not None:
            return None  # a 4xx other than 408/429: retrying would fail the same way
        current = current.__cause__ or current.__context__
    return None
