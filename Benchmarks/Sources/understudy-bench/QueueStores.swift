import Foundation
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySQLite
import UnderstudyStore
#if canImport(Glibc)
import Glibc
#endif

/// A store of the queue benchmark, opened in this process: SQLite, PostgreSQL, or `memory` (the in-memory store,
/// a reference for the harness itself).
struct QueueTarget: Sendable {
    /// `SQLite`, `PostgreSQL` or `memory`.
    var kind: String
    /// The store URL for `understudy` processes (empty for `memory`).
    var url: String
    /// The SQLite file (for its size), if any.
    var sqlitePath: String?

    static func resolve(_ spec: String, postgres: () throws -> String) throws -> QueueTarget {
        switch spec {
        case "memory":
            return QueueTarget(kind: "memory", url: "")
        case "sqlite":
            let directory = try makeTemporaryDirectory("understudy-bench-queue-sqlite")
            return QueueTarget(kind: "SQLite", url: "sqlite://" + directory + "/queue.db", sqlitePath: directory + "/queue.db")
        case "postgres", "postgresql":
            return QueueTarget(kind: "PostgreSQL", url: try postgres())
        default:
            if spec.hasPrefix("postgres") { return QueueTarget(kind: "PostgreSQL", url: spec) }
            let path = spec.hasPrefix("sqlite://") ? String(spec.dropFirst("sqlite://".count)) : spec
            return QueueTarget(kind: "SQLite", url: "sqlite://" + path, sqlitePath: path)
        }
    }

    /// Opens the store; throws when its backend keeps no queues in this build.
    func open() async throws -> OpenQueueStore {
        if kind == "memory" {
            let store = InMemoryStore()
            return OpenQueueStore(queues: store, close: {})
        }
        let store = try await openStore(BenchStore(kind: kind, url: url))
        // A run-time check, so that the benchmark builds whether or not the backend conforms yet.
        guard let queues = (store as Any) as? any JobQueueStore else {
            try? await store.close()
            throw BenchError("the \(kind) store keeps no queues in this build (it does not conform to JobQueueStore)")
        }
        return OpenQueueStore(queues: queues, close: { try? await store.close() })
    }
}

struct OpenQueueStore: Sendable {
    var queues: any JobQueueStore
    var close: @Sendable () async -> Void
}

/// Forwards every call and counts the jobs the store recorded as done, and the round trips of each kind.
final class CountingQueueStore: JobQueueStore, CustomStringConvertible {
    let base: any JobQueueStore
    private let doneCount = Atomic<Int>(0)
    private let claimCalls = Atomic<Int>(0)
    private let claimedJobs = Atomic<Int>(0)
    private let recordCalls = Atomic<Int>(0)
    private let enqueueCalls = Atomic<Int>(0)
    private let renewCalls = Atomic<Int>(0)
    private let claimNanoseconds = Atomic<Int>(0)
    private let recordNanoseconds = Atomic<Int>(0)
    private let enqueueNanoseconds = Atomic<Int>(0)

    init(_ base: any JobQueueStore) { self.base = base }

    var done: Int { doneCount.load(ordering: .relaxed) }
    var counts: (claims: Int, claimed: Int, records: Int, enqueues: Int, renewals: Int) {
        (claimCalls.load(ordering: .relaxed), claimedJobs.load(ordering: .relaxed), recordCalls.load(ordering: .relaxed),
         enqueueCalls.load(ordering: .relaxed), renewCalls.load(ordering: .relaxed))
    }
    var description: String { "counting(\(base))" }

    /// Mean milliseconds per call of claim, record and enqueue, as this process waited for them.
    var meanMilliseconds: (claim: Double, record: Double, enqueue: Double) {
        func mean(_ total: Int, _ calls: Int) -> Double { calls > 0 ? Double(total) / Double(calls) / 1e6 : 0 }
        let c = counts
        return (mean(claimNanoseconds.load(ordering: .relaxed), c.claims), mean(recordNanoseconds.load(ordering: .relaxed), c.records),
                mean(enqueueNanoseconds.load(ordering: .relaxed), c.enqueues))
    }

