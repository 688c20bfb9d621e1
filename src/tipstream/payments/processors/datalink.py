"""CCBill's Data Link Extract System: the transactions of a time window, as CSV.

One GET to ``payments.ccbill.datalink_url`` (https://datalink.ccbill.com/data/main.cgi) with
clientAccnum, clientSubacc, username, password (the Data Link user the operator keeps in the
secrets dir), startTime and endTime (YYYYMMDDHHMMSS in CCBill's zone) and transactionTypes. The
answer is one CSV line per transaction, its columns in the order CCBill documents per type:

    NEW         type, clientAccnum, clientSubacc, subscriptionId, timestamp, firstName,
                lastName, email, affiliate, status, amount, initialPeriod, recurringAmount,
                recurringPeriod, recurringStatus, cardType
                (the older 22-column layout: type, clientAccnum, clientSubacc, subscriptionId,
                timestamp, firstName, lastName, username, password, address, city, state,
                country, postalCode, email, affiliate, status, amount, initialPeriod,
                recurringAmount, recurringPeriod, rebills)
    REBILL      type, clientAccnum, clientSubacc, subscriptionId, timestamp, transactionId, amount
    REFUND, CHARGEBACK, VOID
                type, clientAccnum, clientSubacc, subscriptionId, timestamp, amount

An empty answer or a lone ``1`` means no transactions; ``Error: ...`` is a refusal. The whole
answer is parsed before anything is used, so an error or one malformed line changes nothing.
Only what the ledger needs is kept (ids, times, amounts): names and e-mail addresses are dropped
here. The credentials are in the request's query string, so no URL, query or exception text of
the HTTP client ever reaches an error message or a log line.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Literal

import httpx

from tipstream.config import CcbillSettings, Secrets
from tipstream.errors import Problem

RecordType = Literal["NEW", "REBILL", "REFUND", "CHARGEBACK", "VOID"]
TRANSACTION_TYPES: tuple[RecordType, ...] = ("NEW", "REBILL", "REFUND", "CHARGEBACK", "VOID")
TIME_FORMAT = "%Y%m%d%H%M%S"
# Columns per type: (least count, subscription id, timestamp, amount, transaction id).
NEW_CURRENT = (16, 3, 4, 10, None)
NEW_LEGACY = (22, 3, 4, 17, None)
LAYOUTS: dict[str, tuple[int, int, int, int, int | None]] = {
    "REBILL": (7, 3, 4, 6, 5),
    "REFUND": (6, 3, 4, 5, None),
    "CHARGEBACK": (6, 3, 4, 5, None),
    "VOID": (6, 3, 4, 5, None),
}
SUBSCRIPTION_ID = re.compile(r"^[0-9]{1,32}$")
AMOUNT = re.compile(r"^-?[0-9]{1,12}(\.[0-9]{1,4})?$")
MAX_BODY_BYTES = 32 * 1024 * 1024


class DatalinkError(Problem):
    """Data Link could not be asked, refused, or answered something we cannot read."""

    status, slug, title = 502, "datalink-failed", "CCBill Data Link failed"


class DatalinkNotConfigured(Problem):
    status, slug, title = 409, "datalink-not-configured", "CCBill Data Link is not configured"


@dataclass(frozen=True)
class DatalinkRecord:
    type: RecordType
    client_accnum: str
    client_subacc: str
    subscription_id: str
    # When it happened, in UTC.
    at: datetime
    amount: str
    transaction_id: str | None = None


def _zone(config: CcbillSettings) -> timezone:
    return timezone(timedelta(hours=config.datalink_utc_offset_hours))


def format_time(moment: datetime, config: CcbillSettings) -> str:
    """A UTC moment as Data Link's startTime/endTime: YYYYMMDDHHMMSS in CCBill's zone."""
    return moment.astimezone(_zone(config)).strftime(TIME_FORMAT)


def _parse_time(text: str, config: CcbillSettings) -> datetime:
    text = text.strip()
    for layout in (TIME_FORMAT, "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            local = datetime.strptime(text, layout)  # the zone is CCBill's, set below
        except ValueError:
            continue
        return local.replace(tzinfo=_zone(config)).astimezone(UTC)
    raise ValueError("timestamp is not YYYYMMDDHHMMSS")


def _layout(kind: str, columns: int) -> tuple[int, int, int, int, int | None]:
    if kind == "NEW":
        return NEW_LEGACY if columns == NEW_LEGACY[0] else NEW_CURRENT
    return LAYOUTS[kind]


def parse(body: str, config: CcbillSettings, secrets: tuple[str, ...] = ()) -> list[DatalinkRecord]:
    """Every record of a Data Link answer, or DatalinkError naming the first bad line (by
    number: lines hold consumers' names and addresses, which stay out of errors and logs)."""
    text = body.lstrip("\ufeff").strip()
    if text in ("", "1"):
        return []
    for line in text.splitlines():
        if line.strip().startswith("Error:"):
            reason = redact(line.strip().removeprefix("Error:").strip(), secrets)[:200]
            raise DatalinkError(f"CCBill Data Link refused the request: {reason}")
    records = []
    try:
        rows = list(csv.reader(io.StringIO(text), skipinitialspace=True, strict=True))
    except csv.Error:
        raise DatalinkError("CCBill Data Link answered malformed CSV") from None
    for number, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        kind = cells[0].upper()
        if kind not in TRANSACTION_TYPES:
            raise DatalinkError(f"CCBill Data Link line {number}: unknown transaction type")
        least, sub_at, time_at, amount_at, transaction_at = _layout(kind, len(cells))
        if len(cells) < least:
            raise DatalinkError(
                f"CCBill Data Link line {number}: {kind} has {len(cells)} columns, "
                f"at least {least} expected"
            )
        subscription, amount = cells[sub_at], cells[amount_at]
        if not SUBSCRIPTION_ID.match(subscription):
            raise DatalinkError(f"CCBill Data Link line {number}: bad subscription id")
        if not AMOUNT.match(amount):
            raise DatalinkError(f"CCBill Data Link line {number}: bad amount")
        try:
            at = _parse_time(cells[time_at], config)
            Decimal(amount)
        except (ValueError, InvalidOperation):
            raise DatalinkError(f"CCBill Data Link line {number}: bad timestamp") from None
        records.append(
            DatalinkRecord(
                type=kind,
                client_accnum=cells[1],
                client_subacc=cells[2],
                subscription_id=subscription,
                at=at,
                amount=amount.lstrip("-"),
                transaction_id=cells[transaction_at] if transaction_at is not None else None,
            )
        )
    return records


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def credentials(config: CcbillSettings, secrets: Secrets) -> tuple[str, str]:
    username, password = secrets.ccbill_datalink_username, secrets.ccbill_datalink_password
    if not (username and password and config.client_accnum):
        raise DatalinkNotConfigured(
            "CCBill Data Link needs payments.ccbill.client_accnum and the secret files "
            "ccbill_datalink_username and ccbill_datalink_password in the secrets dir"
        )
    return username, password


async def fetch(
    config: CcbillSettings, secrets: Secrets, start: datetime, end: datetime
) -> list[DatalinkRecord]:
    """The transactions of [start, end) (UTC) that Data Link reports for this (sub)account."""
    username, password = credentials(config, secrets)
    params = {
        "startTime": format_time(start, config),
        "endTime": format_time(end, config),
        "transactionTypes": ",".join(TRANSACTION_TYPES),
        "clientAccnum": config.client_accnum,
        "clientSubacc": config.client_subacc,
        "username": username,
        "password": password,
    }
    try:
        async with httpx.AsyncClient(
            timeout=config.datalink_timeout_seconds, follow_redirects=False
        ) as client:
            response = await client.get(config.datalink_url, params=params)
    except httpx.HTTPError as exc:
        # httpx's messages may carry the URL, and with it the password: name the kind only.
        raise DatalinkError(f"CCBill Data Link unreachable ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise DatalinkError(f"CCBill Data Link answered HTTP {response.status_code}")
    if len(response.content) > MAX_BODY_BYTES:
        raise DatalinkError("CCBill Data Link answered more than 32 MiB")
    try:
        body = response.content.decode("utf-8")
    except UnicodeDecodeError:
        body = response.content.decode("latin-1")
    return parse(body, config, (username, password))


class _NoQueryInLogs(logging.Filter):
    """httpx logs each request's URL at INFO; Data Link's carries the credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                str(a).split("?", 1)[0] if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_NoQueryInLogs())
