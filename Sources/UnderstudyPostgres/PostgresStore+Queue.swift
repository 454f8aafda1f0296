import Foundation
import Logging
import NIOCore
import PostgresNIO
import UnderstudyCore
import UnderstudyStore

/// The work queues of a PostgreSQL store: each operation is one call of a server-side function
/// (`PostgresSchema+Queue.swift`), so one round trip whatever the number of jobs it carries.
///
/// - **Claims** take `FOR UPDATE SKIP LOCKED` row locks and nothing session-level (no advisory locks, no prepared
///   state), so a transaction-mode pooler may sit in between.
/// - **Time** is each queue's store clock, advanced by claims and renewals with this handle's own measurements
///   (its send instants on the host's monotonic clock), so a step of the server's wall clock does not expire claims
///   early; see ``PostgresSchema/queueFunctions(schema:)``.
/// - **Rows no client can have written** (an unknown stage, values out of range) go to the dead letter with
///   `corrupt row: …` when a claim of their queue meets them; lists and stats leave them out.
extension PostgresStore: JobQueueStore {
    /// The largest duration handed to the server, in µs (about 36,000 years): store instants plus it never overflow.
    private static let maximumMicroseconds: Int64 = 1 << 60

    private static func micros(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        guard seconds < maximumMicroseconds / 1_000_000 else { return maximumMicroseconds }
        guard seconds > -maximumMicroseconds / 1_000_000 else { return -maximumMicroseconds }
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }

    /// The injected test clock in µs, or `nil`: judge on the queues' store clocks.
    private var queueNow: Int64? { clock.map { $0().nanoseconds / 1_000 } }

    /// Runs one round trip of the server-side functions of a capability (the queues, the checkpoints), failing as
    /// ``StoreError`` (``PostgresConnection/call(recreating:_:)``).
    func serverCall<Value: Sendable>(
        _ body: @escaping @Sendable (PostgresClient, String, Logger) async throws -> Value
    ) async throws -> Value {
        let (schema, logger) = (location.schema, connection.logger)
        return try await connection.call { client in try await body(client, schema, logger) }
    }

    private func corrupt(_ what: String) -> StoreError {
        StoreError(.corrupt, "the work queues in \(location): \(what)")
    }

    public func enqueue(_ jobs: [JobSpec]) async throws -> [Enqueued] {
        guard !jobs.isEmpty else { return [] }
        let queues = jobs.map(\.queue.rawValue)
        let payloads = jobs.map { ByteBuffer(bytes: $0.payload) }
        let priorities = jobs.map { Int32($0.priority) }
        let delays = jobs.map { Self.micros($0.delay) }
        let attempts = jobs.map { Int32($0.maxAttempts) }
        let idempotency = jobs.map { $0.idempotencyKey ?? "" }
        let ordering = jobs.map { $0.orderingKey ?? "" }
        let now = queueNow
        let rows = try await serverCall { client, schema, logger in
            let rows = try await client.query(
                """
                SELECT o_n, o_id, o_deduplicated FROM "\(unescaped: schema)".understudy_enqueue(
                    \(queues)::text[], \(payloads)::bytea[], \(priorities)::int[], \(delays)::bigint[], \(attempts)::int[],
                    \(idempotency)::text[], \(ordering)::text[], \(now)::bigint)
                """,
                logger: logger
            )
            var result: [(Int32, Int64?, Bool)] = []
            for try await row in rows.decode((Int32, Int64?, Bool).self) { result.append(row) }
            return result
        }
        guard rows.count == jobs.count else { throw corrupt("the server answered \(rows.count) of \(jobs.count) enqueued jobs") }
        return try rows.enumerated().map { index, row in
            guard row.0 == index + 1, let id = row.1, id > 0 else {
                throw StoreError(.unavailable, "the work queues in \(location): the job holding idempotency key \"\(jobs[index].idempotencyKey ?? "")\" was deleted while it was enqueued again; retry")
            }
            return Enqueued(id: JobID(rawValue: id), deduplicated: row.2)
        }
    }

