import Foundation
import Synchronization
import Testing
import Understudy
import UnderstudyCore
import UnderstudyStore

/// The queue runtime against a real clock and an in-memory store. Claim leases (T = 10 s) are far longer than
/// anything here should take, so a job that waited for an expiry instead of a release would show.
@Suite("Queue worker runtime", .timeLimit(.minutes(2)))
struct QueueWorkerTests {
    static let queue = try! QueueName("jobs")

    static func configuration(_ worker: String = "w", concurrency: Int = 4, stopGrace: Duration = .seconds(5)) throws -> QueueWorkerConfiguration {
        try QueueWorkerConfiguration(
            queue: queue, worker: WorkerID(id: MemberID(worker), incarnation: UUID().uuidString), concurrency: concurrency,
            claimLease: .seconds(10), renewInterval: .milliseconds(500), pollInterval: .milliseconds(50), stopGrace: stopGrace,
            retry: RetryPolicy(base: .milliseconds(10), maximum: .milliseconds(20))
        )
    }

    static func jobs(_ count: Int, maxAttempts: Int = 3) throws -> [JobSpec] {
        try (0..<count).map { try JobSpec(queue: queue, payload: Array("\($0)".utf8), maxAttempts: maxAttempts) }
    }

    /// Waits until `condition` holds on the store's counts of the queue.
    static func until(_ store: InMemoryStore, _ condition: @escaping (QueueStats) -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let stats = try await store.stats(queue: queue).first, condition(stats) { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    @Test func twoWorkers_completeEveryJobOnce_withAtMostTheirConcurrencyAtATime() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        _ = try await WorkQueue(store: store).enqueue(try Self.jobs(200))
        let runs = Mutex<[String: Int]>([:])
        let concurrency = Mutex((now: 0, widest: 0))
        let handler: QueueWorker.Handler = { job in
            concurrency.withLock { $0.now += 1; $0.widest = max($0.widest, $0.now) }
            runs.withLock { $0[String(decoding: job.claim.payload, as: UTF8.self), default: 0] += 1 }
            try await Task.sleep(for: .milliseconds(1))
            concurrency.withLock { $0.now -= 1 }
        }
        let workers = try [QueueWorker(configuration: Self.configuration("a"), store: store, handler: handler),
                           QueueWorker(configuration: Self.configuration("b"), store: store, handler: handler)]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in workers { group.addTask { try await worker.run() } }
            #expect(try await Self.until(store) { $0.count(.done) == 200 })
            for worker in workers { worker.shutdown() }
            try await group.waitForAll()
        }
        #expect(runs.withLock { $0.count } == 200)
        #expect(runs.withLock { $0.values.allSatisfy { $0 == 1 } })
        #expect(concurrency.withLock { $0.widest } <= 8)
    }

    @Test func aJobThatAlwaysFails_isRetriedThenDeadLettered_withItsError() async throws {
        struct Boom: Error, CustomStringConvertible { var description: String { "boom" } }
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let id = try await WorkQueue(store: store).enqueue(try Self.jobs(1, maxAttempts: 3)[0]).id
        let attempts = Mutex<[Int]>([])
        let worker = QueueWorker(configuration: try Self.configuration(), store: store) { job in
            attempts.withLock { $0.append(job.claim.attempt) }
            throw Boom()
        }
        let running = Task { try await worker.run() }
        #expect(try await Self.until(store) { $0.count(.dead) == 1 })
        worker.shutdown()
        try await running.value
        #expect(attempts.withLock { $0 } == [1, 2, 3])
        #expect(try await store.job(id)?.lastError == "boom")
    }

    /// On SQLite too, whose calls fail once their task is cancelled: the last give-back comes as the worker
    /// finishes, and must still reach the store.
    @Test(arguments: ["memory", "sqlite"])
    func shutdown_letsRunningJobsFinishWithinTheGrace_thenGivesTheRestBackAtOnce(backend: String) async throws {
        let directory = try TemporaryDirectory()
        let store: any JobQueueStore = backend == "memory"
            ? InMemoryStore(wallMicroseconds: { 0 }) : try seasonedSQLiteStore(path: directory.file("store.db"))
        _ = try await WorkQueue(store: store).enqueue(try Self.jobs(2))
        let started = AsyncStream<Void>.makeStream()
        let cancelled = Mutex(0)
        let worker = QueueWorker(configuration: try Self.configuration(concurrency: 2, stopGrace: .milliseconds(200)), store: store) { job in
            started.continuation.yield()
            if job.claim.payload == Array("0".utf8) { return }
            do { try await Task.sleep(for: .seconds(3_600)) } catch { cancelled.withLock { $0 += 1 }; throw error }
        }
        let running = Task { try await worker.run() }
        var iterator = started.stream.makeAsyncIterator()
        _ = await iterator.next()
        _ = await iterator.next()
        worker.shutdown()
        try await running.value
        #expect(cancelled.withLock { $0 } == 1)
        let stats = try #require(try await store.stats(queue: Self.queue).first)
        #expect(stats.counts == [.done: 1, .pending: 1])
        // Given back, not expired: another worker claims it at once, and it is still its first attempt.
        let again = try await store.claim(queue: Self.queue, worker: Self.configuration().worker, limit: 1, lease: .seconds(10))
        #expect(again.first?.attempt == 1)
    }

    @Test func anIdleWorker_startsAJobSoonAfterItIsEnqueued() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let (started, sink) = AsyncStream<Void>.makeStream()
        // A poll interval of an hour: only the announcement can wake the worker.
        let configuration = try QueueWorkerConfiguration(
            queue: Self.queue, worker: WorkerID(id: MemberID("w"), incarnation: "1"), claimLease: .seconds(10), pollInterval: .seconds(3_600)
        )
        let worker = QueueWorker(configuration: configuration, store: store) { _ in sink.yield() }
        let running = Task { try await worker.run() }
        try await Task.sleep(for: .milliseconds(100))  // let the first (empty) claim pass
        _ = try await WorkQueue(store: store).enqueue(try Self.jobs(1)[0])
        var iterator = started.makeAsyncIterator()
        #expect(await iterator.next() != nil)
        worker.shutdown()
        try await running.value
    }
}
