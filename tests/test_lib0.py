"""lib0 varuints: every value reads back from any position, and truncation is an error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sphaera_crdt.core.lib0 import read_varuint, write_varuint
from sphaera_crdt.errors import InvalidUpdate


@given(
    prefix=st.binary(max_size=3),
    value=st.integers(min_value=0, max_value=2**63 - 1),
    suffix=st.binary(max_size=3),
)
def test_a_varuint_reads_back_wherever_it_sits(prefix: bytes, value: int, suffix: bytes) -> None:
    encoded = write_varuint(value)
    assert read_varuint(prefix + encoded + suffix, len(prefix)) == (
        value,
        len(prefix) + len(encoded),
    )


@given(value=st.integers(min_value=0x80, max_value=2**63 - 1))
def test_a_truncated_varuint_is_an_error(value: int) -> None:
    encoded = write_varuint(value)
    for cut in range(len(encoded)):
        with pytest.raises(InvalidUpdate):
            read_varuint(encoded[:cut], 0)
