"""TLE parsing: checksums, formats and the errors users get."""

import pytest

from netemu.errors import InputError
from netemu.model.tle import checksum, parse_tle

from helpers import VANGUARD_L1 as L1
from helpers import VANGUARD_L2 as L2


def _with_checksum(line: str) -> str:
    return line[:68] + str(checksum(line))


def test_checksum_of_published_lines():
    assert checksum(L1) == 3
    assert checksum(L2) == 7


def test_two_and_three_line_sets_parse():
    sets = parse_tle(f"{L1}\n{L2}\nVANGUARD 1\n{L1}\n{L2}\n0 VANGUARD 1\n{L1}\n{L2}\n")
    assert [s.name for s in sets] == [None, "VANGUARD 1", "VANGUARD 1"]
    assert [s.line for s in sets] == [1, 4, 7]
    assert all(s.catalog_number == 5 for s in sets)


def test_bad_checksum_names_file_and_line():
    bad = L2[:68] + "0"
    with pytest.raises(InputError) as err:
        parse_tle(f"SAT\n{L1}\n{bad}\n", "sats.tle")
    assert str(err.value) == (
        "sats.tle:3: TLE checksum mismatch: column 69 says 0, the line sums to 7"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{L1[:60]}\n{L2}", "TLE line 1 has 60 characters, expected 69"),
        (f"{L1}\n{L1}", "expected TLE line 2 here"),
        (f"{L1}\n{_with_checksum(L2.replace('00005', '00006', 1))}", "catalog numbers differ"),
        ("JUST A NAME\n", "is not followed by a TLE"),
        ("", "no TLE found"),
    ],
)
def test_malformed_sets_are_rejected(text, problem):
    with pytest.raises(InputError, match=problem):
        parse_tle(text, "x.tle")
