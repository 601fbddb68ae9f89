"""One-line errors for the settings Hydra itself rejects (unknown keys, wrong types, a missing
sweep file, a typo inside one), in the same form as the harness's own `SettingError`s.

Hydra prints such errors over several lines (the error, the offending key again, the config
class, a hint about HYDRA_FULL_ERROR) unless HYDRA_FULL_ERROR=1, its documented switch, in
which case it lets the exception propagate. `run` sets that switch for Hydra and catches the
exception itself: one line, exit code 2. A user who sets HYDRA_FULL_ERROR=1 still gets the
full stack trace.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from harness import interrupts

FULL_ERROR = "HYDRA_FULL_ERROR"

# Lines of Hydra/OmegaConf messages that repeat what the first line says.
_NOISE = (
    "full_key:",
    "object_type=",
    "reference_type=",
    "Set the environment variable HYDRA_FULL_ERROR",
    "To append to your config use",
    "msg:",
)


def one_line(exc: BaseException) -> str:
    """The message of `exc` and of its cause as one line, without Hydra's repetitions."""
    parts: list[str] = []
    for err in (exc, exc.__cause__):
        if err is None:
            continue
        for line in str(err).splitlines():
            line = line.strip()
            if line.startswith("Config search path"):
                break  # the search path listing is long and rarely the point
            if line and not line.startswith(_NOISE) and line not in parts:
                parts.append(line)
    text = "; ".join(parts) or type(exc).__name__
    return text.replace(":; ", ": ").replace(".; ", "; ")


def run(main: Callable[[], Any]) -> Any:
    """Call a Hydra entry point; any exception it lets out becomes one line and exit code 2."""
    wants_trace = os.environ.get(FULL_ERROR) == "1"
    os.environ[FULL_ERROR] = "1"  # Hydra: raise, do not print
    try:
        return main()
    except Exception as exc:
        if interrupts.requested():  # whatever a Ctrl-C broke on its way out, it is the Ctrl-C
            raise KeyboardInterrupt from None
        if wants_trace:
            raise
        print(f"harness: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
