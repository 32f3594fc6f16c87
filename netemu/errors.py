"""User-facing errors: bad input files, bad command lines, missing tools.

Every problem a user can fix is raised as an :class:`InputError`. The CLI prints
its one-line message and exits with status 2, without a traceback and before
any network state exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class InputError(Exception):
    """A problem in something the user gave us, located as precisely as we can."""

    problem: str
    file: str | Path | None = None
    key: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.problem}"


# Exit statuses (README: exit statuses); a signal's stop is 128 + its number (signals.py).
EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_INPUT = 2


def read_text(path: Path, what: str = "file", encoding: str = "utf-8") -> str:
    """A user's file as text, or an :class:`InputError` saying why not."""
    try:
        return Path(path).read_text(encoding=encoding)
    except FileNotFoundError:
        raise InputError(f"{what} not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what}: {exc}", path) from None
