import Foundation
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyStore
#if canImport(Glibc)
import Glibc
#endif

/// Jobs per second of one system in one configuration, sampled every second of the measurement window.
struct RateResult: Codable, Sendable {
    var system: String
    var store: String
    var handlers: Int
    /// What else ran: `normal`, or the other session's state.
    var condition: String = "normal"
    var perSecond: [Double]
    var mean: Double
    var jobs: Int
    var seconds: Double
    var note: String?

    init(system: String, store: String, handlers: Int, condition: String = "normal", perSecond: [Double], jobs: Int, seconds: Double, note: String? = nil) {
        self.system = system
        self.store = store
        self.handlers = handlers
        self.condition = condition
        self.perSecond = perSecond
        self.jobs = jobs
        self.seconds = seconds
        self.mean = seconds > 0 ? Double(jobs) / seconds : 0
        self.note = note
    }

    /// Nearest-rank percentiles of the per-second rates (`Distribution` is unit-agnostic).
    var distribution: Distribution? { Distribution(milliseconds: perSecond) }
}

final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    func add(_ amount: Int) { value.add(amount, ordering: .relaxed) }
    var current: Int { value.load(ordering: .relaxed) }
}

/// Sleeps until `deadline` on CLOCK_BOOTTIME.
func sleep(untilBoottime deadline: Int64) async throws {
    let left = deadline - boottime()
    if left > 0 { try await Task.sleep(for: .nanoseconds(left)) }
}

/// Counts of `count()` per second over `duration`, after `warmup`: the per-second rates, the total and the exact
/// window in seconds.
func samplePerSecond(warmup: Duration, duration: Duration, atStart: () -> Void = {}, count: () -> Int) async throws -> (rates: [Double], total: Int, seconds: Double) {
    try await Task.sleep(for: warmup)
    atStart()
    let start = boottime()
    let first = count()
    var (last, lastAt) = (first, start)
    var rates: [Double] = []
    let seconds = Int((duration.milliseconds / 1000).rounded())
    for second in 1...max(1, seconds) {
        try await sleep(untilBoottime: start + Int64(second) * 1_000_000_000)
        let (now, value) = (boottime(), count())
        rates.append(Double(value - last) / (Double(now - lastAt) / 1e9))
        (last, lastAt) = (value, now)
    }
    return (rates, last - first, Double(lastAt - start) / 1e9)
}

