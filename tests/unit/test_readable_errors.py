"""Field errors from request validation are said in words a person filling a form understands
(the web forms show them next to the field), and the API answers a too-short password that way."""

from __future__ import annotations

import pytest

from tipstream.errors import readable_validation_message


@pytest.mark.parametrize(
    ("raw", "readable"),
    [
        ("Expected `str` of length >= 10", "must be at least 10 characters"),
        ("Expected `str` of length <= 64", "must be at most 64 characters"),
        ("Expected `str` of length >= 1", "must not be empty"),
        ("Expected `array` of length >= 1", "must not be empty"),
        ("Expected `int` >= 1", "must be at least 1"),
        ("Expected `int` <= 100000", "must be at most 100000"),
        ("Expected `array` of length <= 20", "must have at most 20 items"),
        ("Expected `str`, got `int`", "must be text"),
        ("Expected `int`, got `str`", "must be a whole number"),
        ("Expected `int | null`, got `str`", "must be a whole number"),
        ("Expected `str` matching regex '^[a-z]+$'", "is not in the expected format"),
        ("Invalid RFC3339 encoded date", "must be a date (YYYY-MM-DD)"),
        ("Invalid enum value 'wizard'", "is not one of the allowed choices"),
        # Unknown shapes pass through as they are, never dropped.
        ("Object contains unknown field `bogus`", "Object contains unknown field `bogus`"),
    ],
)
def test_validation_messages_in_words(raw: str, readable: str) -> None:
    assert readable_validation_message(raw) == readable
