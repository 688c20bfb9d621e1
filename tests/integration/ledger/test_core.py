"""The ledger core: balances move only through immutable, balanced transfers; overdrafts,
asset mix-ups and frozen accounts are refused by the database; linked transfers commit
together; transfer ids are idempotency keys; two-phase reservations resolve once."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.integration.ledger.conftest import Fund, NewUser
from tipstream.config import ConfigError, Settings
from tipstream.db import Conn
from tipstream.ledger import errors, queries, service
from tipstream.ledger.money import Rates
from tipstream.ledger.service import TKN, NewTransfer


def tid() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_granted_tokens_land_in_the_wallet_and_the_books_balance(
    db: Conn, settings: Settings, new_user: NewUser, fund: Fund
) -> None:
    user = await new_user()
    await fund(user, 250)
    await fund(user, 50)
    wallet = await service.wallet(db, user)
    assert (wallet.balance, wallet.available, wallet.reserved, wallet.frozen) == (
        300,
        300,
        0,
        False,
    )
    totals = {(t.asset, t.kind): t for t in await service.balances(db, None)}
    # The issuance account is debited by exactly the tokens out (among others' tokens).
    assert totals[(TKN, "issuance")].debits_posted >= 300


async def test_transfers_cannot_be_updated_deleted_or_truncated(
    db: Conn, new_user: NewUser, fund: Fund
) -> None:
    user = await new_user()
    await fund(user, 10)
    [row] = await service.history(db, user, limit=1)
    for statement in (
        "UPDATE ledger_transfers SET amount = 1000 WHERE id = %s",
        "DELETE FROM ledger_transfers WHERE id = %s",
    ):
        with pytest.raises(psycopg.Error) as caught:
            await db.execute(statement, (row.id,))
        assert caught.value.sqlstate == "TS005"
    with pytest.raises(psycopg.Error) as caught:
        await db.execute("TRUNCATE ledger_transfers CASCADE")
    assert caught.value.sqlstate == "TS005"
    assert (await service.wallet(db, user)).balance == 10


async def test_balances_change_only_through_transfers(
    db: Conn, new_user: NewUser, fund: Fund
) -> None:
    user = await new_user()
    await fund(user, 10)
    account = await service.wallet_account_id(db, user)
    with pytest.raises(psycopg.Error) as caught:
        await db.execute(
            "UPDATE ledger_accounts SET credits_posted = credits_posted + 1000 WHERE id = %s",
            (account,),
        )
    assert caught.value.sqlstate == "TS006"
    with pytest.raises(psycopg.Error) as caught:
        await db.execute("DELETE FROM ledger_accounts WHERE id = %s", (account,))
    assert caught.value.sqlstate == "TS005"


async def test_overdraft_is_refused_and_changes_nothing(
    db: Conn, settings: Settings, new_user: NewUser, fund: Fund
) -> None:
    user, other = await new_user(), await new_user()
    await fund(user, 100)
    src, dst = await service.wallet_account_id(db, user), await service.wallet_account_id(db, other)
    with pytest.raises(errors.InsufficientFunds):
        await service.post_transfers(db, [NewTransfer(tid(), src, dst, TKN, 101, "test")])
    assert (await service.wallet(db, user)).balance == 100
    assert (await service.wallet(db, other)).balance == 0


async def test_linked_transfers_commit_together_or_not_at_all(
    db: Conn, new_user: NewUser, fund: Fund
) -> None:
    a, b, c = await new_user(), await new_user(), await new_user()
    await fund(a, 100)
    wa, wb, wc = [await service.wallet_account_id(db, u) for u in (a, b, c)]
    batch = [
        NewTransfer(tid(), wa, wb, TKN, 60, "test"),
        NewTransfer(tid(), wa, wc, TKN, 60, "test"),  # the second overdraws: both are refused
    ]
    with pytest.raises(errors.InsufficientFunds):
        await service.post_transfers(db, batch)
    assert [(await service.wallet(db, u)).balance for u in (a, b, c)] == [100, 0, 0]
    assert await queries.transfers_by_id(db, [t.id for t in batch]) == []

    ok = [NewTransfer(tid(), wa, wb, TKN, 60, "test"), NewTransfer(tid(), wa, wc, TKN, 40, "test")]
    await service.post_transfers(db, ok)
    assert [(await service.wallet(db, u)).balance for u in (a, b, c)] == [0, 60, 40]


async def test_transfer_ids_are_idempotency_keys(db: Conn, new_user: NewUser, fund: Fund) -> None:
    a, b = await new_user(), await new_user()
    await fund(a, 100)
    wa, wb = await service.wallet_account_id(db, a), await service.wallet_account_id(db, b)
    transfer = NewTransfer(tid(), wa, wb, TKN, 30, "test", reference="r1")
    first = await service.post_transfers(db, [transfer])
    again = await service.post_transfers(db, [transfer])
    assert [r.seq for r in first] == [r.seq for r in again]
    assert (await service.wallet(db, b)).balance == 30
    changed = NewTransfer(transfer.id, wa, wb, TKN, 31, "test", reference="r1")
    with pytest.raises(errors.TransferExists):
        await service.post_transfers(db, [changed])
    assert (await service.wallet(db, b)).balance == 30


async def test_accounts_of_different_assets_cannot_trade(
    db: Conn, settings: Settings, new_user: NewUser, fund: Fund
) -> None:
    user = await new_user()
    await fund(user, 100)
    wallet = await service.wallet_account_id(db, user)
    promotions = await service.platform_account_id(db, settings, service.PROMOTIONS)
    with pytest.raises(errors.AccountMismatch):
        await service.post_transfers(db, [NewTransfer(tid(), wallet, promotions, TKN, 5, "test")])
    with pytest.raises(errors.AccountMismatch):
        await service.post_transfers(db, [NewTransfer(tid(), wallet, 2**40, TKN, 5, "test")])
    assert (await service.wallet(db, user)).balance == 100


async def test_reservations_post_or_void_exactly_once(
    db: Conn, settings: Settings, new_user: NewUser, fund: Fund
) -> None:
    user = await new_user()
    await fund(user, 100)
    hold = tid()
    await service.reserve_tokens(
        db, settings, transfer_id=hold, user_id=user, tokens=70, kind="show"
    )
    wallet = await service.wallet(db, user)
    assert (wallet.balance, wallet.available, wallet.reserved) == (100, 30, 70)
    # Reserved tokens cannot be spent twice.
    with pytest.raises(errors.InsufficientFunds):
        await service.reserve_tokens(
            db, settings, transfer_id=tid(), user_id=user, tokens=31, kind="show"
        )
    await service.resolve_pending(db, transfer_id=tid(), pending_id=hold, post=True, amount=50)
    wallet = await service.wallet(db, user)
    assert (wallet.balance, wallet.available, wallet.reserved) == (50, 50, 0)
    with pytest.raises(errors.PendingTransferInvalid):
        await service.resolve_pending(db, transfer_id=tid(), pending_id=hold, post=False)

    second = tid()
    await service.reserve_tokens(
        db, settings, transfer_id=second, user_id=user, tokens=20, kind="show"
    )
    await service.resolve_pending(db, transfer_id=tid(), pending_id=second, post=False)
    wallet = await service.wallet(db, user)
    assert (wallet.balance, wallet.available, wallet.reserved) == (50, 50, 0)


async def test_a_frozen_wallet_cannot_be_debited_and_a_negative_one_not_released(
    db: Conn, settings: Settings, new_user: NewUser, fund: Fund
) -> None:
    user, other = await new_user(), await new_user()
    await fund(user, 40)
    await service.set_wallet_frozen(db, user, frozen=True, reason="review", actor_id=None)
    src, dst = await service.wallet_account_id(db, user), await service.wallet_account_id(db, other)
    with pytest.raises(errors.AccountFrozen):
        await service.post_transfers(db, [NewTransfer(tid(), src, dst, TKN, 5, "test")])
    # A forced reversal (a chargeback) may take it below zero; it then stays frozen.
    await service.post_transfers(
        db, [NewTransfer(tid(), src, dst, TKN, 50, "chargeback", forced=True)]
    )
    assert (await service.wallet(db, user)).balance == -10
    with pytest.raises(errors.InsufficientFunds):
        await service.set_wallet_frozen(db, user, frozen=False, reason=None, actor_id=None)
    assert (await service.wallet(db, user)).frozen
    # Put it back so later tests start from clean books (the negative is noted, not a fault).
    back = await service.wallet_account_id(db, other)
    await service.post_transfers(db, [NewTransfer(tid(), back, src, TKN, 10, "test")])
    await service.set_wallet_frozen(db, user, frozen=False, reason=None, actor_id=None)
    assert not (await service.wallet(db, user)).frozen


def test_every_whole_token_splits_exactly_at_the_default_rate_and_fee(settings: Settings) -> None:
    rates = Rates.from_settings(settings)
    assert (rates.units_per_token, rates.fee_bps) == (100, 3000)
    for tokens in range(1, 20_001):
        gross, performer, platform = rates.split(tokens)
        assert (
            gross == tokens * 100 and platform * 10 == gross * 3 and performer + platform == gross
        )
    assert rates.format_units(rates.split(1)[2]) == "0.003"
    assert rates.format_units(10_000) == "1.00"


@pytest.mark.parametrize(
    ("ledger", "message"),
    [
        ({"platform_fee_bps": 3333}, "ledger.platform_fee_bps"),
        ({"currency_scale": 1}, "ledger.currency_scale"),
        ({"tokens_per_currency_unit": 3}, "ledger.currency_scale"),
        ({"currency": "usd"}, "ledger.currency"),
        ({"tip_min_tokens": 0}, "ledger.tip_min_tokens"),
    ],
)
def test_config_refuses_rates_that_would_not_split_exactly(
    settings_factory, ledger: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_factory(ledger=ledger)