/// Keeps `queue` fed: whenever fewer than `backlog` enqueued jobs are not yet done, enqueues another batch.
/// With `rate`, enqueues at most that many jobs per second instead.
func produce(on store: any JobQueueStore, queue: QueueName, done: @escaping @Sendable () -> Int, backlog: Int, batch: Int, rate: Double? = nil, stop: StopFlag) -> Task<Int, any Error> {
    Task {
        let queues = WorkQueue(store: store)
        let spec = try JobSpec(queue: queue, payload: Array("{}".utf8))
        let jobs = Array(repeating: spec, count: batch)
        var enqueued = 0
        let start = boottime()
        while !stop.isSet {
            if let rate {
                let due = Int(Double(boottime() - start) / 1e9 * rate)
                let count = min(batch, due - enqueued)
                if count <= 0 {
                    try await Task.sleep(for: .milliseconds(5))
                    continue
                }
                _ = try await queues.enqueue(Array(jobs.prefix(count)))
                enqueued += count
            } else if enqueued - done() < backlog {
                _ = try await queues.enqueue(jobs)
                enqueued += batch
            } else {
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        return enqueued
    }
}

/// Cancels what is left of a queue's backlog and deletes every finished job, so the next configuration starts
/// from an empty table.
func drain(_ store: any JobQueueStore, queue: QueueName) async throws {
    for state in [JobState.pending, .scheduled, .running] {
        while true {
            let left = try await store.jobs(queue: queue, state: state, after: nil, limit: 1_000)
            if left.isEmpty { break }
            for job in left { _ = try await store.cancel(job.id) }
            if left.count < 1_000 { break }
        }
    }
    while try await store.prune(retention: .zero, limit: 10_000) > 0 {}
}

/// Every part uses one queue per store, which ``prime(_:)`` has made claimable.
let benchQueue = "bench"

/// Waits until the store grants claims. A store whose record of claims may be incomplete (a fresh one included:
/// it could be a restored backup) grants none for one claim lease, by design, so that lost claims cannot run
/// twice; the benchmark waits that out once per store before it measures anything. How long it waited.
func prime(_ target: QueueTarget, lease: Duration = .seconds(30)) async throws -> Double {
    let opened = try await target.open()
    let queue = try QueueName(benchQueue)
    let worker = try benchWorker("primer")
    _ = try await opened.queues.enqueue([try JobSpec(queue: queue, payload: Array("{}".utf8))])
    let start = boottime()
    while true {
        if let claim = try await opened.queues.claim(queue: queue, worker: worker, limit: 1, lease: lease).first {
            _ = try await opened.queues.record([.completed(claim.reference)])
            break
        }
        guard Double(boottime() - start) / 1e9 < lease.milliseconds / 1000 + 15 else {
            await opened.close()
            throw BenchError("the \(target.kind) store granted no claim within one claim lease")
        }
        try await Task.sleep(for: .milliseconds(250))
    }
    try await drain(opened.queues, queue: queue)
    await opened.close()
    return Double(boottime() - start) / 1e9
}

func benchWorker(_ name: String) throws -> WorkerID {
    WorkerID(id: try MemberID(name), incarnation: UUID().uuidString.lowercased())
}

/// enqueue → claim → complete with handlers that do nothing: one in-process `QueueWorker` of `handlers` concurrent
/// handlers (it claims up to its free slots per round trip and records outcomes in batches) and one producer.
func understudyThroughput(
    _ target: QueueTarget, handlers: Int, warmup: Duration, duration: Duration, condition: String = "normal",
    claimLease: Duration = .seconds(30)
) async throws -> RateResult {
    let opened = try await target.open()
    let store = CountingQueueStore(opened.queues)
    let queue = try QueueName(benchQueue)
    let configuration = try QueueWorkerConfiguration(queue: queue, worker: try benchWorker("bench"), concurrency: handlers, claimLease: claimLease)
    let worker = QueueWorker(configuration: configuration, store: store) { _ in }
    let stop = StopFlag()
    let producer = produce(on: store, queue: queue, done: { store.done }, backlog: 1_000, batch: 200, stop: stop)
    if target.kind == "PostgreSQL" { _ = try? psql(target.url, "SELECT pg_stat_reset()") }
    let running = Task { try await worker.run() }
    let sampled: (rates: [Double], total: Int, seconds: Double)
    var waits: WaitSampler?
    do {
        sampled = try await samplePerSecond(warmup: warmup, duration: duration, atStart: {
            if target.kind == "PostgreSQL" { waits = try? WaitSampler.start(url: target.url, seconds: duration.milliseconds / 1000) }
        }) { store.done }
    } catch {
        stop.set()
        worker.shutdown()
        await opened.close()
        throw error
    }
    stop.set()
    _ = try await producer.value
    worker.shutdown()
    try await running.value
    let counts = store.counts
    let means = store.meanMilliseconds
    var serverTime = ""
    if target.kind == "PostgreSQL" {
        // track_functions = 'pl' (set when the server starts): time spent in each queue function on the server.
        serverTime = ((try? psql(target.url, """
            SELECT string_agg(format('%s %s calls %s ms/call', funcname, calls, round((total_time / calls)::numeric, 2)), '; ' ORDER BY total_time DESC)
            FROM pg_stat_user_functions WHERE calls > 0 AND funcname IN ('understudy_claim', 'understudy_record', 'understudy_enqueue', 'understudy_renew')
            """)) ?? "").replacingOccurrences(of: "understudy_", with: "")
    }
    try? await drain(opened.queues, queue: queue)
    await opened.close()
    let perClaim = counts.claims > 0 ? Double(counts.claimed) / Double(counts.claims) : 0
    return RateResult(
        system: "understudy", store: target.kind, handlers: handlers, condition: condition, perSecond: sampled.rates,
        jobs: sampled.total, seconds: sampled.seconds,
        note: String(format: "%.1f jobs per claim; %d claims %.2f ms, %d records %.2f ms, %d enqueues %.2f ms (whole run, mean per call)",
                     perClaim, counts.claims, means.claim, counts.records, means.record, counts.enqueues, means.enqueue)
            + (serverTime.isEmpty ? "" : "; in the server: " + serverTime)
            + (waits.map { "; server backends sampled every 100 ms: " + $0.finish() } ?? "")
    )
}

// MARK: Latency

struct LatencyResult: Codable, Sendable {
    var store: String
    var distribution: Distribution?
    var samplesMilliseconds: [Double]
}

/// One job at a time into an idle worker (woken by the store's announcement), from just before `enqueue` to the
/// first line of the handler, on one process clock.
func enqueueToStart(_ target: QueueTarget, samples: Int, poll: Duration) async throws -> LatencyResult {
    let opened = try await target.open()
    let queue = try QueueName(benchQueue)
    let (starts, sink) = AsyncStream<(Int64, Int64)>.makeStream()
    let configuration = try QueueWorkerConfiguration(queue: queue, worker: try benchWorker("latency"), concurrency: 1, pollInterval: poll)
    let worker = QueueWorker(configuration: configuration, store: opened.queues) { job in
        sink.yield((job.claim.id.rawValue, boottime()))
    }
    let running = Task { try await worker.run() }
    let queues = WorkQueue(store: opened.queues)
    let spec = try JobSpec(queue: queue, payload: Array("{}".utf8))
    var iterator = starts.makeAsyncIterator()
    var values: [Double] = []
    try await Task.sleep(for: .milliseconds(500))
    let warmup = 10
    for index in 0..<(samples + warmup) {
        // Idle: the previous job is recorded and the worker's claim after it came back empty.
        try await Task.sleep(for: .milliseconds(Int.random(in: 40...90)))
        let sent = boottime()
        let id = try await queues.enqueue(spec).id.rawValue
        var started: Int64 = 0
        while let next = await iterator.next() {
            if next.0 == id {
                started = next.1
                break
            }
        }
        if index >= warmup { values.append(Double(started - sent) / 1e6) }
    }
    worker.shutdown()
    try await running.value
    try? await drain(opened.queues, queue: queue)
    await opened.close()
    return LatencyResult(store: target.kind, distribution: Distribution(milliseconds: values), samplesMilliseconds: values)
}

// MARK: Table size under steady load

struct SizeSample: Codable, Sendable {
    var seconds: Double
    var store: String
    var bytes: Int
    var doneSoFar: Int
    var detail: String?
}

/// A steady load (`rate` jobs/s per store) with a short retention, on every target at once; the table's size
/// every `every`.
func steadyRun(
    _ targets: [QueueTarget], postgresURL: String?, length: Duration, every: Duration, retention: Duration, pruneInterval: Duration,
    rate: Double, handlers: Int, report: @escaping @Sendable (SizeSample) -> Void
) async throws -> [SizeSample] {
    struct Running: Sendable {
        var target: QueueTarget
        var store: CountingQueueStore
        var opened: OpenQueueStore
        var worker: QueueWorker
        var task: Task<Void, any Error>
        var producer: Task<Int, any Error>
        var stop: StopFlag
    }
    var runs: [Running] = []
    for target in targets {
        let opened = try await target.open()
        let store = CountingQueueStore(opened.queues)
        let queue = try QueueName(benchQueue)
        let configuration = try QueueWorkerConfiguration(queue: queue, worker: try benchWorker("steady"), concurrency: handlers)
        let worker = QueueWorker(configuration: configuration, store: store, retention: retention, pruneInterval: pruneInterval) { _ in }
        let stop = StopFlag()
        let producer = produce(on: store, queue: queue, done: { store.done }, backlog: 1_000, batch: 200, rate: rate, stop: stop)
        runs.append(Running(target: target, store: store, opened: opened, worker: worker, task: Task { try await worker.run() }, producer: producer, stop: stop))
    }
    var samples: [SizeSample] = []
    let start = boottime()
    let steps = Int((length.milliseconds / every.milliseconds).rounded())
    for step in 0...steps {
        if step > 0 { try await sleep(untilBoottime: start + Int64(Double(step) * every.milliseconds * 1e6)) }
        let elapsed = Double(boottime() - start) / 1e9
        for run in runs {
            let sample: SizeSample
            if let path = run.target.sqlitePath {
                sample = SizeSample(seconds: elapsed, store: run.target.kind, bytes: sqliteBytes(path), doneSoFar: run.store.done, detail: "file + -wal + -shm")
            } else if run.target.kind == "PostgreSQL" {
                let url = postgresURL ?? run.target.url
                let row = (try? psql(url, """
                    SELECT pg_total_relation_size('understudy.jobs'), n_live_tup, n_dead_tup, coalesce(to_char(last_autovacuum, 'HH24:MI:SS'), '-')
                    FROM pg_stat_user_tables WHERE relid = 'understudy.jobs'::regclass
                    """)) ?? ""
                let fields = row.split(separator: "|").map(String.init)
                sample = SizeSample(
                    seconds: elapsed, store: run.target.kind, bytes: Int(fields.first ?? "") ?? -1, doneSoFar: run.store.done,
                    detail: fields.count == 4 ? "live rows \(fields[1]), dead rows \(fields[2]), last autovacuum \(fields[3])" : row
                )
            } else {
                sample = SizeSample(seconds: elapsed, store: run.target.kind, bytes: 0, doneSoFar: run.store.done)
            }
            report(sample)
            samples.append(sample)
        }
    }
    for run in runs {
        run.stop.set()
        _ = try await run.producer.value
        run.worker.shutdown()
        try await run.task.value
        // A backlog left behind would slow every later part's claims (and its own drain).
        try? await drain(run.opened.queues, queue: try QueueName(benchQueue))
        await run.opened.close()
    }
    return samples
}

/// A `psql` session that samples what the server's other client backends wait for, every 100 ms for `seconds`:
/// `active` without a wait event is a backend on the CPU (or waiting for it).
struct WaitSampler {
    let pid: pid_t
    let log: String

    static func start(url: String, seconds: Double) throws -> WaitSampler {
        let samples = Int(seconds * 10)
        let sql = """
            CREATE TEMP TABLE w (e text);
            DO $$ BEGIN FOR i IN 1..\(samples) LOOP
                PERFORM pg_stat_clear_snapshot();
                INSERT INTO w SELECT CASE WHEN wait_event IS NULL THEN state ELSE wait_event_type || ':' || wait_event END
                    FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                        AND coalesce(application_name, '') NOT IN ('psql', 'bench-idle-tx') AND state <> 'idle';
                PERFORM pg_sleep(0.1);
            END LOOP; END $$;
            SELECT 'WAITS ' || coalesce(string_agg(e || ' ' || round(100.0 * n / \(samples), 0) || '%', ', ' ORDER BY n DESC), 'none') FROM (SELECT e, count(*) n FROM w GROUP BY e) x;
            """
        let log = NSTemporaryDirectory() + "understudy-bench-waits-\(getpid())-\(boottime()).log"
        let pid = try spawn([try postgresBin() + "/psql", url, "-XAtq", "-c", sql], log: log, environment: ["PGAPPNAME": "bench-waits"])
        return WaitSampler(pid: pid, log: log)
    }

    /// Waits for the sampler to end; the share of samples per wait (a backend counted per sample it was busy).
    func finish() -> String {
        reap(pid, timeout: .seconds(30))
        defer { unlink(log) }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return output.split(separator: "\n").last(where: { $0.hasPrefix("WAITS ") }).map { String($0.dropFirst(6)) } ?? "?"
    }
}
