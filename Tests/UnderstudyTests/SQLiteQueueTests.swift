import Foundation
import GRDB
import Testing
import Understudy
import UnderstudyCore
import UnderstudySQLite
import UnderstudySimulator
import UnderstudyStore
import UnderstudyStoreConformance

/// The SQLite backend of the work queues, beyond the conformance suite: the schema migration, a new boot, corrupt
/// rows, one transaction per call, and announcements through the file beside the database.
@Suite("SQLite queue", .timeLimit(.minutes(2)))
struct SQLiteQueueTests {
    let clock = ManualClock()
    let directory: TemporaryDirectory
    static let lease = Duration.seconds(10)

    init() throws {
        directory = try TemporaryDirectory()
    }

    var path: String { directory.file("understudy.db") }

    /// A store on a new file whose first claim lease has passed, so it grants at once.
    func newStore(boot: String = "boot-1") throws -> SQLiteStore {
        let store = try SQLiteStore(path: path, clock: clock.host(boot: boot))
        clock.advance(by: .seconds(600))
        return store
    }

    func job(_ payload: String, queue: String = "q", delay: Duration = .zero, maxAttempts: Int = 3) throws -> JobSpec {
        try JobSpec(queue: QueueName(queue), payload: Array(payload.utf8), delay: delay, maxAttempts: maxAttempts)
    }

    func claim(_ store: SQLiteStore, queue: String = "q", limit: Int = 10) async throws -> [JobClaim] {
        try await store.claim(
            queue: QueueName(queue), worker: WorkerID(id: MemberID("w"), incarnation: "w-1"), limit: limit, lease: Self.lease
        )
    }

    func payloads(_ claims: [JobClaim]) -> [String] {
        claims.map { String(decoding: $0.payload, as: UTF8.self) }
    }

    // MARK: Schema

    /// A file of schema version 1 (groups only), as earlier builds wrote it.
    func writeVersion1File() throws {
        let raw = try DatabaseQueue(path: path)
        try raw.write { db in
            try db.execute(sql: """
                CREATE TABLE understudy_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
                CREATE TABLE groups (
                    name TEXT PRIMARY KEY NOT NULL, active_goal INTEGER NOT NULL, last_token INTEGER NOT NULL,
                    next_join INTEGER NOT NULL
                );
                CREATE TABLE members (
                    group_name TEXT NOT NULL REFERENCES groups(name), member_id TEXT NOT NULL, incarnation TEXT NOT NULL,
                    weight INTEGER NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, join_seq INTEGER NOT NULL,
                    phase TEXT NOT NULL, heartbeat_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
                    PRIMARY KEY (group_name, member_id)
                );
                CREATE TABLE leases (
                    group_name TEXT NOT NULL REFERENCES groups(name), slot INTEGER NOT NULL, holder TEXT,
                    incarnation TEXT, token INTEGER, expires_at INTEGER, PRIMARY KEY (group_name, slot)
                );
                INSERT INTO understudy_meta (key, value) VALUES ('application', 'understudy'), ('schema_version', '1');
                INSERT INTO groups (name, active_goal, last_token, next_join) VALUES ('group', 1, 7, 1);
                INSERT INTO leases (group_name, slot) VALUES ('group', 0);
                """)
        }
        try raw.close()
    }

    @Test func openingAVersion1File_keepsItsGroupsAndAddsTheQueues() async throws {
        try writeVersion1File()
        // A reader does not migrate: it sees the groups, and no jobs.
        let reader = try SQLiteStore(path: path, clock: clock.host(), readOnly: true)
        #expect(try await reader.group(named: GroupName("group"))?.lastToken == FencingToken(rawValue: 7))
        #expect(try await reader.stats(queue: nil).isEmpty)
        #expect(try await reader.jobs(queue: nil, state: .pending, after: nil, limit: 10).isEmpty)
        #expect(try await reader.job(JobID(rawValue: 1)) == nil)
        try await reader.close()

        let store = try newStore()
        let raw = try DatabaseQueue(path: path)
        let version = try await raw.read { try String.fetchOne($0, sql: "SELECT value FROM understudy_meta WHERE key = 'schema_version'") }
        #expect(version == String(SQLiteStore.schemaVersion))
        #expect(SQLiteStore.schemaVersion == 4)
        #expect(try await raw.read { try $0.tableExists("checkpoints") })
        let indexes = try await raw.read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL ORDER BY name") }
        #expect(indexes == ["jobs_claimable", "jobs_finished", "jobs_idempotency", "jobs_ordering", "jobs_running", "jobs_unknown_stage"])
        try raw.close()
        #expect(try await store.group(named: GroupName("group"))?.lastToken == FencingToken(rawValue: 7))
        let granted = try await store.heartbeat(heartbeat(member("a"), .acquire)).outcome
        #expect(granted == .granted(FencingToken(rawValue: 8)))
        let id = try await store.enqueue([try job("a")])[0].id
        #expect(try await claim(store).map(\.id) == [id])
        try await store.close()
        // Opened again: already at the current version, nothing migrates twice.
        let again = try SQLiteStore(path: path, clock: clock.host())
        #expect(try await again.job(id)?.state == .running)
    }