    func enqueue(_ jobs: [JobSpec]) async throws -> [Enqueued] {
        enqueueCalls.add(1, ordering: .relaxed)
        let start = boottime()
        defer { enqueueNanoseconds.add(Int(boottime() - start), ordering: .relaxed) }
        return try await base.enqueue(jobs)
    }

    func claim(queue: QueueName, worker: WorkerID, limit: Int, lease: Duration) async throws -> [JobClaim] {
        claimCalls.add(1, ordering: .relaxed)
        let start = boottime()
        defer { claimNanoseconds.add(Int(boottime() - start), ordering: .relaxed) }
        let claims = try await base.claim(queue: queue, worker: worker, limit: limit, lease: lease)
        claimedJobs.add(claims.count, ordering: .relaxed)
        return claims
    }

    func renew(_ claims: [ClaimReference], lease: Duration) async throws -> [Bool] {
        renewCalls.add(1, ordering: .relaxed)
        return try await base.renew(claims, lease: lease)
    }

    func record(_ outcomes: [JobOutcome]) async throws -> [OutcomeReply] {
        recordCalls.add(1, ordering: .relaxed)
        let start = boottime()
        defer { recordNanoseconds.add(Int(boottime() - start), ordering: .relaxed) }
        let replies = try await base.record(outcomes)
        doneCount.add(replies.count(where: { $0 == .recorded(.done) }), ordering: .relaxed)
        return replies
    }

    func release(_ claims: [ClaimReference]) async throws { try await base.release(claims) }
    func cancel(_ job: JobID) async throws -> JobState? { try await base.cancel(job) }
    func redrive(queue: QueueName, ids: [JobID]?) async throws -> Int { try await base.redrive(queue: queue, ids: ids) }
    func prune(retention: Duration, limit: Int) async throws -> Int { try await base.prune(retention: retention, limit: limit) }
    func stats(queue: QueueName?) async throws -> [QueueStats] { try await base.stats(queue: queue) }
    func jobs(queue: QueueName?, state: JobState, after cursor: JobID?, limit: Int) async throws -> [JobRecord] {
        try await base.jobs(queue: queue, state: state, after: cursor, limit: limit)
    }
    func job(_ id: JobID) async throws -> JobRecord? { try await base.job(id) }
    func enqueued(on queue: QueueName) -> AsyncStream<Void> { base.enqueued(on: queue) }
}

// MARK: The PostgreSQL server's tools

/// The newest installed PostgreSQL's bin directory.
func postgresBin() throws -> String {
    guard let version = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")
        .sorted(by: { $0.compare($1, options: .numeric) == .orderedAscending }).last
    else { throw BenchError("PostgreSQL is not installed: apt-get install postgresql") }
    return "/usr/lib/postgresql/\(version)/bin"
}

/// `pgbench`, installed from Debian's packages when missing (it comes with `postgresql-client`).
func pgbenchPath() throws -> String {
    let path = try postgresBin() + "/pgbench"
    if FileManager.default.isExecutableFile(atPath: path) { return path }
    guard getuid() == 0 else { throw BenchError("pgbench is missing: apt-get install postgresql-client (or run as root)") }
    note("installing postgresql-client for pgbench")
    try runCommand(["/usr/bin/apt-get", "update", "-qq"])
    try runCommand(["/usr/bin/apt-get", "install", "-y", "-qq", "postgresql-client"], environment: ["DEBIAN_FRONTEND": "noninteractive"])
    guard FileManager.default.isExecutableFile(atPath: path) else { throw BenchError("pgbench is still missing at \(path)") }
    return path
}

/// Runs one SQL text with `psql` and returns its unaligned output, trimmed.
@discardableResult
func psql(_ url: String, _ sql: String) throws -> String {
    try runCommand([try postgresBin() + "/psql", url, "-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql]).output
        .trimmingCharacters(in: .whitespacesAndNewlines)
}

/// A file's size plus its `-wal` and `-shm` companions, in bytes.
func sqliteBytes(_ path: String) -> Int {
    [path, path + "-wal", path + "-shm"].reduce(0) { total, file in
        total + (((try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? Int) ?? 0)
    }
}

func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1_048_576) }

/// The first executable named `name` on PATH.
func onPath(_ name: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
