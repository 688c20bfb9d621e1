"""Moderation: chat classifier and policy, reports with evidence, the review queue, actions."""
