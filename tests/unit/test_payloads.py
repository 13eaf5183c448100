"""The door checks, without any service: run ids, wait keys and payloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abstractruntime_celery.errors import PayloadError
from abstractruntime_celery.payloads import (
    check_new_run_id,
    check_object,
    check_run_id,
    check_wait_key,
    payload_bytes,
)


@pytest.mark.parametrize("good", ["a", "A-b_9", "x" * 128, "sub-" + "0" * 31])
def test_a_run_id_of_the_allowed_characters_is_taken_as_it_is(good: str) -> None:
    assert check_run_id(good) is good


@pytest.mark.parametrize("bad", ["", "job-1\n", "\njob-1", " job-1", "job-1 ", "job 1", "x" * 129, "é",
                                 "runs:x", "a\x00b", "job-1\r"])
def test_a_run_id_that_normalising_would_change_is_refused(bad: str) -> None:
    with pytest.raises(PayloadError, match="exactly"):
        check_run_id(bad)


@given(st.text(max_size=140))
def test_a_run_id_is_either_refused_or_exactly_what_was_given(text: str) -> None:
    try:
        out = check_run_id(text)
    except PayloadError:
        return
    assert out == text == text.strip() and text.isascii()


def test_callers_may_not_choose_an_id_of_the_childrens_form() -> None:
    with pytest.raises(PayloadError, match="child"):
        check_new_run_id("sub-" + "ab" * 16)
    assert check_new_run_id("sub-" + "AB" * 16)  # not our form (upper case hex)


def test_a_wait_key_is_bounded_and_must_be_text() -> None:
    assert check_wait_key("k" * 10, limit=10, what="e") == "k" * 10
    for bad, why in ((None, "string"), ("", "non-empty"), ("k" * 11, "11 bytes"), ("\ud800", "valid text")):
        with pytest.raises(PayloadError, match=why):
            check_wait_key(bad, limit=10, what="e")


def test_what_the_payload_check_accepts_has_the_size_the_store_writes() -> None:
    value = {"name": "é" * 10}
    check_object(value, what="p", limit=1000)
    assert len(payload_bytes(value)) == len('{"name":""}') + 20  # UTF-8, not \\u escapes
    with pytest.raises(PayloadError):
        check_object({"x": "\ud800"}, what="p", limit=1000)