    @Test func deletedJobs_neverGiveTheirIDToAnotherJob() async throws {
        let store = try newStore()
        let first = try await store.enqueue([try job("a"), try job("b")]).map(\.id)
        for claim in try await claim(store) { _ = try await store.record([.completed(claim.reference)]) }
        clock.advance(by: .seconds(60))
        #expect(try await store.prune(retention: .seconds(60), limit: 10) == 2)
        try await store.close()
        let reopened = try SQLiteStore(path: path, clock: clock.host())
        let next = try await reopened.enqueue([try job("c")])[0].id
        #expect(next > first[1])
    }

    // MARK: A new boot

    @Test func aNewBoot_makesTheClaimsOfTheLastOneClaimableAndRebasesItsInstants() async throws {
        let before = try newStore()
        let ids = try await before.enqueue([
            try job("claimed"), try job("last attempt", maxAttempts: 1), try job("done"),
            try job("delayed", delay: .seconds(3_600)), try job("backoff"),
        ]).map(\.id)
        let claims = try await claim(before, limit: 4)
        #expect(payloads(claims) == ["claimed", "last attempt", "done", "backoff"])
        _ = try await before.record([
            .completed(claims[2].reference), .failed(claims[3].reference, error: "later", retryAfter: .seconds(3_600)),
        ])
        try await before.close()

        // The next boot's clock restarted near zero, far before every instant of the last one.
        let boot2 = ManualClock()
        let after = try SQLiteStore(path: path, clock: boot2.host(boot: "boot-2"))
        #expect(try await after.job(ids[0])?.state == .pending)
        let dead = try #require(try await after.job(ids[1]))
        #expect(dead.state == .dead)
        #expect(dead.lastError == JobQueueLedger.expiredOnLastAttempt(1))
        #expect(try await after.job(ids[2])?.state == .done)
        #expect(try await after.job(ids[3])?.state == .pending)
        #expect(try await after.job(ids[4])?.state == .pending)
        #expect(try await after.job(ids[0])?.age == .zero)
        #expect(try await after.stats(queue: QueueName("q")).first?.oldestPendingAge == .zero)

        let again = try await claim(after)
        #expect(payloads(again) == ["claimed", "delayed", "backoff"])
        #expect(again.map(\.attempt) == [2, 1, 2])
        #expect(again.allSatisfy { $0.waited == .zero })
        #expect(again[0].token > claims[0].token)
        // The retention of the finished job runs from the new boot's start.
        boot2.advance(by: .seconds(59))
        #expect(try await after.prune(retention: .seconds(60), limit: 10) == 0)
        boot2.advance(by: .seconds(1))
        #expect(try await after.prune(retention: .seconds(60), limit: 10) == 1)
        // The claims of this boot expire on its clock.
        boot2.advance(by: Self.lease)
        #expect(try await after.job(ids[0])?.state == .pending)
    }

    // MARK: Corrupt rows

