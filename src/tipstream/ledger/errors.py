"""Ledger problems, and the one place that turns the database's ledger errors into them.

The migration's triggers and functions raise SQLSTATEs of class 'TS' (listed at the top of
0003_ledger.sql); the balance limit of wallets and earnings is a CHECK constraint.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tipstream.errors import Conflict, Forbidden, InvalidInput, NotFound, Problem


class InsufficientFunds(Conflict):
    slug, title = "insufficient-funds", "Not enough tokens"


class AccountFrozen(Forbidden):
    slug, title = "account-frozen", "Account frozen for review"


class AccountMismatch(InvalidInput):
    slug, title = "account-mismatch", "Account missing or of another asset"


class PendingTransferInvalid(Conflict):
    slug, title = "pending-transfer-invalid", "No such pending transfer, or resolved already"


class IdempotencyKeyReused(Conflict):
    slug, title = "idempotency-key-reused", "Idempotency key reused with a different request"


class TransferExists(Conflict):
    slug, title = "transfer-exists", "A different transfer with this id exists"


class StreamNotFound(NotFound):
    slug, title = "stream-not-found", "Stream not found"


class StreamNotLive(Conflict):
    slug, title = "stream-not-live", "Stream is not live"


class SelfTip(InvalidInput):
    slug, title = "self-tip", "Performers cannot tip themselves"


class AmountOutOfBounds(InvalidInput):
    slug, title = "amount-out-of-bounds", "Amount out of bounds"


class LedgerImmutable(Forbidden):
    slug, title = "ledger-immutable", "Ledger entries are immutable"


class LedgerError(Problem):
    """A ledger rule the database enforced that no caller should reach; a bug if seen."""

    status, slug, title = 500, "ledger-error", "Ledger error"


SQLSTATE_PROBLEMS: dict[str, type[Problem]] = {
    "TS001": AccountFrozen,
    "TS002": AccountMismatch,
    "TS003": PendingTransferInvalid,
    "TS004": PendingTransferInvalid,
    "TS005": LedgerImmutable,
    "TS006": LedgerImmutable,
    "TS010": IdempotencyKeyReused,
    "TS011": StreamNotFound,
    "TS012": StreamNotLive,
    "TS013": SelfTip,
    "TS014": InsufficientFunds,
    "TS015": LedgerError,
    "TS016": LedgerError,
}
BALANCE_LIMIT_CONSTRAINTS = {"ledger_accounts_debit_limit", "ledger_accounts_credit_limit"}
# Worth retrying the whole transaction: deadlock detected, serialization failure.
RETRYABLE = {"40P01", "40001"}


def problem_for(exc: psycopg.Error) -> Problem | None:
    state = exc.sqlstate or ""
    problem = SQLSTATE_PROBLEMS.get(state)
    if problem is not None:
        return problem(exc.diag.message_primary or problem.title)
    if state == "23514" and exc.diag.constraint_name in BALANCE_LIMIT_CONSTRAINTS:
        return InsufficientFunds("the account's balance may not go below zero")
    if state == "23505" and exc.diag.constraint_name == "ledger_transfers_pending_id_key":
        return PendingTransferInvalid("the pending transfer is resolved already")
    return None


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise the database's ledger errors as problems; anything else unchanged."""
    try:
        yield
    except psycopg.Error as exc:
        problem = problem_for(exc)
        if problem is None:
            raise
        raise problem from exc
