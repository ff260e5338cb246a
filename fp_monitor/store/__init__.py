"""Storage: the history (one History class, in SQLite or PostgreSQL) and the lock file.

history.py      History: open, migrate, transactions; the parts it is made of:
connection.py   opening a SQLite file safely (owner-only, WAL, no FIFOs), errors as one line
migrations.py   the schema: named, append-only migrations
rows.py         how each value is stored in its column (timestamps, observations, value sets)
facts.py        what detection reads: known values, the previous check, a target's state
recording.py    appending to the hash chain, check rows, checkpoints, the seals
reads.py        what `history`, `stats`, the metrics and the watch read
audit.py        what verify, export and prune read and change
postgres.py     the same History in PostgreSQL (dialect.py: what the code needs of a database)
report_queries.py  the aggregate queries behind `fpmon report`
lockfile.py     the lock file

Imports `domain` and `config`; never the network, never presentation.
"""
