"""Signing keys: generation (`material`) and persistence (`store`)."""
