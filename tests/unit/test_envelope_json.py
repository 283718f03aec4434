"""``envelope_json`` writes exactly what ``ReportEnvelope.model_dump_json`` writes, for any
record JSON (a regulator's reader parses it; the signature covers ``record_json``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.reports import ReportEnvelope, envelope_json

hexes = st.text("0123456789abcdef", min_size=128, max_size=128)


@settings(max_examples=300, deadline=None)
@given(record=st.text(), seq=st.integers(1, 2**62), prev=hexes, sig=hexes,
       key=st.text("0123456789abcdef", min_size=64, max_size=64),
       j=st.sampled_from(["UK", "DK", "ES", "MT"]))  # fmt: skip
def test_any_record_json_is_enveloped_as_the_model_does(
    record: str, seq: int, prev: str, sig: str, key: str, j: str
) -> None:
    model = ReportEnvelope(jurisdiction=j, seq=seq, record_json=record, prev_signature=prev,
                           signature=sig, public_key=key)  # fmt: skip
    assert envelope_json(j, seq, record, prev, sig, key) == model.model_dump_json().encode()
    assert ReportEnvelope.model_validate_json(envelope_json(j, seq, record, prev, sig, key)) == (
        model
    )
