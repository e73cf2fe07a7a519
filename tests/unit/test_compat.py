"""fleetpulse.compat: what 3.11's standard library does, also on 3.10 (tests/other_pythons.sh runs this there)."""

from __future__ import annotations

import io

from fleetpulse.compat import csv_writer


class Named:
    def __str__(self) -> str:
        return "\ue000"


def test_the_csv_writer_writes_nul_quotes_and_any_field_as_python_3_11s_does() -> None:
    """3.10's csv module refuses a NUL; the ticket and audit exports must write the same bytes on every Python,
    whatever a field holds (a private-use character the 3.10 writer uses as a stand-in, a non-text field)."""
    out = io.StringIO()
    csv_writer(out).writerow(["a\x00b", 'x"\x00,', "\ue000\x00", None, 1.5, Named(), "l\n\x00"])
    csv_writer(out).writerow(["plain", 7])
    assert out.getvalue() == 'a\x00b,"x""\x00,",\ue000\x00,,1.5,\ue000,"l\n\x00"\r\nplain,7\r\n'
