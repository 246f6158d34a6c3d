"""User tools referenced from test workflows as 'sample_tools:<name>'."""

from __future__ import annotations

import os
import time


def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper()


def slow(seconds: float = 5.0) -> str:
    """Sleep for a while (used to trigger node timeouts)."""
    time.sleep(seconds)
    return "slept"


def slow_marker(seconds: float = 5.0) -> str:
    """Sleep, then create the file named by $CA_TEST_SLOW_MARKER: the file exists only if the
    process was still alive when the tool finished."""
    time.sleep(seconds)
    marker = os.environ.get("CA_TEST_SLOW_MARKER")
    if marker:
        open(marker, "w").close()
    return "slept"


def started_marker(seconds: float = 60.0) -> str:
    """Create a file named after this process in $CA_TEST_STARTED_DIR, then sleep: the file
    says the process is inside a run."""
    folder = os.environ.get("CA_TEST_STARTED_DIR")
    if folder:
        open(os.path.join(folder, str(os.getpid())), "w").close()
    time.sleep(seconds)
    return "slept"


def broken(text: str) -> str:
    """Always fails."""
    raise RuntimeError("tool exploded")


NOT_CALLABLE = 42


def hang(note: str = "") -> str:
    """Touch the file named by $CA_TEST_MARKER, then sleep (used to interrupt a run)."""
    import os
    from pathlib import Path

    Path(os.environ["CA_TEST_MARKER"]).touch()
    time.sleep(60)
    return "woke up"


def nap(seconds: float = 0.8) -> str:
    """Sleep a little (a tool that outlives its node's timeout)."""
    time.sleep(seconds)
    return "rested"


def positive(outputs: dict) -> tuple[bool, str]:
    """A code scorer (judges: scorer: sample_tools:positive): every number is above 0."""
    numbers = [v for v in outputs.values() if isinstance(v, int | float)]
    return all(n > 0 for n in numbers), f"{len(numbers)} number(s) checked"
