"""Token purchases: processor adapters (dev, ccbill, verotel, stripe), their hosted checkouts and
webhooks, and the ledger effects of sales, refunds and chargebacks."""