    @Test func corruptRows_goToTheDeadLetter_andTheQueueCarriesOn() async throws {
        let store = try newStore()
        let ids = try await store.enqueue([
            try job("negative"), try job("bogus"), try job("text"), try job("maxAttempts"), try job("fine"), try job("elsewhere"),
        ]).map(\.id)
        let raw = try DatabaseQueue(path: path)
        try await raw.write { db in
            try db.execute(sql: "UPDATE jobs SET attempt = -1 WHERE id = ?", arguments: [ids[0].rawValue])
            try db.execute(sql: "UPDATE jobs SET stage = 'bogus' WHERE id = ?", arguments: [ids[1].rawValue])
            try db.execute(sql: "UPDATE jobs SET payload = 'text' WHERE id = ?", arguments: [ids[2].rawValue])
            try db.execute(sql: "UPDATE jobs SET max_attempts = 0 WHERE id = ?", arguments: [ids[3].rawValue])
            try db.execute(sql: "UPDATE jobs SET queue = 'not a queue!' WHERE id = ?", arguments: [ids[5].rawValue])
        }
        try raw.close()

        #expect(try await store.stats(queue: nil).first?.counts == [.pending: 4])
        let claims = try await claim(store, limit: 1)
        #expect(payloads(claims) == ["fine"])
        #expect(try await claim(store).isEmpty)
        let dead = try await store.jobs(queue: QueueName("q"), state: .dead, after: nil, limit: 10)
        #expect(dead.map(\.id) == Array(ids[0..<4]))
        #expect(dead.map(\.lastError) == [
            "corrupt row: attempt -1", "corrupt row: unknown stage \"bogus\"", "corrupt row: payload is not a blob",
            "corrupt row: max_attempts 0",
        ])
        // A row whose queue name no job can have is left out of listings and stats, without failing them.
        #expect(try await store.job(ids[5]) == nil)
        #expect(try await store.jobs(queue: nil, state: .pending, after: nil, limit: 10).isEmpty)
        #expect(try await store.stats(queue: nil).map(\.queue.rawValue) == ["q"])
        #expect(try await store.stats(queue: nil).first?.counts == [.dead: 4, .running: 1])
        // A corrupt job can be cancelled, and one redriven with a reset attempt is claimed again.
        #expect(try await store.cancel(ids[1]) == .cancelled)
        #expect(try await store.redrive(queue: QueueName("q"), ids: [ids[0]]) == 1)
        #expect(payloads(try await claim(store)) == ["negative"])
    }

    @Test func aPageOfRowsThatCannotBeShown_isSkippedAndFilledFromTheNext() async throws {
        let store = try newStore()
        let ids = try await store.enqueue(try (0..<5).map { try job("j\($0)") }).map(\.id)
        let raw = try DatabaseQueue(path: path)
        try await raw.write { db in
            try db.execute(sql: "UPDATE jobs SET queue = '' WHERE id IN (?, ?)", arguments: [ids[0].rawValue, ids[1].rawValue])
        }
        try raw.close()
        #expect(try await store.jobs(queue: nil, state: .pending, after: nil, limit: 2).map(\.id) == [ids[2], ids[3]])
    }

    // MARK: Transactions

    @Test func everyCall_isOneTransaction_whateverTheBatch() async throws {
        let store = try newStore()
        let specs = try (0..<1_000).map { index in
            try JobSpec(queue: QueueName("q"), payload: [UInt8(index % 256)], idempotencyKey: index.isMultiple(of: 10) ? "k\(index)" : nil)
        }
        var before = store.roundTrips
        let ids = try await store.enqueue(specs)
        #expect(store.roundTrips == before + 1)
        #expect(Set(ids.map(\.id)).count == 1_000)
        before = store.roundTrips
        let again = try await store.enqueue(Array(specs[0..<20]) + [try job("new")])
        #expect(again.map(\.deduplicated) == (0..<20).map { $0.isMultiple(of: 10) } + [false])
        #expect(again[0].id == ids[0].id)
        before = store.roundTrips
        let claims = try await claim(store, limit: 1_000)
        #expect(claims.count == 1_000)
        #expect(claims.map(\.payload) == specs.map(\.payload))
        #expect(try await store.renew(claims.map(\.reference), lease: Self.lease).allSatisfy { $0 })
        let outcomes: [JobOutcome] = claims.enumerated().map { index, claim in
            index.isMultiple(of: 2) ? .completed(claim.reference) : .failed(claim.reference, error: "e\(index)", retryAfter: .zero)
        }
        let replies = try await store.record(outcomes)
        #expect(store.roundTrips == before + 3)
        #expect(replies == (0..<1_000).map { $0.isMultiple(of: 2) ? .recorded(.done) : .recorded(.pending) })
        #expect(try await store.job(claims[1].id)?.lastError == "e1")
    }

    @Test func outcomesOfOneClaimInOneCall_recordOnlyTheFirst() async throws {
        let store = try newStore()
        _ = try await store.enqueue([try job("a"), try job("b")])
        let claims = try await claim(store)
        let a = claims[0].reference, b = claims[1].reference
        let old = ClaimReference(id: b.id, token: FencingToken(rawValue: b.token.rawValue - 1))
        let replies = try await store.record([
            .failed(a, error: "x", retryAfter: .seconds(1)), .completed(a), .completed(old), .completed(b), .completed(b),
        ])
        #expect(replies == [.recorded(.scheduled), .stale, .stale, .recorded(.done), .stale])
        #expect(try await store.renew([a, a], lease: Self.lease) == [false, false])
    }

    @Test func emptyPayloads_andEmptyCalls_work() async throws {
        let store = try newStore()
        #expect(try await store.enqueue([]).isEmpty)
        _ = try await store.enqueue([try JobSpec(queue: QueueName("q"), payload: [])])
        let claims = try await claim(store)
        #expect(claims.map(\.payload) == [[]])
        #expect(try await store.renew([], lease: Self.lease).isEmpty)
        #expect(try await store.record([]).isEmpty)
        try await store.release([])
        #expect(try await store.redrive(queue: QueueName("q"), ids: []) == 0)
        #expect(try await claim(store, limit: 0).isEmpty)
    }

    // MARK: Announcements

    func queueLines() throws -> [String] {
        let text = (try? String(contentsOfFile: path + "-changes", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).filter { $0.hasPrefix("queue:") }
    }

    @Test func enqueue_announcesEachQueueOncePerCall_andReleaseAndRedriveAnnounceToo() async throws {
        let store = try newStore()
        let listener = try SQLiteStore(path: path, clock: clock.host())
        var other = listener.enqueued(on: try QueueName("other")).makeAsyncIterator()
        _ = try await store.enqueue(try (0..<100).map { try job("j\($0)") } + [try job("o", queue: "other")])
        #expect(try queueLines() == ["queue:q", "queue:other"])
        #expect(await other.next() != nil)
        // A deduplicated job is no news.
        let keyed = try JobSpec(queue: QueueName("k"), payload: [], idempotencyKey: "key")
        _ = try await store.enqueue([keyed])
        _ = try await store.enqueue([keyed])
        #expect(try queueLines().filter { $0 == "queue:k" }.count == 1)

        let claims = try await claim(store, limit: 2)
        try await store.release(claims.map(\.reference))
        #expect(try queueLines().suffix(1) == ["queue:q"])
        _ = try await store.enqueue([try job("dies", queue: "d", maxAttempts: 1)])
        let dying = try #require(try await claim(store, queue: "d").first)
        _ = try await store.record([.failed(dying.reference, error: "x", retryAfter: .zero)])
        #expect(try await store.redrive(queue: QueueName("d"), ids: nil) == 1)
        #expect(try queueLines().filter { $0 == "queue:d" }.count == 2)
    }

    @Test func queueAnnouncements_wakeNoGroup_andGroupAnnouncementsWakeNoQueue() async throws {
        let store = try newStore()
        // A queue and a group of the same name.
        let groupListener = try SQLiteStore(path: path, clock: clock.host())
        var group = groupListener.changes(of: try GroupName("same")).makeAsyncIterator()
        var unwokenQueue = groupListener.enqueued(on: try QueueName("same")).makeAsyncIterator()
        let a = try member("a")
        _ = try await store.heartbeat(heartbeat(a, group: "same", .acquire))
        #expect(await group.next() != nil)
        try await groupListener.close()
        #expect(await unwokenQueue.next() == nil)

        let queueListener = try SQLiteStore(path: path, clock: clock.host())
        var queue = queueListener.enqueued(on: try QueueName("same")).makeAsyncIterator()
        var unwokenGroup = queueListener.changes(of: try GroupName("same")).makeAsyncIterator()
        _ = try await store.enqueue([try job("x", queue: "same")])
        #expect(await queue.next() != nil)
        try await queueListener.close()
        #expect(await unwokenGroup.next() == nil)
    }

    // MARK: Against the ledger

    /// The same long random sequences of calls (several queues, priorities, delays, idempotency and ordering keys,
    /// claims, renewals, outcomes and releases with right and wrong tokens, cancels, redrives, prunes, time
    /// passing) go to a SQLite file and to a ``JobQueueLedger``: every reply and every view must be the same.
    @Test(arguments: [1, 2, 3])
    func randomCalls_giveTheLedgersRepliesAndViews(seed: UInt64) async throws {
        let store = try newStore()
        var ledger = JobQueueLedger()
        var random = SimulationRandom(seed: seed)
        func pick<T>(_ values: [T]) -> T { values[Int(random.next() % UInt64(values.count))] }
        func chance(_ probability: Double) -> Bool { Double(random.next() % 1_000) < probability * 1_000 }
        let queues = try ["q1", "q2"].map(QueueName.init)
        var claims: [JobClaim] = []
        var ids: [JobID] = []
        for step in 0..<400 {
            clock.advance(by: pick([.zero, .zero, .milliseconds(500), .seconds(2), .seconds(7)]))
            let now = clock.now
            let queue = pick(queues)
            let lease = pick([Duration.seconds(3), .seconds(10)])
            func reference() -> ClaimReference? {
                guard !claims.isEmpty else { return nil }
                let claim = pick(claims).reference
                return chance(0.2) ? ClaimReference(id: claim.id, token: FencingToken(rawValue: claim.token.rawValue + 1)) : claim
            }
            switch random.next() % 10 {
            case 0, 1:
                let specs = try (0..<Int(random.next() % 4 + 1)).map { _ in
                    try JobSpec(
                        queue: pick(queues), payload: Array("s\(step)".utf8), priority: pick([0, 0, 1, -1]),
                        delay: pick([.zero, .zero, .seconds(3)]), maxAttempts: pick([1, 2, 3]),
                        idempotencyKey: chance(0.3) ? pick(["i1", "i2", "i3"]) : nil,
                        orderingKey: chance(0.4) ? pick(["o1", "o2"]) : nil
                    )
                }
                let got = try await store.enqueue(specs)
                #expect(got == ledger.enqueue(specs, at: now), "step \(step): enqueue")
                ids += got.map(\.id)
            case 2, 3:
                let worker = try WorkerID(id: MemberID("w"), incarnation: "1")
                let limit = pick([1, 2, 5])
                let got = try await store.claim(queue: queue, worker: worker, limit: limit, lease: lease)
                #expect(got == ledger.claim(queue: queue, worker: worker, limit: limit, lease: lease, at: StoreMoment(now: now)), "step \(step): claim")
                claims += got
            case 4:
                let references = (0..<Int(random.next() % 3 + 1)).compactMap { _ in reference() }
                #expect(try await store.renew(references, lease: lease) == ledger.renew(references, lease: lease, at: now), "step \(step): renew")
            case 5, 6:
                let outcomes: [JobOutcome] = (0..<Int(random.next() % 3 + 1)).compactMap { _ in
                    reference().map { claim in
                        chance(0.5) ? .completed(claim) : .failed(claim, error: "e\(step)", retryAfter: pick([.zero, .seconds(2)]))
                    }
                }
                #expect(try await store.record(outcomes) == ledger.record(outcomes, at: now), "step \(step): record")
            case 7:
                let references = (0..<Int(random.next() % 2 + 1)).compactMap { _ in reference() }
                try await store.release(references)
                ledger.release(references, at: now)
            case 8:
                if chance(0.5), let id = ids.isEmpty ? nil : pick(ids) {
                    #expect(try await store.cancel(id) == ledger.cancel(id, at: now), "step \(step): cancel")
                } else {
                    let wanted = chance(0.5) || ids.isEmpty ? nil : [pick(ids)]
                    #expect(try await store.redrive(queue: queue, ids: wanted) == ledger.redrive(queue: queue, ids: wanted, at: now), "step \(step): redrive")
                }
            default:
                let retention = pick([Duration.seconds(5), .seconds(30)])
                #expect(try await store.prune(retention: retention, limit: 3) == ledger.prune(retention: retention, limit: 3, at: now), "step \(step): prune")
            }
            #expect(try await store.stats(queue: nil) == ledger.stats(queue: nil, at: now), "step \(step): stats")
            for state in JobState.allCases {
                let got = try await store.jobs(queue: nil, state: state, after: nil, limit: 1_000)
                #expect(got == ledger.jobs(queue: nil, state: state, after: nil, limit: 1_000, at: now), "step \(step): \(state) jobs")
            }
        }
        #expect(ids.count > 60)
    }
}
