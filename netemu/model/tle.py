"""Two-line element sets: parsing and checking standard 2- and 3-line TLE files.

CelesTrak's 3-line files (a name line, then the two element lines) and Hypatia's
``tles.txt`` (first a line "N_ORBITS N_SATS_PER_ORBIT", then 3-line sets whose
name line ends in the satellite's id) are read as they are.

SGP4 itself (``sgp4.api.Satrec.twoline2rv``) trusts its input; this module
checks what it does not: line numbers, line length, matching catalog numbers
and the modulo-10 checksum, and reports problems with file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sgp4.api import Satrec

from netemu.errors import InputError, read_text


@dataclass(frozen=True)
class ElementSet:
    """One TLE: optional name line, the two element lines, and where it was read."""

    name: str | None
    line1: str
    line2: str
    file: str
    line: int  # 1-based line of ``line1`` in ``file``

    @property
    def catalog_number(self) -> int:
        return self.satrec().satnum

    def satrec(self) -> Satrec:
        return Satrec.twoline2rv(self.line1, self.line2)


def checksum(line: str) -> int:
    """TLE checksum of the first 68 columns: digits count as themselves, '-' as 1."""
    total = 0
    for ch in line[:68]:
        if ch.isdigit():
            total += int(ch)
        elif ch == "-":
            total += 1
    return total % 10


def _check_line(text: str, number: int, file: str, lineno: int) -> None:
    if len(text) != 69:
        raise InputError(
            f"TLE line {number} has {len(text)} characters, expected 69", file, None, lineno
        )
    if not text.startswith(f"{number} "):
        raise InputError(f"expected TLE line {number} here", file, None, lineno)
    if not text[68].isdigit():
        raise InputError("TLE checksum column (69) is not a digit", file, None, lineno)
    want = checksum(text)
    if int(text[68]) != want:
        raise InputError(
            f"TLE checksum mismatch: column 69 says {text[68]}, the line sums to {want}",
            file,
            None,
            lineno,
        )


_HYPATIA_HEADER = re.compile(r"^\s*(\d+)\s+(\d+)\s*$")


def hypatia_header(text: str) -> tuple[int, int] | None:
    """(orbits, satellites per orbit) of a Hypatia ``tles.txt``'s first line, if it has one."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    m = _HYPATIA_HEADER.match(first)
    return (int(m[1]), int(m[2])) if m else None


def parse_tle(text: str, file: str = "<tle>") -> list[ElementSet]:
    """Parse TLE text (2-line sets, 3-line sets with a name line, or a mix; a Hypatia
    header first, whose count must match)."""
    rows = [(i + 1, raw.rstrip()) for i, raw in enumerate(text.splitlines())]
    rows = [(n, t) for n, t in rows if t.strip()]
    header = hypatia_header(text)
    if header:
        rows = rows[1:]
    sets: list[ElementSet] = []
    i = 0
    while i < len(rows):
        name = None
        lineno, first = rows[i]
        if not first.startswith("1 "):
            name = first[2:].strip() if first.startswith("0 ") else first.strip()
            i += 1
            if i >= len(rows):
                raise InputError(f"name line {name!r} is not followed by a TLE", file, None, lineno)
            if not rows[i][1].startswith("1 "):
                raise InputError(
                    f"expected TLE line 1 after the name line {name!r} (line {lineno}), got "
                    f"{rows[i][1][:20]!r}", file, None, rows[i][0],
                )  # fmt: skip
        if i + 1 >= len(rows):
            raise InputError("TLE line 2 is missing", file, None, rows[i][0])
        (n1, l1), (n2, l2) = rows[i], rows[i + 1]
        _check_line(l1, 1, file, n1)
        _check_line(l2, 2, file, n2)
        if l1[2:7] != l2[2:7]:
            raise InputError(
                f"catalog numbers differ between line 1 ({l1[2:7].strip()}) "
                f"and line 2 ({l2[2:7].strip()})",
                file,
                None,
                n2,
            )
        try:
            rec = Satrec.twoline2rv(l1, l2)
        except ValueError as exc:
            raise InputError(f"TLE cannot be parsed: {exc}", file, None, n1) from None
        if not 0 <= rec.ecco < 1 or rec.no_kozai <= 0:
            raise InputError("TLE does not describe a closed orbit", file, None, n1)
        sets.append(ElementSet(name, l1, l2, file, n1))
        i += 2
    if not sets:
        raise InputError("no TLE found", file)
    if header and header[0] * header[1] != len(sets):
        raise InputError(
            f"the first line says {header[0]} orbits of {header[1]} satellites "
            f"({header[0] * header[1]}), the file has {len(sets)} TLEs", file, None, 1,
        )  # fmt: skip
    return sets


def read_tle_file(path: str | Path) -> list[ElementSet]:
    path = Path(path)
    return parse_tle(read_text(path, "TLE file", encoding="ascii"), str(path))
