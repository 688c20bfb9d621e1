"""The automatic checks of a submission: age from the date of birth (per-country minimum), the MRZ
against the form, the registration's date of birth, and a keyed index of the document number so
the same document on another account is found without storing the number in clear."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from datetime import date
from typing import Any

from tipstream.accounts.service import age_on
from tipstream.config import Settings
from tipstream.kyc import mrz as mrzlib
from tipstream.kyc.schemas import SubmissionForm


class IndexKeyMissing(Exception):
    """The kyc_index_key secret is missing."""


def minimum_age(settings: Settings, country: str) -> int:
    return settings.security.min_age_by_country.get(country.upper(), settings.security.min_age)


def is_old_enough(settings: Settings, born: date, country: str, today: date) -> bool:
    return age_on(born, today) >= minimum_age(settings, country)


def normalize_number(number: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", number.upper())


def document_index(settings: Settings, document_type: str, country: str, number: str) -> str:
    key = settings.secrets.kyc_index_key
    if not key:
        raise IndexKeyMissing(
            "the secret kyc_index_key is missing: create it with `tipctl keys init`"
        )
    message = f"{document_type}|{country.upper()}|{normalize_number(number)}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def name_tokens(name: str) -> set[str]:
    """Upper-case ASCII words, accents dropped: 'Ånna-María' and the MRZ's ANNA MARIA agree."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return {t for t in re.split(r"[^A-Z]+", ascii_name.upper()) if t}


def cross_check(form: SubmissionForm, parsed: mrzlib.Mrz) -> list[str]:
    """Which form fields disagree with the MRZ."""
    mismatches = []
    mrz_names = name_tokens(parsed.surname + " " + parsed.given_names)
    if not mrz_names or mrz_names != name_tokens(form.legal_name):
        mismatches.append("legal_name")
    if parsed.birth_date != form.date_of_birth:
        mismatches.append("date_of_birth")
    if normalize_number(parsed.document_number) != normalize_number(form.document_number):
        mismatches.append("document_number")
    if parsed.expiry_date != form.document_expiry:
        mismatches.append("document_expiry")
    return mismatches


def mrz_findings(form: SubmissionForm, text: str, today: date) -> tuple[list[str], dict[str, Any]]:
    """(flags, checks) of an MRZ that parsed; MrzError propagates for one that does not."""
    parsed = mrzlib.parse(text, today=today)
    mismatches = cross_check(form, parsed)
    checks: dict[str, Any] = {
        "mrz": {"format": parsed.format, "check_digits": "valid", "mismatches": mismatches}
    }
    flags = ["mrz_mismatch"] if mismatches else []
    if parsed.format == "TD3" and form.document_type != "passport":
        flags.append("mrz_document_type")
    return flags, checks
