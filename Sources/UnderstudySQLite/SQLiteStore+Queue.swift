import Foundation
import GRDB
import UnderstudyCore
import UnderstudyStore

/// The work queues of a SQLite store: ``JobQueueLedger``'s semantics in SQL, on the tables of ``SQLiteQueueSchema``.
///
/// Each call is one transaction (a `BEGIN IMMEDIATE` write, or a read), whatever the number of jobs it carries,
/// and changes the jobs it carries with a few set-based statements: the claims, renewals, outcomes and releases
/// of a call go to SQLite as one JSON array, joined to the jobs by their primary key.
///
/// A row that cannot be read as a job (an unknown stage, a value out of range or of the wrong type) does not stop
/// its queue: a claim that meets it sends it to the dead letter with the error `corrupt row: …` and claims the
/// next jobs instead; listings and stats leave out a row they cannot show (an unknown stage or queue name).
extension SQLiteStore: JobQueueStore {
    public func enqueue(_ jobs: [JobSpec]) async throws -> [Enqueued] {
        guard !jobs.isEmpty else { return [] }
        let enqueued = try await database.write { db, moment in try Self.enqueue(jobs, db, now: moment.now) }
        announcements.announce(queues: zip(jobs, enqueued).filter { !$0.1.deduplicated }.map { $0.0.queue })
        return enqueued
    }

    public func claim(queue: QueueName, worker: WorkerID, limit: Int, lease: Duration) async throws -> [JobClaim] {
        guard limit > 0 else { return [] }
        return try await database.write { db, moment in
            try Self.claim(queue: queue, worker: worker, limit: limit, lease: lease, db, at: moment)
        }
    }

    public func renew(_ claims: [ClaimReference], lease: Duration) async throws -> [Bool] {
        guard !claims.isEmpty else { return [] }
        return try await database.write { db, moment in
            let renewed = try Self.pairs(
                db.cachedStatement(sql: """
                    UPDATE jobs SET expires_at = :expires
                    FROM (\(Self.claimsJSON)) AS c
                    WHERE jobs.id = c.id AND jobs.token = c.token AND jobs.stage = 'running' AND jobs.expires_at > :now
                    RETURNING jobs.id, jobs.token
                    """),
                arguments: ["claims": Self.json(claims), "now": moment.now.nanoseconds, "expires": Self.adding(lease, to: moment.now)]
            )
            return claims.map { renewed.contains(Self.Pair($0)) }
        }
    }

    public func record(_ outcomes: [JobOutcome]) async throws -> [OutcomeReply] {
        guard !outcomes.isEmpty else { return [] }
        return try await database.write { db, moment in try Self.record(outcomes, db, now: moment.now) }
    }

    public func release(_ claims: [ClaimReference]) async throws {
        guard !claims.isEmpty else { return }
        let queues = try await database.write { db, moment in
            try String.fetchAll(
                db.cachedStatement(sql: """
                    UPDATE jobs SET stage = 'available', available_since = :now, attempt = jobs.attempt - 1,
                        expires_at = NULL, worker = NULL
                    FROM (\(Self.claimsJSON)) AS c
                    WHERE jobs.id = c.id AND jobs.token = c.token AND jobs.stage = 'running' AND jobs.expires_at > :now
                    RETURNING jobs.queue
                    """),
                arguments: ["claims": Self.json(claims), "now": moment.now.nanoseconds]
            )
        }
        announcements.announce(queues: queues.compactMap { try? QueueName($0) })
    }

    public func cancel(_ job: JobID) async throws -> JobState? {
        try await database.write { db, moment in
            guard let stage = try DatabaseValue.fetchOne(
                db.cachedStatement(sql: "SELECT stage FROM jobs WHERE id = ?"), arguments: [job.rawValue]
            ) else { return nil }
            switch String.fromDatabaseValue(stage) {
            case "done": return .done
            case "cancelled": return .cancelled
            default:
                try db.cachedStatement(
                    sql: "UPDATE jobs SET stage = 'cancelled', finished_at = ?, expires_at = NULL, worker = NULL WHERE id = ?"
                ).execute(arguments: [moment.now.nanoseconds, job.rawValue])
                return .cancelled
            }
        }
    }

