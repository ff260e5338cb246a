"""Storage: the history (SQLite: migrations, recording with the hash chain, the facts detection
reads, the reads behind `history` and `stats`, the audit operations) and the lock file.

Imports `domain` and `config`; never the network, never presentation.
"""
