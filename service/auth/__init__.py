"""Accounts and sessions: password hashing, tokens and login throttling."""
