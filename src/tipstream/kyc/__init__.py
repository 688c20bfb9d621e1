"""KYC and age verification: performer onboarding, document checks, the review queue."""
