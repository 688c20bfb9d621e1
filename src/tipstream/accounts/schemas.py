"""Requests and responses of the accounts API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

Role = Literal["viewer", "performer", "moderator", "admin"]
SelfServiceRole = Literal["viewer", "performer"]
STAFF_ROLES: frozenset[str] = frozenset({"moderator", "admin"})

# Postgres text cannot hold NUL, and names are shown to others: no control characters, and
# something other than blanks (the service strips them).
_EMAIL_PART = r"[^@\s\x00-\x1f\x7f]+"
PRINTABLE = r"^(?=.*\S)[^\x00-\x1f\x7f]+$"
NO_NUL = r"^[^\x00]*$"
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3, max_length=254, pattern=rf"^{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}$"
    ),
]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=256)]
AnyPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=PRINTABLE)]
# [0-9], not \d: \d also matches other scripts' digits (Arabic-Indic, ...), no authenticator
# shows those, and the code comparison is over ASCII.
TotpCode = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")]
RecoveryCode = Annotated[str, msgspec.Meta(min_length=8, max_length=32)]
TokenName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=PRINTABLE)]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    date_of_birth: date
    display_name: DisplayName
    role: SelfServiceRole = "viewer"


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: AnyPassword
    totp_code: TotpCode | None = None
    recovery_code: RecoveryCode | None = None


class ChangePasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    current_password: AnyPassword
    new_password: Password


class TotpConfirmRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: TotpCode


class TotpEnrollment(msgspec.Struct):
    secret: str
    otpauth_uri: str
    qr_svg: str


class RecoveryCodes(msgspec.Struct):
    recovery_codes: list[str]


class ApiTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: TokenName
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None


class ApiToken(msgspec.Struct):
    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewApiToken(msgspec.Struct):
    id: int
    name: str
    expires_at: datetime | None
    # Shown once; only its hash is stored.
    token: str


class SetRoleRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: Role


class DisableRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=PRINTABLE)]


class PermissionsRequest(msgspec.Struct, forbid_unknown_fields=True):
    permissions: list[Literal["finance"]]


class User(msgspec.Struct):
    id: int
    email: str
    display_name: str
    role: Role
    permissions: list[str]
    totp_enabled: bool
    disabled: bool
    created_at: datetime


class Me(msgspec.Struct):
    user: User
    # The token to send as X-CSRF-Token with state-changing requests from the browser.
    csrf_token: str | None
    mfa_verified: bool
