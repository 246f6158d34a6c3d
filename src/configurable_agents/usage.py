"""Token usage as providers report it (the lowest layer: everything counts tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TokenUsage:
    """Provider-reported tokens. ``input_tokens`` includes the cached ones, which are also
    counted in ``cache_read_tokens`` / ``cache_write_tokens`` when the provider reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, usage: dict[str, Any] | TokenUsage | None) -> None:
        if isinstance(usage, TokenUsage):
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.cache_read_tokens += usage.cache_read_tokens
            self.cache_write_tokens += usage.cache_write_tokens
        elif usage:
            self.input_tokens += int(usage.get("input_tokens") or 0)
            self.output_tokens += int(usage.get("output_tokens") or 0)
            details = usage.get("input_token_details") or {}
            self.cache_read_tokens += int(details.get("cache_read") or 0)
            self.cache_write_tokens += int(details.get("cache_creation") or 0)

    def to_dict(self) -> dict[str, int]:
        data = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cache_read_tokens or self.cache_write_tokens:
            data["cache_read_tokens"] = self.cache_read_tokens
            data["cache_write_tokens"] = self.cache_write_tokens
        return data
