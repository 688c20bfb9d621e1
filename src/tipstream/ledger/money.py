"""Exact money: integer amounts in each asset's smallest unit, and the rate and fee in force.

The currency's smallest unit is 1/10**currency_scale (default 1/10,000 USD). The config check
guarantees one token is a whole number of units and so is the fee on one token, which makes the
split of any whole number of tokens exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tipstream.config import LedgerSettings, Settings

FEE_BPS_DENOMINATOR = 10_000


@dataclass(frozen=True)
class Rates:
    currency: str
    scale: int
    tokens_per_currency_unit: int
    units_per_token: int
    fee_bps: int

    @classmethod
    def from_settings(cls, settings: Settings | LedgerSettings) -> Rates:
        ledger = settings if isinstance(settings, LedgerSettings) else settings.ledger
        return cls(
            currency=ledger.currency,
            scale=ledger.currency_scale,
            tokens_per_currency_unit=ledger.tokens_per_currency_unit,
            units_per_token=10**ledger.currency_scale // ledger.tokens_per_currency_unit,
            fee_bps=ledger.platform_fee_bps,
        )

    def split(self, tokens: int) -> tuple[int, int, int]:
        """(gross, performer, platform) units for a tip of this many tokens."""
        gross = tokens * self.units_per_token
        platform, rest = divmod(gross * self.fee_bps, FEE_BPS_DENOMINATOR)
        assert rest == 0, "config check guarantees an exact split"
        return gross, gross - platform, platform

    def tokens_value(self, tokens: int) -> int:
        return tokens * self.units_per_token

    def to_units(self, amount: str | Decimal) -> int:
        """A decimal amount of currency ('9.99') in units; ValueError if not exact."""
        scaled = Decimal(amount).scaleb(self.scale)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{amount} has more than {self.scale} decimals")
        return int(scaled)

    def format_units(self, units: int) -> str:
        """Units as a decimal string with the currency's two display decimals at least."""
        value = Decimal(units).scaleb(-self.scale)
        text = format(value.normalize(), "f")
        whole, _, frac = text.partition(".")
        return f"{whole}.{frac.ljust(2, '0')}"
