import Foundation
import Synchronization
import Testing
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySimulator
import UnderstudyStore
import UnderstudyStoreConformance

/// The PostgreSQL work queues beyond the conformance suite: the store clock under a stepped server clock, corrupt
/// rows, a server restart, one announcement per enqueue, and a random sequence against `JobQueueLedger`.
@Suite("PostgreSQL work queues", .serialized, .timeLimit(.minutes(3)))
struct PostgresQueueTests {
    static func job(_ payload: String, queue: String = "q", maxAttempts: Int = 3, idempotencyKey: String? = nil) throws -> JobSpec {
        try JobSpec(queue: QueueName(queue), payload: Array(payload.utf8), maxAttempts: maxAttempts, idempotencyKey: idempotencyKey)
    }

    static func worker(_ name: String) throws -> WorkerID { WorkerID(id: try MemberID(name), incarnation: "\(name)-1") }

    // MARK: The store clock

    @Test func wallClockSteppedForwardAnHour_aHeldClaimIsNotClaimableBeforeItsLeaseRanOnTheRealClock() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let a = try await PostgresStore(url: url), b = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        let queue = try QueueName("q")
        let lease = Duration.seconds(3)
        let id = try await a.enqueue([try Self.job("held")])[0].id
        let started = ContinuousClock.now
        let held = try #require(try await a.claim(queue: queue, worker: Self.worker("a"), limit: 1, lease: lease).first)
        #expect(try await b.claim(queue: queue, worker: Self.worker("b"), limit: 1, lease: lease).isEmpty)