    public func redrive(queue: QueueName, ids: [JobID]?) async throws -> Int {
        let count = try await database.write { db, moment in
            try Self.expireClaims(db, now: moment.now)
            let revive = "UPDATE jobs SET stage = 'available', available_since = :now, attempt = 0, finished_at = NULL"
            if let ids {
                try db.cachedStatement(sql: """
                    \(revive) WHERE queue = :queue AND stage = 'dead' AND id IN (SELECT value FROM json_each(:ids))
                    """).execute(arguments: [
                        "now": moment.now.nanoseconds, "queue": queue.rawValue,
                        "ids": "[" + ids.map { String($0.rawValue) }.joined(separator: ",") + "]",
                    ])
            } else {
                try db.cachedStatement(sql: "\(revive) WHERE queue = :queue AND stage = 'dead'")
                    .execute(arguments: ["now": moment.now.nanoseconds, "queue": queue.rawValue])
            }
            return db.changesCount
        }
        if count > 0 { announcements.announce(queues: [queue]) }
        return count
    }

    public func prune(retention: Duration, limit: Int) async throws -> Int {
        guard limit > 0 else { return 0 }
        return try await database.write { db, moment in
            let (threshold, overflow) = moment.now.nanoseconds.subtractingReportingOverflow(max(retention, .zero).nanoseconds)
            try db.cachedStatement(sql: """
                DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs WHERE stage IN ('done', 'cancelled') AND finished_at <= ? ORDER BY id LIMIT ?)
                """).execute(arguments: [overflow ? Int64.min : threshold, limit])
            return db.changesCount
        }
    }

