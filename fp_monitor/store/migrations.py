"""The history's schema: named, append-only migrations (History._migrate runs them)."""

from __future__ import annotations

# Append-only: never edit or reorder an entry; add a new one. Each runs once, in order.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_observations",
        """
        CREATE TABLE observations (
            id INTEGER PRIMARY KEY,
            check_id TEXT NOT NULL,
            observed_at TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT 'probe',
            target TEXT NOT NULL,
            provider TEXT NOT NULL,
            base_url TEXT NOT NULL,
            requested_model TEXT NOT NULL,
            resolved_model TEXT,
            fingerprint TEXT,
            fingerprint_state TEXT,
            response_id TEXT,
            request_id TEXT,
            http_status INTEGER,
            latency_ms REAL,
            attempts INTEGER NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            headers TEXT NOT NULL DEFAULT '{}',
            error_kind TEXT,
            error_message TEXT,
            request_shape TEXT NOT NULL,
            raw_response TEXT,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX observations_target ON observations (target, id);
        CREATE INDEX observations_check ON observations (check_id);
        """,
    ),
    (
        "0002_checks_and_known_values",
        """
        CREATE TABLE checks (
            id INTEGER PRIMARY KEY,
            check_id TEXT NOT NULL,
            target TEXT NOT NULL,
            checked_at TEXT NOT NULL,
            status TEXT NOT NULL,
            fingerprints TEXT,
            models TEXT,
            headers TEXT,
            samples INTEGER NOT NULL,
            errors INTEGER NOT NULL
        );
        CREATE INDEX checks_target ON checks (target, id);
        CREATE TABLE known_values (
            target TEXT NOT NULL,
            field TEXT NOT NULL,
            value TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            PRIMARY KEY (target, field, value)
        ) WITHOUT ROWID;
        """,
    ),
    (
        "0003_learning",
        """
        ALTER TABLE checks ADD COLUMN learning INTEGER;
        ALTER TABLE known_values ADD COLUMN samples INTEGER NOT NULL DEFAULT 0;
        UPDATE known_values SET samples = (
            SELECT count(*) FROM observations AS o
            WHERE o.target = known_values.target AND o.error_kind IS NULL AND
                CASE known_values.field
                    WHEN 'model' THEN o.resolved_model
                    ELSE CASE o.fingerprint_state
                        WHEN 'null' THEN '<null>' WHEN 'absent' THEN '<absent>'
                        ELSE o.fingerprint END
                END = known_values.value
        );
        """,
    ),
    (
        # Reading by time (history, stats, prune) and import's "already present?" stay index
        # lookups however long the history grows.
        "0004_reading_indexes",
        """
        CREATE INDEX observations_time ON observations (observed_at);
        CREATE INDEX observations_target_time ON observations (target, observed_at);
        CREATE INDEX observations_hash ON observations (hash);
        CREATE INDEX checks_target_time ON checks (target, checked_at);
        """,
    ),
    (
        "0005_chain_checkpoints",
        """
        CREATE TABLE chain_checkpoints (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            after_id INTEGER NOT NULL,
            from_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            records INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        """,
    ),
    (
        # A target that never learns (locked, or `learning = false`) has no check with a
        # learning state: without this index, the facts' lookup of the latest one reads all of
        # the target's checks on every check, and an import (whose checks carry none) slows
        # down quadratically.
        "0006_checks_learning_index",
        """
        CREATE INDEX checks_target_learning ON checks (target, id) WHERE learning IS NOT NULL;
        """,
    ),
    (
        "0007_traffic",
        """
        ALTER TABLE observations ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE checks ADD COLUMN source TEXT NOT NULL DEFAULT 'probe';
        CREATE INDEX checks_target_source ON checks (target, source, id);
        CREATE TABLE known_values_by_source (
            target TEXT NOT NULL,
            source TEXT NOT NULL,
            field TEXT NOT NULL,
            value TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            samples INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (target, source, field, value)
        ) WITHOUT ROWID;
        INSERT INTO known_values_by_source
            SELECT target, 'probe', field, value, first_seen, samples FROM known_values;
        """,
    ),
    (
        "0008_previous_by_source",
        # A check's previous one is the latest of its own source (see History.facts).
        "CREATE INDEX checks_target_source_time ON checks (target, source, checked_at);",
    ),
    (
        # The known values of records no longer in the chain (pruned, or counted before the
        # known values were kept in step with the records): verify derives the known-value
        # tables from this and the chained records. Filled by History._migrate and by prune.
        "0009_known_baseline",
        """
        CREATE TABLE known_baseline (
            target TEXT NOT NULL,
            source TEXT NOT NULL,
            field TEXT NOT NULL,
            value TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            samples INTEGER NOT NULL,
            PRIMARY KEY (target, source, field, value)
        ) WITHOUT ROWID;
        """,
    ),
    (
        # Every write transaction ends with a seal (see fp_monitor.domain.chain): check rows,
        # checkpoints and the baseline join the tamper-evident chain. History._migrate seals
        # what a history already holds.
        "0010_seals",
        """
        CREATE TABLE chain_seals (
            id INTEGER PRIMARY KEY,
            prev_hash TEXT NOT NULL,
            after_id INTEGER NOT NULL,
            record_hash TEXT NOT NULL,
            rows INTEGER NOT NULL,
            rows_digest TEXT NOT NULL,
            baseline TEXT NOT NULL,
            pruned_before TEXT,
            trimmed_hash TEXT,
            created_at TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX chain_seals_hash ON chain_seals (hash);
        CREATE TABLE sealed_rows (
            seal INTEGER NOT NULL,
            tbl TEXT NOT NULL,
            row_id INTEGER NOT NULL,
            row_hash TEXT NOT NULL,
            checked_at TEXT,
            after_id INTEGER,
            PRIMARY KEY (tbl, row_id, seal)
        ) WITHOUT ROWID;
        CREATE INDEX sealed_rows_seal ON sealed_rows (seal, tbl, row_id);
        """,
    ),
    (
        # `fpmon report` counts samples per time bucket and value, and checks per status,
        # from these indexes alone, never reading the rows (an observation carries its raw
        # response): a million observations in about a second instead of three
        # (benchmarks/report.py).
        "0011_report_index",
        """
        CREATE INDEX observations_report ON observations (target, observed_at, source,
            fingerprint, fingerprint_state, resolved_model, error_kind);
        CREATE INDEX checks_report ON checks (target, status, checked_at, source);
        """,
    ),
    (
        # Where each observation was made from (the `site` key); NULL in older records. On the
        # observations, in the chain, not on the checks: check rows are sealed column by column
        # (SEALED_COLUMNS), and every sample of a check comes from the one site anyway.
        "0013_site",
        # The index counts a target's samples per site (the metrics) without reading rows.
        """
        ALTER TABLE observations ADD COLUMN site TEXT;
        CREATE INDEX observations_site ON observations (target, site);
        """,
    ),
    (
        # The facts' lookup of the latest `new` check (History.facts): without statistics
        # SQLite reads it through (target, checked_at), which sorts as the query asks, and so
        # walks back through every check of a target that has no `new` one: 1 ms per lookup at
        # 5,000 checks, once per recorded response, growing with the history. With the id in
        # the index the order is the index's own and the lookup is one step (3 µs).
        "0014_latest_new_index",
        "CREATE INDEX checks_target_status_time ON checks (target, status, checked_at, id);",
    ),
    (
        # The canary (store/canary.py): each sample's top logprobs or sampled token (chained,
        # exported), each check's verdict (sealed when not null), the target's learned
        # signatures (one document, rewritten by each check) and what the provider refused
        # (logprobs: auto falls back for good).
        "0015_canary",
        """
        ALTER TABLE observations ADD COLUMN canary TEXT;
        ALTER TABLE checks ADD COLUMN canary TEXT;
        CREATE TABLE canary_signatures (
            target TEXT NOT NULL PRIMARY KEY,
            signatures TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE canary_refusals (
            target TEXT NOT NULL,
            refused TEXT NOT NULL,
            first_at TEXT NOT NULL,
            PRIMARY KEY (target, refused)
        );
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