        try await TestPostgres.stepWallClock(url, by: .seconds(3_600))
        // Readers see the claim running; the worker that holds it can still renew it.
        #expect(try await b.job(id)?.state == .running)
        #expect(try await b.stats(queue: queue).first?.count(.running) == 1)
        // Another worker polls every 100 ms by its own clock: it gets the job only once the lease ran out for real.
        var stolen: JobClaim?
        while stolen == nil, ContinuousClock.now - started < .seconds(8) {
            try await Task.sleep(for: .milliseconds(100))
            stolen = try await b.claim(queue: queue, worker: Self.worker("b"), limit: 1, lease: lease).first
        }
        let after = ContinuousClock.now - started
        let second = try #require(stolen, "never claimable again")
        #expect(after >= lease - .milliseconds(100), "claimable again after \(after.formatted), before its lease of \(lease.formatted)")
        #expect(after < lease + .seconds(2), "claimable again only after \(after.formatted)")
        #expect(second.token > held.token)
        #expect(try await a.record([.completed(held.reference)]) == [.stale])
        try await a.close()
        try await b.close()
    }

    @Test func tokens_areAtLeastTheServerWallClockInMicroseconds() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        _ = try await store.enqueue([try Self.job("x")])
        let before = MonotonicClock.wallMicroseconds()
        let claim = try #require(try await store.claim(queue: QueueName("q"), worker: Self.worker("w"), limit: 1, lease: .seconds(10)).first)
        #expect(claim.token.rawValue + 5_000_000 >= before)
        try await store.close()
    }

    @Test func newQueueInANewSchema_grantsNoClaimForOneLease() async throws {
        let clock = ManualClock()
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url, clock: clock.read)
        _ = try await store.enqueue([try Self.job("x")])
        let queue = try QueueName("q")
        #expect(try await store.claim(queue: queue, worker: Self.worker("w"), limit: 1, lease: .seconds(60)).isEmpty)
        clock.advance(by: .seconds(61))
        #expect(try await store.claim(queue: queue, worker: Self.worker("w"), limit: 1, lease: .seconds(60)).count == 1)
        try await store.close()
    }

    // MARK: Corrupt rows

    @Test func corruptRows_goToTheDeadLetterWhenClaimed_andListsAndStatsSurviveThem() async throws {
        let (store, url) = try await Self.ledgerLikeQueueStore()
        let schema = try PostgresLocation(url).schema
        let ids = try await store.enqueue([
            try Self.job("stage"), try Self.job("attempt"), try Self.job("fine"), try Self.job("named", queue: "other"),
        ]).map(\.id.rawValue)
        try await withRawConnection(url) { raw in
            try await raw.execute("""
                UPDATE \(schema).jobs SET stage = 'teleported' WHERE id = \(ids[0]);
                UPDATE \(schema).jobs SET attempt = -3 WHERE id = \(ids[1]);
                UPDATE \(schema).jobs SET queue = 'not a queue!' WHERE id = \(ids[3])
                """)
        }
        // Lists and stats leave out what cannot be a job; the one lookup reports it.
        #expect(try await store.stats(queue: nil).map(\.queue.rawValue) == ["q"])
        #expect(try await store.jobs(queue: nil, state: .pending, after: nil, limit: 10).map(\.id.rawValue) == [ids[1], ids[2]])
        let lookup = await #expect(throws: StoreError.self) { try await store.job(JobID(rawValue: ids[3])) }
        #expect(lookup?.kind == .corrupt)

        let claims = try await store.claim(queue: QueueName("q"), worker: Self.worker("w"), limit: 10, lease: .seconds(10))
        #expect(claims.map(\.id.rawValue) == [ids[2]])
        let dead = try await store.jobs(queue: QueueName("q"), state: .dead, after: nil, limit: 10)
        #expect(dead.map(\.id.rawValue) == [ids[0], ids[1]])
        #expect(dead.map(\.lastError) == ["corrupt row: unknown stage \"teleported\"", "corrupt row: attempt -3 of 3"])
        #expect(try await store.stats(queue: QueueName("q")).first?.counts == [.dead: 2, .running: 1])
        #expect(try await store.record(claims.map { .completed($0.reference) }) == [.recorded(.done)])
        try await store.close()
    }

    // MARK: Server restart

    @Test func serverDown_claimsAndRecordsFailAsUnavailable_andWorkAgainAfterItsRestart() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url, timeout: .seconds(2))
        try await TestPostgres.completeRecordForEver(url)
        let queue = try QueueName("q")
        _ = try await store.enqueue([try Self.job("a"), try Self.job("b")])
        let held = try #require(try await store.claim(queue: queue, worker: Self.worker("w"), limit: 1, lease: .seconds(60)).first)

        try TestPostgres.control("stop")
        var restarted = false
        defer { if !restarted { try? TestPostgres.control("start") } }
        let claimError = await #expect(throws: StoreError.self) {
            try await store.claim(queue: queue, worker: Self.worker("w"), limit: 1, lease: .seconds(60))
        }
        #expect(claimError?.kind == .unavailable)
        let recordError = await #expect(throws: StoreError.self) { try await store.record([.completed(held.reference)]) }
        #expect(recordError?.kind == .unavailable)
        try TestPostgres.control("start")
        restarted = true

        #expect(try await Self.eventuallySucceeds { try await store.record([.completed(held.reference)]) } == [.recorded(.done)])
        // A restart while connected: the pool's connections die; the next calls fail or reconnect, then work.
        try TestPostgres.control("restart")
        let second = try #require(try await Self.eventuallySucceeds {
            try await store.claim(queue: queue, worker: Self.worker("w"), limit: 1, lease: .seconds(60))
        }.first)
        #expect(try await Self.eventuallySucceeds { try await store.record([.completed(second.reference)]) } == [.recorded(.done)])
        #expect(try await store.stats(queue: queue).first?.counts == [.done: 2])
        try await store.close()
    }

    /// `body`'s value once it succeeds (within 20 s); every failure on the way must be a transient ``StoreError``.
    static func eventuallySucceeds<Value>(_ body: () async throws -> Value) async throws -> Value {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            do {
                return try await body()
            } catch let error as StoreError where error.kind == .unavailable && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    // MARK: Announcements and batches

    @Test func enqueueOfABatch_isAnnouncedOncePerQueue_andReleaseAndRedriveAnnounceToo() async throws {
        let (store, url) = try await Self.ledgerLikeQueueStore()
        let other = try await PostgresStore(url: url, clock: ManualClock().read)
        let queue = try QueueName("q")
        let counter = Counter()
        let stream = other.enqueued(on: queue)
        let listening = Task { for await _ in stream { counter.add() } }
        _ = try await store.enqueue(try (0..<500).map { try Self.job("j\($0)", maxAttempts: 1) } + [try Self.job("x", queue: "elsewhere")])
        #expect(try await eventually(timeout: .seconds(5)) { counter.value >= 1 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(counter.value == 1, "an enqueue of 500 jobs of the queue was announced \(counter.value) times")
        let claims = try await store.claim(queue: queue, worker: Self.worker("w"), limit: 2, lease: .seconds(10))
        try await store.release([claims[0].reference])
        #expect(try await eventually(timeout: .seconds(5)) { counter.value == 2 })
        _ = try await store.record([.failed(claims[1].reference, error: "boom", retryAfter: .zero)])
        #expect(try await store.redrive(queue: queue, ids: nil) == 1)
        #expect(try await eventually(timeout: .seconds(5)) { counter.value == 3 })
        listening.cancel()
        try await store.close()
        try await other.close()
    }

    @Test func batchWithOneIdempotencyKeyTwice_insertsTheFirstAndReturnsItForTheSecond() async throws {
        let (store, _) = try await Self.ledgerLikeQueueStore()
        let enqueued = try await store.enqueue([
            try Self.job("a", idempotencyKey: "k"), try Self.job("b", idempotencyKey: "k"), try Self.job("c"),
        ])
        #expect(enqueued.map(\.deduplicated) == [false, true, false])
        #expect(enqueued[1].id == enqueued[0].id)
        #expect(enqueued[2].id > enqueued[0].id)
        try await store.close()
    }

    // MARK: Against the ledger

    @Test(arguments: [11, 12] as [UInt64])
    func randomOperations_giveWhatTheLedgerGives(seed: UInt64) async throws {
        let clock = ManualClock()
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url, clock: clock.read)
        try await TestPostgres.withoutFloorOrHistory(url)
        var ledger = JobQueueLedger()
        var random = SimulationRandom(seed: seed)
        // Ids differ (the store's may leave gaps): the ledger's id of each of the store's.
        var ids: [JobID: JobID] = [:], storeIDs: [JobID: JobID] = [:]
        var held: [(store: JobClaim, ledger: JobClaim)] = []
        let queues = try ["a", "b"].map { try QueueName($0) }
        let lease = Duration.seconds(5)
        var claimed = 0, recorded = 0, stale = 0
        func pick<T>(_ values: [T]) -> T { values[random.next(below: values.count)] }

        for step in 0..<400 {
            let now = clock.now
            switch random.next(below: 10) {
            case 0, 1:
                let specs = try (0..<(1 + random.next(below: 4))).map { _ in
                    try JobSpec(
                        queue: pick(queues), payload: Array("p\(step)".utf8), priority: pick([-1, 0, 0, 3]),
                        delay: pick([.zero, .zero, .seconds(2)]), maxAttempts: pick([1, 2, 3]),
                        idempotencyKey: pick([nil, nil, "i1", "i2"]), orderingKey: pick([nil, nil, "o1", "o2"])
                    )
                }
                let mine = try await store.enqueue(specs), theirs = ledger.enqueue(specs, at: now)
                for (m, t) in zip(mine, theirs) {
                    #expect(m.deduplicated == t.deduplicated, "step \(step)")
                    if !m.deduplicated { ids[m.id] = t.id; storeIDs[t.id] = m.id }
                    #expect(ids[m.id] == t.id, "step \(step): enqueue gave \(m.id), the ledger \(t.id)")
                }
            case 2, 3:
                let (queue, limit, name) = (pick(queues), 1 + random.next(below: 3), pick(["w1", "w2"]))
                let mine = try await store.claim(queue: queue, worker: Self.worker(name), limit: limit, lease: lease)
                let theirs = ledger.claim(queue: queue, worker: try Self.worker(name), limit: limit, lease: lease, at: StoreMoment(now: now))
                #expect(mine.map { ids[$0.id] ?? JobID(rawValue: -1) } == theirs.map(\.id), "step \(step): claimed")
                #expect(mine.map(\.token) == theirs.map(\.token), "step \(step): tokens")
                #expect(mine.map(\.attempt) == theirs.map(\.attempt) && mine.map(\.waited) == theirs.map(\.waited), "step \(step)")
                held += zip(mine, theirs).map { (store: $0, ledger: $1) }
                claimed += theirs.count
            case 4, 5:
                guard !held.isEmpty else { continue }
                let chosen = (0..<min(held.count, 1 + random.next(below: 3))).map { _ in held[random.next(below: held.count)] }
                let failures = chosen.map { _ in random.next(below: 2) == 0 }
                let retry = pick([Duration.zero, .seconds(1)])
                func outcomes(_ claims: [JobClaim]) -> [JobOutcome] {
                    zip(claims, failures).map { $1 ? .failed($0.reference, error: "e\(step)", retryAfter: retry) : .completed($0.reference) }
                }
                let mine = try await store.record(outcomes(chosen.map(\.store)))
                let theirs = ledger.record(outcomes(chosen.map(\.ledger)), at: now)
                #expect(mine == theirs, "step \(step): recorded")
                recorded += theirs.filter { $0 != .stale }.count
                stale += theirs.filter { $0 == .stale }.count
            case 6:
                guard !held.isEmpty else { continue }
                let chosen = held[random.next(below: held.count)]
                if random.next(below: 2) == 0 {
                    let theirs = ledger.renew([chosen.ledger.reference], lease: lease, at: now)
                    #expect(try await store.renew([chosen.store.reference], lease: lease) == theirs, "step \(step): renewed")
                } else {
                    try await store.release([chosen.store.reference])
                    ledger.release([chosen.ledger.reference], at: now)
                }
            case 7:
                let known = ledger.jobs.keys.sorted()
                guard !known.isEmpty, let mine = storeIDs[known[random.next(below: known.count)]] else { continue }
                let target = ids[mine]!
                switch random.next(below: 3) {
                case 0:
                    let theirs = ledger.cancel(target, at: now)
                    #expect(try await store.cancel(mine) == theirs, "step \(step): cancelled")
                case 1:
                    let queue = pick(queues)
                    let theirs = ledger.redrive(queue: queue, ids: nil, at: now)
                    #expect(try await store.redrive(queue: queue, ids: nil) == theirs, "step \(step): redriven")
                default:
                    let theirs = ledger.prune(retention: .seconds(3), limit: 2, at: now)
                    #expect(try await store.prune(retention: .seconds(3), limit: 2) == theirs, "step \(step): pruned")
                }
            default:
                clock.advance(by: pick([.milliseconds(500), .seconds(1), .seconds(5)]))
            }
            // Every view agrees, but for the last error of a claim that expired on its last attempt, which the
            // ledger writes only at its next claim of any queue while the store reports it at once.
            let now2 = clock.now
            #expect(try await store.stats(queue: nil) == ledger.stats(queue: nil, at: now2), "step \(step): stats")
            for state in JobState.allCases {
                let mine = try await store.jobs(queue: nil, state: state, after: nil, limit: 100)
                let theirs = ledger.jobs(queue: nil, state: state, after: nil, limit: 100, at: now2)
                #expect(mine.map { ids[$0.id] ?? JobID(rawValue: -1) } == theirs.map(\.id), "step \(step): \(state) jobs")
                for (m, t) in zip(mine, theirs) {
                    let expiredLast = if case .some(.running) = ledger.jobs[t.id]?.stage, t.state == .dead { true } else { false }
                    #expect(m.attempt == t.attempt && m.age == t.age && m.priority == t.priority, "step \(step): job \(t.id)")
                    if !expiredLast { #expect(m.lastError == t.lastError, "step \(step): job \(t.id) last error") }
                }
            }
        }
        // The sequence reaches every path: many claims, recorded and stale outcomes.
        #expect(claimed > 40 && recorded > 15 && stale > 5, "claimed \(claimed), recorded \(recorded), stale \(stale)")
        try await store.close()
    }

    // MARK: Throughput (prints only)

    @Test(.enabled(if: ProcessInfo.processInfo.environment["UNDERSTUDY_QUEUE_BENCH"] != nil))
    func throughput_enqueueInBatches_thenFourWorkersClaimAndComplete() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let producer = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        let queue = try QueueName("bench")
        let total = 20_000
        let payload = Array(repeating: UInt8(ascii: "x"), count: 100)
        var started = ContinuousClock.now
        for batch in 0..<(total / 1_000) {
            _ = try await producer.enqueue(try (0..<1_000).map { index in
                try JobSpec(queue: queue, payload: payload, idempotencyKey: index % 2 == 0 ? "k\(batch)-\(index)" : nil)
            })
        }
        let enqueueTime = ContinuousClock.now - started
        var workers: [PostgresStore] = []
        for _ in 0..<4 { workers.append(try await PostgresStore(url: url)) }
        started = ContinuousClock.now
        let done = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for (index, store) in workers.enumerated() {
                group.addTask {
                    var count = 0, calls = 0
                    while true {
                        let claims = try await store.claim(queue: queue, worker: Self.worker("w\(index)"), limit: 64, lease: .seconds(30))
                        calls += 1
                        if claims.isEmpty { return (count, calls) }
                        let replies = try await store.record(claims.map { .completed($0.reference) })
                        count += replies.filter { $0 == .recorded(.done) }.count
                    }
                }
            }
            return try await group.reduce(into: (0, 0)) { $0.0 += $1.0; $0.1 += $1.1 }
        }
        let workTime = ContinuousClock.now - started
        func rate(_ count: Int, _ time: Duration) -> Int { Int(Double(count) / (Double(time.nanoseconds) / 1e9)) }
        print("queue throughput: enqueued \(total) in batches of 1,000 in \(enqueueTime.formatted) (\(rate(total, enqueueTime)) jobs/s); 4 workers claimed (limit 64) and completed \(done.0) in \(workTime.formatted) with \(done.1) claims (\(rate(done.0, workTime)) jobs/s)")
        #expect(done.0 == total)
        for store in workers { try await store.close() }
        try await producer.close()
    }

    /// A store on a fresh schema with a manual clock that applies the ledger's rules as the other backends do.
    static func ledgerLikeQueueStore() async throws -> (PostgresStore, String) {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url, clock: ManualClock().read)
        try await TestPostgres.withoutFloorOrHistory(url)
        return (store, url)
    }
}

private final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
