"""The token economy: a double-entry ledger (accounts, transfers, wallets), tips, the outbox."""
