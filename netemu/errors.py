"""User-facing errors: bad input files, bad command lines, missing tools.

Every problem a user can fix is raised as an :class:`InputError`. The CLI prints
its one-line message and exits with status 2, without a traceback and before
any network state exists.
"""

from __future__ import annotations

import errno
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
        return printable(f"{where}{key}{self.problem}")


def printable(text: str) -> str:
    """``text`` on one line, safe for a terminal: a user's newlines, escape sequences
    and other unprintable characters appear escaped (\\n, \\x1b, \\u202e)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class ResultsError(RuntimeError):
    """A run's results could not be written (a full disk, a folder removed)."""


class TeardownError(RuntimeError):
    """Removing a run failed part-way; the message says how to remove the rest."""


# Exit statuses (README: exit statuses); a signal's stop is 128 + its number (signals.py).
EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_INPUT = 2


def describe(exc: BaseException) -> str:
    """An exception as one line for a user: netemu's own say what failed and where;
    anything else is named by its type (the traceback is for ``--debug``)."""
    text = printable(" ".join(str(exc).split()))
    if (
        isinstance(exc, MemoryError)
        or getattr(exc, "errno", None) == errno.ENOMEM
        or (isinstance(exc, ImportError) and "failed to map segment" in text)
    ):  # the machine's memory, or a limit on it (ulimit -v, a container's)
        return "out of memory" + (f" ({text})" if text else "")
    if type(exc).__module__.startswith("netemu") and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: The most netemu reads of one input file (a full TLE catalogue is ~3 MB): /dev/zero
#: or a runaway generator piped in is refused, not read until memory runs out.
MAX_INPUT_BYTES = 64 * 2**20


def read_text(path: Path, what: str = "file", encoding: str = "utf-8") -> str:
    """A user's file as text, or an :class:`InputError` saying why not."""
    try:
        chunks, size = [], 0
        with open(path, "rb") as f:  # any readable file, a pipe too (<(generator))
            # In chunks: read(MAX + 1) would allocate the whole bound for every file.
            while size <= MAX_INPUT_BYTES and (chunk := f.read(1 << 20)):
                chunks.append(chunk)
                size += len(chunk)
        if size > MAX_INPUT_BYTES:
            raise InputError(f"{what} is larger than {MAX_INPUT_BYTES >> 20} MiB", path)
        return b"".join(chunks).decode(encoding)
    except FileNotFoundError:
        raise InputError(f"{what} not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what}: {' '.join(str(exc).split())}", path) from None
    except ValueError:  # a NUL in the path
        raise InputError(f"{what}: not a usable path", repr(str(path))) from None
