"""Backups: one age-encrypted archive with a pg_dump of the database, the vault's ciphertext,
the vault's keys and a manifest of checksums; verified and restored into an empty system."""