    public func claim(queue: QueueName, worker: WorkerID, limit: Int, lease: Duration) async throws -> [JobClaim] {
        let (now, sent, client) = (queueNow, MonotonicClock.now().nanoseconds / 1_000, queueClient)
        let (limit, lease, name, workerName) = (Int32(clamping: max(0, limit)), Self.micros(lease), queue.rawValue, worker.description)
        let rows = try await serverCall { connectionClient, schema, logger in
            let rows = try await connectionClient.query(
                """
                SELECT o_id, o_payload, o_attempt, o_max_attempts, o_token, o_waited FROM "\(unescaped: schema)".understudy_claim(
                    \(name)::text, \(workerName)::text, \(limit)::int, \(lease)::bigint, \(client)::text, \(sent)::bigint, \(now)::bigint)
                """,
                logger: logger
            )
            var result: [(Int64, ByteBuffer, Int32, Int32, Int64, Int64)] = []
            for try await row in rows.decode((Int64, ByteBuffer, Int32, Int32, Int64, Int64).self) { result.append(row) }
            return result
        }
        var claims: [JobClaim] = []
        var faults: [(Int64, String)] = []
        for (id, payload, attempt, maxAttempts, token, waited) in rows {
            guard id > 0, JobSpec.attempts.contains(Int(maxAttempts)), (1...maxAttempts).contains(attempt), token >= 1, waited >= 0 else {
                faults.append((id, "claimed as attempt \(attempt) of \(maxAttempts) with token \(token), waited \(waited) µs"))
                continue
            }
            claims.append(JobClaim(
                id: JobID(rawValue: id), queue: queue, payload: Array(buffer: payload), attempt: Int(attempt),
                maxAttempts: Int(maxAttempts), token: FencingToken(rawValue: UInt64(token)), waited: .microseconds(waited)
            ))
        }
        if !faults.isEmpty {
            // The claim checks what it can on the server; what only the client sees goes to the dead letter too.
            let (ids, texts) = (faults.map(\.0), faults.map(\.1))
            connection.logger.debug("claimed rows cannot be read; sending them to the dead letter", metadata: ["ids": "\(ids)"])
            _ = try? await serverCall { client, schema, logger in
                _ = try await client.query(
                    #"SELECT "\#(unescaped: schema)".understudy_job_corrupt(\#(ids)::bigint[], \#(texts)::text[], \#(now)::bigint)"#,
                    logger: logger
                )
            }
        }
        return claims
    }

    private static func references(_ claims: [ClaimReference]) -> ([Int64], [Int64]) {
        (claims.map(\.id.rawValue), claims.map { Int64(clamping: $0.token.rawValue) })
    }

    public func renew(_ claims: [ClaimReference], lease: Duration) async throws -> [Bool] {
        guard !claims.isEmpty else { return [] }
        let (ids, tokens) = Self.references(claims)
        let (now, sent, client, lease) = (queueNow, MonotonicClock.now().nanoseconds / 1_000, queueClient, Self.micros(lease))
        let renewed = try await serverCall { connectionClient, schema, logger in
            let rows = try await connectionClient.query(
                """
                SELECT "\(unescaped: schema)".understudy_renew(\(ids)::bigint[], \(tokens)::bigint[], \(lease)::bigint,
                    \(client)::text, \(sent)::bigint, \(now)::bigint)
                """,
                logger: logger
            )
            for try await flags in rows.decode([Bool].self) { return flags }
            return []
        }
        guard renewed.count == claims.count else { throw corrupt("the server answered \(renewed.count) of \(claims.count) renewals") }
        return renewed
    }

    public func record(_ outcomes: [JobOutcome]) async throws -> [OutcomeReply] {
        guard !outcomes.isEmpty else { return [] }
        let (ids, tokens) = Self.references(outcomes.map(\.claim))
        var failed: [Bool] = [], errors: [String] = [], retries: [Int64] = []
        for outcome in outcomes {
            switch outcome {
            case .completed:
                failed.append(false); errors.append(""); retries.append(0)
            case .failed(_, let error, let retryAfter):
                failed.append(true); errors.append(error); retries.append(Self.micros(retryAfter))
            }
        }
        let (now, failedFlags, errorTexts, retryMicros) = (queueNow, failed, errors, retries)
        let states = try await serverCall { client, schema, logger in
            let rows = try await client.query(
                """
                SELECT "\(unescaped: schema)".understudy_record(\(ids)::bigint[], \(tokens)::bigint[], \(failedFlags)::boolean[],
                    \(errorTexts)::text[], \(retryMicros)::bigint[], \(now)::bigint)::text
                """,
                logger: logger
            )
            for try await text in rows.decode(String.self) { return text }
            return "{}"
        }
        // A text[] with NULLs: `{done,NULL,scheduled}`; states are plain words, never quoted.
        let items = states.dropFirst().dropLast().split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard items.count == outcomes.count || (outcomes.isEmpty && states == "{}") else {
            throw corrupt("the server answered \(items.count) of \(outcomes.count) outcomes")
        }
        return try items.map { item in
            if item == "NULL" { return .stale }
            guard let state = JobState(rawValue: item) else { throw corrupt("the server recorded an unknown state \"\(item)\"") }
            return .recorded(state)
        }
    }

    public func release(_ claims: [ClaimReference]) async throws {
        guard !claims.isEmpty else { return }
        let (ids, tokens) = Self.references(claims)
        let now = queueNow
        try await serverCall { client, schema, logger in
            _ = try await client.query(
                #"SELECT "\#(unescaped: schema)".understudy_release(\#(ids)::bigint[], \#(tokens)::bigint[], \#(now)::bigint)"#,
                logger: logger
            )
        }
    }

    public func cancel(_ job: JobID) async throws -> JobState? {
        let (id, now) = (job.rawValue, queueNow)
        let state = try await serverCall { client, schema, logger in
            let rows = try await client.query(
                #"SELECT "\#(unescaped: schema)".understudy_cancel(\#(id)::bigint, \#(now)::bigint)"#,
                logger: logger
            )
            for try await state in rows.decode(String?.self) { return state }
            return nil
        }
        guard let state else { return nil }
        guard let parsed = JobState(rawValue: state) else { throw corrupt("the server cancelled into an unknown state \"\(state)\"") }
        return parsed
    }

