"""Code scorers shipped with the package, for ``judges:`` (``scorer: module:function``)."""

from __future__ import annotations

import re
from typing import Any

_LINK = re.compile(r"https?://|www\.", re.IGNORECASE)


def no_links(outputs: dict[str, Any]) -> tuple[bool, str]:
    """Pass when no output holds a web link."""
    found = [name for name, value in outputs.items() if _LINK.search(str(value))]
    if found:
        return False, "a link in " + ", ".join(found)
    return True, "no link in the outputs"