    public func stats(queue: QueueName?) async throws -> [QueueStats] {
        try await database.read(orIfEmpty: [], table: "jobs") { db, now in
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT queue, \(Self.stateSQL) AS state, count(*),
                        min(CASE stage WHEN 'available' THEN available_since WHEN 'running' THEN expires_at END)
                    FROM jobs WHERE :queue IS NULL OR queue = :queue
                    GROUP BY queue, state
                    """),
                arguments: ["now": now.nanoseconds, "queue": queue?.rawValue]
            )
            var counts: [QueueName: [JobState: Int]] = [:]
            var oldest: [QueueName: Int64] = [:]
            for row in rows {
                // A queue name or stage that no job can have is a corrupt row: left out.
                guard let name = (Self.column(row, 0) as String?).flatMap({ try? QueueName($0) }),
                      let state = (Self.column(row, 1) as String?).flatMap(JobState.init(rawValue:)),
                      let count: Int = Self.column(row, 2)
                else { continue }
                counts[name, default: [:]][state, default: 0] += count
                if state == .pending, let since: Int64 = Self.column(row, 3) {
                    oldest[name] = min(oldest[name] ?? since, since)
                }
            }
            return counts.keys.sorted().map { name in
                QueueStats(
                    queue: name, counts: counts[name]!,
                    oldestPendingAge: oldest[name].map { now - Instant(nanoseconds: $0) }
                )
            }
        }
    }

    public func jobs(queue: QueueName?, state: JobState, after cursor: JobID?, limit: Int) async throws -> [JobRecord] {
        guard limit > 0 else { return [] }
        return try await database.read(orIfEmpty: [], table: "jobs") { db, now in
            var records: [JobRecord] = []
            var after = cursor?.rawValue ?? 0
            // Rows that cannot be shown are left out, and the page filled from the rows after them.
            while records.count < limit {
                let wanted = limit - records.count
                let rows = try Row.fetchAll(
                    db.cachedStatement(sql: """
                        SELECT \(Self.recordColumns) FROM jobs
                        WHERE id > :after AND (:queue IS NULL OR queue = :queue) AND \(Self.stateSQL) = :state
                        ORDER BY id LIMIT :limit
                        """),
                    arguments: [
                        "now": now.nanoseconds, "after": after, "queue": queue?.rawValue, "state": state.rawValue,
                        "limit": wanted,
                    ]
                )
                let shown = rows.compactMap { Self.record($0, now: now) }
                records += shown
                guard rows.count == wanted, shown.count < rows.count,
                      let last = rows.last.flatMap({ Self.column($0, 0) as Int64? })
                else { break }
                after = last
            }
            return records
        }
    }

    public func job(_ id: JobID) async throws -> JobRecord? {
        try await database.read(orIfEmpty: nil, table: "jobs") { db, now in
            try Row.fetchOne(
                db.cachedStatement(sql: "SELECT \(Self.recordColumns) FROM jobs WHERE id = :id"),
                arguments: ["now": now.nanoseconds, "id": id.rawValue]
            ).flatMap { Self.record($0, now: now) }
        }
    }

    public func enqueued(on queue: QueueName) -> AsyncStream<Void> {
        announcements.startWatching()
        return announcements.queueSubscribers.subscribe(to: queue)
    }

    // MARK: Transactions

    /// How many jobs one `INSERT` statement carries at most.
    private static let rowsPerInsert = 64

    /// Inserts the jobs in order, those without an idempotency key by up to ``rowsPerInsert`` per statement; a job
    /// whose key a job of its queue holds (also one inserted just before) returns that job.
    private static func enqueue(_ specs: [JobSpec], _ db: Database, now: Instant) throws -> [Enqueued] {
        let holder = try db.cachedStatement(sql: "SELECT id FROM jobs WHERE queue = ? AND idempotency_key = ?")
        var enqueued: [Enqueued] = []
        enqueued.reserveCapacity(specs.count)
        var start = specs.startIndex
        while start < specs.endIndex {
            var end = start + 1
            if let key = specs[start].idempotencyKey {
                if let id = try Int64.fetchOne(holder, arguments: [specs[start].queue.rawValue, key]) {
                    enqueued.append(Enqueued(id: JobID(rawValue: id), deduplicated: true))
                    start = end
                    continue
                }
            } else {
                while end < specs.endIndex, end - start < rowsPerInsert, specs[end].idempotencyKey == nil { end += 1 }
            }
            let rows = specs[start..<end]
            var values: [(any DatabaseValueConvertible)?] = []
            values.reserveCapacity(rows.count * 7)
            for spec in rows {
                values += [
                    spec.queue.rawValue, Data(spec.payload), spec.priority, spec.maxAttempts, adding(spec.delay, to: now),
                    spec.idempotencyKey, spec.orderingKey,
                ]
            }
            values.append(now.nanoseconds)
            try db.cachedStatement(sql: insertSQL(rows: rows.count)).execute(arguments: StatementArguments(values))
            // One statement under the write lock: AUTOINCREMENT gives its rows consecutive ids, in order.
            let last = db.lastInsertedRowID
            for offset in 0..<Int64(rows.count) {
                enqueued.append(Enqueued(id: JobID(rawValue: last - Int64(rows.count) + 1 + offset), deduplicated: false))
            }
            start = end
        }
        return enqueued
    }

    /// An `INSERT` of `rows` jobs: 7 arguments per job, then the enqueue instant.
    private static func insertSQL(rows: Int) -> String {
        var sql = """
            INSERT INTO jobs
                (queue, payload, priority, max_attempts, attempt, token, stage, available_since, idempotency_key,
                 ordering_key, enqueued_at)
            VALUES
            """
        let now = rows * 7 + 1
        sql += (0..<rows).map { index in
            let base = index * 7
            return "(?\(base + 1), coalesce(?\(base + 2), x''), ?\(base + 3), ?\(base + 4), 0, 0, 'available', ?\(base + 5), "
                + "?\(base + 6), ?\(base + 7), ?\(now))"
        }.joined(separator: ", ")
        return sql
    }

    private static func claim(
        queue: QueueName, worker: WorkerID, limit: Int, lease: Duration, _ db: Database, at moment: StoreMoment
    ) throws -> [JobClaim] {
        let now = moment.now
        // A record that may have lost claims grants none for one claim lease: the lost claims may still run.
        if let since = moment.recordCompleteSince, now < since + lease { return [] }
        try expireClaims(db, now: now)
        try buryUnknownStages(of: queue, db, now: now)
        let candidates = try db.cachedStatement(sql: """
            SELECT id, payload, attempt, max_attempts, token, available_since, priority FROM jobs AS j
            WHERE j.queue = :queue AND j.stage = 'available' AND j.available_since <= :now
                AND (j.ordering_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM jobs AS e
                    WHERE e.queue = j.queue AND e.ordering_key = j.ordering_key
                        AND e.stage IN ('available', 'running') AND e.id < j.id))
            ORDER BY j.priority DESC, j.available_since, j.id
            LIMIT :limit
            """)
        let take = try db.cachedStatement(sql: """
            UPDATE jobs SET stage = 'running', attempt = attempt + 1, token = max(token + 1, :floor),
                expires_at = :expires, worker = :worker
            WHERE id IN (SELECT value FROM json_each(:ids))
            """)
        let floor = Int64(moment.tokenFloor.rawValue)
        var claims: [JobClaim] = []
        // A corrupt candidate goes to the dead letter, and the next jobs are claimed instead.
        while claims.count < limit {
            let rows = try Row.fetchAll(
                candidates, arguments: ["queue": queue.rawValue, "now": now.nanoseconds, "limit": limit - claims.count]
            )
            var taken: [JobClaim] = []
            var corrupt = 0
            for row in rows {
                switch claimed(row, queue: queue, floor: floor, now: now) {
                case .success(let claim):
                    taken.append(claim)
                case .failure(let error):
                    corrupt += 1
                    try bury(id: row[0] as DatabaseValue, error.message, db, now: now)
                }
            }
            if !taken.isEmpty {
                try take.execute(arguments: [
                    "floor": floor, "expires": adding(lease, to: now), "worker": worker.description,
                    "ids": "[" + taken.map { String($0.id.rawValue) }.joined(separator: ",") + "]",
                ])
            }
            claims += taken
            if corrupt == 0 { break }
        }
        return claims
    }

    /// A corrupt row as a claim would have to read it.
    private struct CorruptRow: Error {
        var message: String
    }

    /// The claim of the candidate `row` (id, payload, attempt, max_attempts, token, available_since, priority),
    /// with the attempt and token the claim gives it; a row that is not a job fails with what is wrong.
    private static func claimed(_ row: Row, queue: QueueName, floor: Int64, now: Instant) -> Result<JobClaim, CorruptRow> {
        func corrupt(_ what: String) -> Result<JobClaim, CorruptRow> { .failure(CorruptRow(message: "corrupt row: \(what)")) }
        guard let id: Int64 = column(row, 0) else { return corrupt("id \(row[0] as DatabaseValue)") }
        guard case .blob(let payload) = (row[1] as DatabaseValue).storage else { return corrupt("payload is not a blob") }
        guard let attempt: Int = column(row, 2), attempt >= 0, attempt < Int.max else {
            return corrupt("attempt \(row[2] as DatabaseValue)")
        }
        guard let maxAttempts: Int = column(row, 3), JobSpec.attempts.contains(maxAttempts) else {
            return corrupt("max_attempts \(row[3] as DatabaseValue)")
        }
        guard let token: Int64 = column(row, 4), token >= 0, token < Int64.max else {
            return corrupt("token \(row[4] as DatabaseValue)")
        }
        guard let since: Int64 = column(row, 5) else { return corrupt("available_since \(row[5] as DatabaseValue)") }
        guard let priority: Int = column(row, 6), JobSpec.priorities.contains(priority) else {
            return corrupt("priority \(row[6] as DatabaseValue)")
        }
        return .success(JobClaim(
            id: JobID(rawValue: id), queue: queue, payload: Array(payload), attempt: attempt + 1, maxAttempts: maxAttempts,
            token: FencingToken(rawValue: UInt64(max(token + 1, floor))), waited: now - Instant(nanoseconds: since)
        ))
    }

    /// Sends a job that cannot be read to the dead letter with `error`.
    private static func bury(id: DatabaseValue, _ error: String, _ db: Database, now: Instant) throws {
        try db.cachedStatement(sql: """
            UPDATE jobs SET stage = 'dead', finished_at = ?, expires_at = NULL, worker = NULL, last_error = ? WHERE id = ?
            """).execute(arguments: [now.nanoseconds, error, id])
    }

    /// Rows of `queue` whose stage no job can have go to the dead letter, so that they can be seen and cancelled.
    private static func buryUnknownStages(of queue: QueueName, _ db: Database, now: Instant) throws {
        let rows = try Row.fetchAll(
            db.cachedStatement(sql: """
                SELECT id, stage FROM jobs
                WHERE queue = ? AND stage NOT IN ('available', 'running', 'done', 'dead', 'cancelled')
                """),
            arguments: [queue.rawValue]
        )
        for row in rows {
            try bury(id: row[0] as DatabaseValue, "corrupt row: unknown stage \(row[1] as DatabaseValue)", db, now: now)
        }
    }

    /// Claims that expired, of every queue, are claimable since they expired, or dead on their job's last attempt
    /// with the error that says so (``JobQueueLedger``'s `expireClaims`). A scan of the running jobs' index: the
    /// claims in flight, not the jobs.
    private static func expireClaims(_ db: Database, now: Instant) throws {
        let expired = try Row.fetchAll(
            db.cachedStatement(sql: """
                SELECT id, attempt >= max_attempts, attempt FROM jobs WHERE stage = 'running' AND expires_at <= ?
                """),
            arguments: [now.nanoseconds]
        )
        for row in expired {
            let id: DatabaseValue = row[0]
            if (column(row, 1) as Bool?) == true {
                let attempt: Int = column(row, 2) ?? 0
                try db.cachedStatement(sql: """
                    UPDATE jobs SET stage = 'dead', finished_at = expires_at, expires_at = NULL, worker = NULL,
                        last_error = ?
                    WHERE id = ?
                    """).execute(arguments: [JobQueueLedger.expiredOnLastAttempt(attempt), id])
            } else {
                try db.cachedStatement(sql: """
                    UPDATE jobs SET stage = 'available', available_since = expires_at, expires_at = NULL, worker = NULL
                    WHERE id = ?
                    """).execute(arguments: [id])
            }
        }
    }

    private static func record(_ outcomes: [JobOutcome], _ db: Database, now: Instant) throws -> [OutcomeReply] {
        // Only the first outcome of a claim can be recorded: the claim ends with it, so any later one is stale.
        var seen: Set<Pair> = []
        var completed: [ClaimReference] = []
        var failed: [Failure] = []
        var first: [Bool] = []
        for outcome in outcomes {
            let isFirst = seen.insert(Pair(outcome.claim)).inserted
            first.append(isFirst)
            guard isFirst else { continue }
            switch outcome {
            case .completed(let claim):
                completed.append(claim)
            case .failed(let claim, let error, let retryAfter):
                failed.append(Failure(
                    id: claim.id.rawValue, token: Int64(clamping: claim.token.rawValue), error: error,
                    retryAt: adding(max(retryAfter, .zero), to: now)
                ))
            }
        }
        var done: Set<Pair> = []
        if !completed.isEmpty {
            done = try pairs(
                db.cachedStatement(sql: """
                    UPDATE jobs SET stage = 'done', finished_at = :now, expires_at = NULL, worker = NULL
                    FROM (\(claimsJSON)) AS c
                    WHERE jobs.id = c.id AND jobs.token = c.token AND jobs.stage = 'running' AND jobs.expires_at > :now
                    RETURNING jobs.id, jobs.token
                    """),
                arguments: ["claims": json(completed), "now": now.nanoseconds]
            )
        }
        var ended: [Pair: JobState] = [:]
        if !failed.isEmpty {
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    UPDATE jobs SET
                        stage = CASE WHEN jobs.attempt >= jobs.max_attempts THEN 'dead' ELSE 'available' END,
                        finished_at = CASE WHEN jobs.attempt >= jobs.max_attempts THEN :now END,
                        available_since = CASE WHEN jobs.attempt >= jobs.max_attempts THEN jobs.available_since
                            ELSE c.retry_at END,
                        last_error = c.error, expires_at = NULL, worker = NULL
                    FROM (
                        SELECT value ->> '$.id' AS id, value ->> '$.token' AS token, value ->> '$.error' AS error,
                            value ->> '$.retryAt' AS retry_at
                        FROM json_each(:failures)
                    ) AS c
                    WHERE jobs.id = c.id AND jobs.token = c.token AND jobs.stage = 'running' AND jobs.expires_at > :now
                    RETURNING jobs.id, jobs.token, jobs.stage
                    """),
                arguments: ["failures": String(decoding: try JSONEncoder().encode(failed), as: UTF8.self), "now": now.nanoseconds]
            )
            for row in rows {
                guard let id: Int64 = column(row, 0), let token: Int64 = column(row, 1), token >= 0 else { continue }
                ended[Pair(id: id, token: UInt64(token))] = (column(row, 2) as String?) == "dead" ? .dead : .pending
            }
        }
        return zip(outcomes, first).map { outcome, isFirst in
            let pair = Pair(outcome.claim)
            guard isFirst else { return .stale }
            switch outcome {
            case .completed:
                return done.contains(pair) ? .recorded(.done) : .stale
            case .failed(_, _, let retryAfter):
                switch ended[pair] {
                case nil: return .stale
                case .dead?: return .recorded(.dead)
                case _?: return .recorded(retryAfter > .zero ? .scheduled : .pending)
                }
            }
        }
    }

    // MARK: Rows

    /// A failed attempt as the outcome statement reads it from JSON.
    private struct Failure: Encodable {
        var id: Int64
        var token: Int64
        var error: String
        var retryAt: Int64
    }

    /// A claim by its job and token, as statements return them.
    private struct Pair: Hashable {
        var id: Int64
        var token: UInt64

        init(id: Int64, token: UInt64) {
            self.id = id
            self.token = token
        }

        init(_ claim: ClaimReference) {
            self.init(id: claim.id.rawValue, token: claim.token.rawValue)
        }
    }

    /// The claims of the `:claims` argument (``json(_:)``) as rows (id, token).
    private static let claimsJSON = "SELECT value ->> 0 AS id, value ->> 1 AS token FROM json_each(:claims)"

    /// Claims as a JSON array of [id, token] pairs.
    private static func json(_ claims: [ClaimReference]) -> String {
        "[" + claims.map { "[\($0.id.rawValue),\(Int64(clamping: $0.token.rawValue))]" }.joined(separator: ",") + "]"
    }

    /// The (id, token) pairs a statement returns.
    private static func pairs(_ statement: Statement, arguments: StatementArguments) throws -> Set<Pair> {
        var pairs: Set<Pair> = []
        for row in try Row.fetchAll(statement, arguments: arguments) {
            guard let id: Int64 = column(row, 0), let token: Int64 = column(row, 1), token >= 0 else { continue }
            pairs.insert(Pair(id: id, token: UInt64(token)))
        }
        return pairs
    }

    /// The state of a row at `:now`, as ``JobQueueLedger/Job/state(at:)`` judges it: an expired claim is pending
    /// again (or dead, on its last attempt); any other stage is the state of that name.
    private static let stateSQL = """
        (CASE stage
            WHEN 'available' THEN CASE WHEN available_since > :now THEN 'scheduled' ELSE 'pending' END
            WHEN 'running' THEN CASE WHEN expires_at > :now THEN 'running'
                WHEN attempt >= max_attempts THEN 'dead' ELSE 'pending' END
            ELSE stage END)
        """

    /// What ``record(_:now:)`` reads.
    private static let recordColumns = """
        id, queue, \(stateSQL), priority, attempt, max_attempts, idempotency_key, ordering_key, last_error,
        length(payload), enqueued_at
        """

    /// A job as listings show it, or `nil` for a row that cannot be shown.
    private static func record(_ row: Row, now: Instant) -> JobRecord? {
        guard let id: Int64 = column(row, 0),
              let queue = (column(row, 1) as String?).flatMap({ try? QueueName($0) }),
              let state = (column(row, 2) as String?).flatMap(JobState.init(rawValue:)),
              let priority: Int = column(row, 3),
              let attempt: Int = column(row, 4),
              let maxAttempts: Int = column(row, 5),
              let payloadSize: Int = column(row, 9),
              let enqueuedAt: Int64 = column(row, 10)
        else { return nil }
        return JobRecord(
            id: JobID(rawValue: id), queue: queue, state: state, priority: priority, attempt: attempt,
            maxAttempts: maxAttempts, idempotencyKey: column(row, 6), orderingKey: column(row, 7), lastError: column(row, 8),
            payloadSize: payloadSize, age: now - Instant(nanoseconds: enqueuedAt)
        )
    }

    private static func column<Value: DatabaseValueConvertible>(_ row: Row, _ index: Int) -> Value? {
        SQLiteDatabase.column(row, index)
    }

    /// `instant + duration` in nanoseconds, saturating.
    private static func adding(_ duration: Duration, to instant: Instant) -> Int64 {
        let (sum, overflow) = instant.nanoseconds.addingReportingOverflow(duration.nanoseconds)
        return overflow ? (duration > .zero ? .max : .min) : sum
    }
}
