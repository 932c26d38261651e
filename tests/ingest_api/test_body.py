"""The ingest body's fast checks agree with their slow, obvious definitions."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from ingest_api import body

DIGITS_AND_NOISE = st.lists(st.sampled_from([b"1", b"9", b"0", b" ", b"-", b".", b"e", b"\xff", b"a"]), max_size=60)


@given(st.lists(st.one_of(st.binary(max_size=30), DIGITS_AND_NOISE.map(b"".join),
                          st.integers(min_value=0, max_value=10**25).map(lambda n: str(n).encode()))).map(b"".join))
def test_the_long_number_check_finds_exactly_twenty_digits_in_a_row(data):
    assert (body._LONG_RUN in data.translate(body._DIGITS_TO_ZERO)) == (re.search(rb"\d{20}", data) is not None)
