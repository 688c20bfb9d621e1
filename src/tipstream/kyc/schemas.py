"""Requests and responses of the KYC API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from tipstream.accounts.schemas import PRINTABLE
from tipstream.kyc.mrz import Mrz

DocumentType = Literal["passport", "id_card", "driving_licence"]
KycStatus = Literal[
    "not_started", "pending", "submitted", "approved", "rejected", "needs_resubmission", "expired"
]
Decision = Literal["approve", "reject", "needs_resubmission"]
LegalName = Annotated[str, msgspec.Meta(min_length=2, max_length=200, pattern=PRINTABLE)]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{2}$")]
DocumentNumber = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9 <-]{3,30}$")]
MrzText = Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[A-Za-z0-9<\s]*$")]
Reason = Annotated[str, msgspec.Meta(min_length=3, max_length=1000, pattern=PRINTABLE)]
AgreementVersion = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=PRINTABLE)]


class SubmissionForm(msgspec.Struct, forbid_unknown_fields=True):
    """The text fields of the multipart onboarding form (files: front, back, selfie)."""

    legal_name: LegalName
    date_of_birth: date
    country: Country
    document_type: DocumentType
    document_number: DocumentNumber
    document_expiry: date
    agreement_version: AgreementVersion
    accept_agreement: bool
    mrz: MrzText | None = None


class StoredForm(msgspec.Struct):
    """What the vault keeps of the form (encrypted as one object)."""

    legal_name: str
    date_of_birth: date
    country: str
    document_type: str
    document_number: str
    document_expiry: date
    agreement_version: str
    agreement_accepted_at: datetime
    mrz: str | None = None


class KycState(msgspec.Struct):
    """A performer's own verification state: what they see and are told."""

    status: KycStatus
    submission_id: int | None
    reason: str | None
    submitted_at: datetime | None
    decided_at: datetime | None
    document_expires_on: date | None
    may_publish: bool
    agreement_version: str


class SubmissionSummary(msgspec.Struct):
    """A row of the review queue: no personal data beyond what sorting needs."""

    id: int
    user_id: int
    status: str
    country: str
    document_type: str
    document_expires_on: date
    flags: list[str]
    submitted_at: datetime
    decided_at: datetime | None
    decision_reason: str | None
    purged: bool


class SubmissionDetail(msgspec.Struct):
    """One submission with its decrypted form, for reviewers."""

    id: int
    user_id: int
    user_email: str
    status: str
    form: StoredForm | None
    flags: list[str]
    checks: dict[str, object]
    images: list[str]
    submitted_at: datetime
    decided_at: datetime | None
    decided_by: int | None
    decision_reason: str | None
    purged: bool


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True):
    decision: Decision
    reason: Reason | None = None


class MrzRequest(msgspec.Struct, forbid_unknown_fields=True):
    mrz: MrzText


class MrzSuggestion(msgspec.Struct):
    """The MRZ tesseract read off the document images, for the reviewer to check and submit to
    POST .../mrz; only one whose check digits all hold is suggested."""

    ocr_available: bool
    found: bool
    mrz: str | None = None
    image: str | None = None
    # Characters changed from what OCR read (O/0-style confusions); unconfirmed_corrections of
    # them sit where no check digit reaches (names, country codes, sex): look at those.
    corrections: int = 0
    unconfirmed_corrections: int = 0
    fields: Mrz | None = None
    # Form fields the suggested MRZ disagrees with.
    mismatches: list[str] = msgspec.field(default_factory=list)
    note: str | None = None
