"""The encrypted document vault: AES-256-GCM envelope encryption of KYC documents and
moderation evidence, with rotatable key-encryption keys and crypto-shredding."""
