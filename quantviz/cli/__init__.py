"""The command-line front end (no Qt)."""