    public func redrive(queue: QueueName, ids: [JobID]?) async throws -> Int {
        let (name, wanted, now) = (queue.rawValue, ids.map { $0.map(\.rawValue) }, queueNow)
        return try await serverCall { client, schema, logger in
            let rows = try await client.query(
                #"SELECT "\#(unescaped: schema)".understudy_redrive(\#(name)::text, \#(wanted)::bigint[], \#(now)::bigint)"#,
                logger: logger
            )
            for try await count in rows.decode(Int32.self) { return Int(count) }
            return 0
        }
    }

    public func prune(retention: Duration, limit: Int) async throws -> Int {
        let (retention, limit, now) = (Self.micros(max(retention, .zero)), Int32(clamping: max(0, limit)), queueNow)
        return try await serverCall { client, schema, logger in
            let rows = try await client.query(
                #"SELECT "\#(unescaped: schema)".understudy_prune(\#(retention)::bigint, \#(limit)::int, \#(now)::bigint)"#,
                logger: logger
            )
            for try await count in rows.decode(Int32.self) { return Int(count) }
            return 0
        }
    }

    public func stats(queue: QueueName?) async throws -> [QueueStats] {
        let (name, now) = (queue?.rawValue, queueNow)
        let rows = try await serverCall { client, schema, logger in
            let rows = try await client.query(
                #"SELECT o_queue, o_state, o_count, o_oldest FROM "\#(unescaped: schema)".understudy_queue_stats(\#(name)::text, \#(now)::bigint)"#,
                logger: logger
            )
            var result: [(String, String, Int64, Int64?)] = []
            for try await row in rows.decode((String, String, Int64, Int64?).self) { result.append(row) }
            return result
        }
        var byQueue: [QueueName: (counts: [JobState: Int], oldest: Duration?)] = [:]
        for (queueName, stateName, count, oldest) in rows {
            // The server already leaves out what cannot be a queue's job; this only guards the decoding.
            guard let queue = try? QueueName(queueName), let state = JobState(rawValue: stateName), count > 0 else { continue }
            byQueue[queue, default: ([:], nil)].counts[state, default: 0] += Int(count)
            if state == .pending, let oldest { byQueue[queue]?.oldest = .microseconds(max(0, oldest)) }
        }
        return byQueue.keys.sorted().map { QueueStats(queue: $0, counts: byQueue[$0]!.counts, oldestPendingAge: byQueue[$0]!.oldest) }
    }

    public func jobs(queue: QueueName?, state: JobState, after cursor: JobID?, limit: Int) async throws -> [JobRecord] {
        try await records(queue: queue?.rawValue, state: state.rawValue, after: cursor?.rawValue, limit: Int32(clamping: max(0, limit)), id: nil)
            .compactMap { try? $0.get() }
    }

    public func job(_ id: JobID) async throws -> JobRecord? {
        try await records(queue: nil, state: nil, after: nil, limit: 1, id: id.rawValue).first?.get()
    }

    private typealias RecordRow = (Int64, String, String?, Int32, Int32, Int32, String?, String?, String?, Int32, Int64)

    /// One round trip of `understudy_jobs`; each row as a record, or the error that it cannot be one.
    private func records(queue: String?, state: String?, after: Int64?, limit: Int32, id: Int64?) async throws -> [Result<JobRecord, StoreError>] {
        let now = queueNow
        let rows = try await serverCall { client, schema, logger in
            let rows = try await client.query(
                """
                SELECT o_id, o_queue, o_state, o_priority, o_attempt, o_max_attempts, o_idempotency_key, o_ordering_key,
                    o_last_error, o_size, o_age
                FROM "\(unescaped: schema)".understudy_jobs(\(queue)::text, \(state)::text, \(after)::bigint, \(limit)::int, \(id)::bigint, \(now)::bigint)
                """,
                logger: logger
            )
            var result: [RecordRow] = []
            for try await row in rows.decode(RecordRow.self) { result.append(row) }
            return result
        }
        return rows.map { row in
            let (id, queueName, stateName, priority, attempt, maxAttempts, idempotencyKey, orderingKey, lastError, size, age) = row
            guard let queue = try? QueueName(queueName) else { return .failure(corrupt("job \(id) has a corrupt row: invalid queue name")) }
            guard let stateName, let state = JobState(rawValue: stateName) else {
                return .failure(corrupt("job \(id) has a corrupt row: unknown stage"))
            }
            return .success(JobRecord(
                id: JobID(rawValue: id), queue: queue, state: state, priority: Int(priority), attempt: Int(attempt),
                maxAttempts: Int(maxAttempts), idempotencyKey: idempotencyKey, orderingKey: orderingKey, lastError: lastError,
                payloadSize: Int(size), age: .microseconds(age)
            ))
        }
    }

    public func enqueued(on queue: QueueName) -> AsyncStream<Void> {
        queueSubscribers.subscribe(to: queue)
    }
}
