import GRDB
import UnderstudyCore

/// The tables of the work queues in a SQLite store (schema version 2).
///
/// One row per job not yet deleted. `stage` is where the job is as the store keeps it (``JobQueueLedger/Job/Stage``):
///
/// - `available`: claimable from `available_since` on (scheduled before that instant, pending from it);
/// - `running`: claimed by `worker` under the claim lease that ends at `expires_at`; `available_since` keeps
///   when the job became claimable, and a claim that expired is claimable again at once (or dead on the last
///   attempt) without any write, so reads judge it at their instant;
/// - `done`, `dead`, `cancelled`: finished at `finished_at`.
///
/// Every instant is on the store's clock (the host's boot clock), in nanoseconds; a new boot rebases them
/// (``expireRowsOfEarlierBoot(_:now:)``). Ids come from `AUTOINCREMENT`, so an id is never reused after its job
/// is deleted. The partial indexes make a claim a range scan of the claimable jobs of its queue, the expiry of
/// claims a range scan of its running ones, the ordering-key rule one probe per candidate, and pruning a range
/// scan of the finished jobs.
enum SQLiteQueueSchema {
    /// The stages a row may hold; any other is a corrupt row.
    static let stages = ["available", "running", "done", "dead", "cancelled"]

    static let createStatements = """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            payload BLOB NOT NULL,
            priority INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            token INTEGER NOT NULL,
            stage TEXT NOT NULL,
            available_since INTEGER,
            expires_at INTEGER,
            finished_at INTEGER,
            worker TEXT,
            enqueued_at INTEGER NOT NULL,
            idempotency_key TEXT,
            ordering_key TEXT,
            last_error TEXT
        );
        CREATE INDEX jobs_claimable ON jobs (queue, priority DESC, available_since, id) WHERE stage = 'available';
        CREATE INDEX jobs_running ON jobs (queue, expires_at) WHERE stage = 'running';
        CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
        CREATE INDEX jobs_ordering ON jobs (queue, ordering_key, id)
            WHERE ordering_key IS NOT NULL AND stage IN ('available', 'running');
        CREATE INDEX jobs_finished ON jobs (finished_at) WHERE stage IN ('done', 'cancelled');
        CREATE INDEX jobs_unknown_stage ON jobs (queue)
            WHERE stage NOT IN ('available', 'running', 'done', 'dead', 'cancelled');
        """

    /// Creates the queue tables (in a new file, or migrating a file of schema version 1).
    static func create(_ db: Database) throws {
        try db.execute(sql: createStatements)
    }

    /// After a reboot the boot clock restarts, so the instants of the earlier boot mean nothing on this one:
    /// every claim of the earlier boot ended with it (its worker died with the boot) and is claimable now, or dead
    /// if it was the job's last attempt, as any expired claim; every other instant is rebased to `now` (a delay or
    /// backoff still to run ends now, the retention of a finished job runs from now, ages count from now).
    static func expireRowsOfEarlierBoot(_ db: Database, now: Instant) throws {
        let rows = try Row.fetchAll(db, sql: "SELECT id, attempt FROM jobs WHERE stage = 'running' AND attempt >= max_attempts")
        for row in rows {
            guard let id: Int64 = SQLiteDatabase.column(row, 0) else { continue }
            let attempt: Int = SQLiteDatabase.column(row, 1) ?? 0
            try db.execute(
                sql: "UPDATE jobs SET stage = 'dead', finished_at = ?, expires_at = NULL, worker = NULL, last_error = ? WHERE id = ?",
                arguments: [now.nanoseconds, JobQueueLedger.expiredOnLastAttempt(attempt), id]
            )
        }
        for sql in [
            "UPDATE jobs SET stage = 'available', expires_at = NULL, worker = NULL WHERE stage = 'running'",
            "UPDATE jobs SET available_since = ? WHERE stage = 'available'",
            "UPDATE jobs SET finished_at = ? WHERE finished_at IS NOT NULL",
            "UPDATE jobs SET enqueued_at = ?",
        ] {
            try db.execute(sql: sql, arguments: sql.contains("?") ? [now.nanoseconds] : [])
        }
    }
}
