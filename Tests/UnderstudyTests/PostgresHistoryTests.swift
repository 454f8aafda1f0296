import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudyStore
import UnderstudyStoreConformance
@testable import UnderstudyPostgres

/// The PostgreSQL store against what happens to servers: clock steps, a dropped schema, a failover to a replica
/// that lost commits, a migration from version 1, counters at their limit.
@Suite("PostgreSQL clocks and history", .serialized, .timeLimit(.minutes(3)))
struct PostgresHistoryTests {
    // MARK: The store clock

    @Test func serverClockStepsForward_aLiveLeaseIsNotExpiredEarly() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        let a = try member("a"), b = try member("b")
        let token = try #require(try await store.heartbeat(beat(a, .acquire, sent: 10)).outcome.grantedToken)

        try await TestPostgres.stepWallClock(url, by: .seconds(3_600))
        // A newcomer's first heartbeat is no evidence of time passing: it cannot move the store clock by the step.
        let newcomer = try await store.heartbeat(beat(b, .acquire, sent: 500))
        #expect(newcomer.outcome == .notGranted)
        #expect(newcomer.view.leases.first.map { $0.remaining > .milliseconds(2_900) } == true, "\(newcomer.view.leases)")
        // The active renews one second later by its own clock: the store clock moved about that, not an hour.
        try await TestPostgres.stepWallClock(url, by: .seconds(3_600))
        let renewal = try await store.heartbeat(beat(a, phase: .active, .renew(token), sent: 11))
        #expect(renewal.outcome == .renewed)
        #expect(renewal.view.leases.first?.remaining == .seconds(3))
        // And the newcomer's next heartbeat, one second after its first, moves it about one second.
        try await TestPostgres.stepWallClock(url, by: .seconds(3_600))
        let next = try await store.heartbeat(beat(b, .acquire, sent: 501))
        #expect(next.outcome == .notGranted)
        #expect(next.view.leases.first.map { $0.remaining > .milliseconds(1_900) } == true, "\(next.view.leases)")
    }

    @Test func serverClockStepsBack_aDeadMembersLeaseEndsAfterT() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        let a = try member("a"), b = try member("b")
        let first = try #require(try await store.heartbeat(beat(a, .acquire, sent: 10)).outcome.grantedToken)

        // The server's clock goes back an hour and the active dies. A standby heartbeats every second by its own
        // clock while the server's clock goes on from where it was set back to.
        try await TestPostgres.stepWallClock(url, by: .seconds(-3_600))
        _ = try await store.heartbeat(beat(b, .none, sent: 100))
        var grantedAfter: Int?
        for second in 1...5 {
            try await TestPostgres.stepWallClock(url, by: .seconds(1))
            if case .granted(let token) = try await store.heartbeat(beat(b, .acquire, sent: 100 + Double(second))).outcome {
                #expect(token > first)
                grantedAfter = second
                break
            }
        }
        // T = 3 s: the dead lease ended after 3 s of the standby's time (4 allows for the heartbeat that saw the step).
        #expect(grantedAfter.map { (3...4).contains($0) } == true, "granted after \(String(describing: grantedAfter)) s")
    }

    // MARK: History: tokens are never issued twice, nothing is granted within T of a lost record

    @Test func schemaDroppedWhileMembersRun_nothingIsGrantedForTAndNoTokenRepeats() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let clock = ManualClock()
        let store = try await PostgresStore(url: url, clock: clock.read)
        let a = try member("a"), b = try member("b")
        // A new schema may replace a dropped one: it grants nothing for T.
        #expect(try await store.heartbeat(heartbeat(a, .acquire)).outcome == .notGranted)
        clock.advance(by: .seconds(3))
        let first = try #require(try await store.heartbeat(heartbeat(a, .acquire)).outcome.grantedToken)

        try await withRawConnection(url) { raw in try await raw.execute("DROP SCHEMA \(try PostgresLocation(url).schema) CASCADE") }
        // The store creates the schema again; its group is new, so its record is complete only from now.
        // (The wait is T less the real time since the schema was created, a few milliseconds here.)
        #expect(try await store.heartbeat(heartbeat(b, .acquire)).outcome == .notGranted)
        #expect(try await store.heartbeat(heartbeat(a, phase: .active, .renew(first))).outcome == .lost)
        clock.advance(by: .milliseconds(2_500))
        #expect(try await store.heartbeat(heartbeat(b, .acquire)).outcome == .notGranted)
        clock.advance(by: .milliseconds(500))
        let second = try #require(try await store.heartbeat(heartbeat(b, .acquire)).outcome.grantedToken)
        #expect(second > first)
    }

    @Test func schemaDroppedUnderRunningMembers_theyGoOnWithLargerTokensAndNeverOverlap() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let configuration = try GroupConfiguration(
            name: GroupName("dropped"), heartbeatInterval: .milliseconds(100), activationInterval: .milliseconds(1_000)
        )
        let (events, sink) = AsyncStream<(String, MemberEvent)>.makeStream()
        var members: [Member] = [], runs: [Task<Void, any Error>] = [], listeners: [Task<Void, Never>] = []
        for id in ["a", "b"] {
            let member = try Member(group: configuration, id: MemberID(id), store: try await PostgresStore(url: url))
            members.append(member)
            runs.append(Task { try await member.run() })
            listeners.append(Task { for await event in member.events { sink.yield((id, event)) } })
        }
        // Activations and deactivations in the order the members reported them: never two actives at once.
        var active: Set<String> = [], tokens: [FencingToken] = [], dropped = false
        for await (id, event) in events {
            switch event {
            case .activate(let token):
                #expect(active.isEmpty, "\(id) activated with token \(token) while \(active) was active")
                #expect(tokens.allSatisfy { $0 < token }, "token \(token) after \(tokens)")
                active.insert(id)
                tokens.append(token)
            case .deactivate: active.remove(id)
            case .prepareToActivate, .prepareWithdrawn: break
            }
            if !dropped, !tokens.isEmpty {
                try await withRawConnection(url) { raw in try await raw.execute("DROP SCHEMA \(try PostgresLocation(url).schema) CASCADE") }
                dropped = true
            }
            if tokens.count >= 2, !active.isEmpty { break }
        }
        members.forEach { $0.leave() }
        for run in runs { try await run.value }
        listeners.forEach { $0.cancel() }
    }

    @Test func serverIdentityChanged_nothingIsGrantedForT() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let clock = ManualClock()
        let store = try await PostgresStore(url: url, clock: clock.read)
        try await TestPostgres.completeRecordForEver(url)
        let a = try member("a"), b = try member("b")
        let first = try #require(try await store.heartbeat(heartbeat(a, .acquire)).outcome.grantedToken)
        _ = try await store.heartbeat(heartbeat(a, .release(first)))
        // As after a failover or a restore: the rows were written by another server (or timeline).
        let schema = try PostgresLocation(url).schema
        try await withRawConnection(url) { raw in try await raw.execute("UPDATE \(schema).groups SET identity = 'another/server/0'") }
        #expect(try await store.heartbeat(heartbeat(b, .acquire)).outcome == .notGranted)
        clock.advance(by: .milliseconds(2_999))
        #expect(try await store.heartbeat(heartbeat(b, .acquire)).outcome == .notGranted)
        clock.advance(by: .milliseconds(1))
        #expect(try await store.heartbeat(heartbeat(b, .acquire)).outcome.grantedToken.map { $0 > first } == true)
    }

    @Test func recordThatLostAGrantSeenByAMember_grantsNothingForTAndTheCounterGoesOn() async throws {
        // No token floor here: the counter alone must not repeat a token.
        let url = try TestPostgres.freshSchemaURL()
        let clock = ManualClock()
        let store = try await PostgresStore(url: url, clock: clock.read)
        try await TestPostgres.withoutFloorOrHistory(url)
        let a = try member("a"), b = try member("b"), c = try member("c")
        #expect(try await store.heartbeat(heartbeat(a, .acquire)).outcome == .granted(FencingToken(rawValue: 1)))
        _ = try await store.heartbeat(heartbeat(a, .release(FencingToken(rawValue: 1))))
        #expect(try await store.heartbeat(heartbeat(b, .acquire)).outcome == .granted(FencingToken(rawValue: 2)))
        // Restored into the same schema from before b's grant: nothing about the server changed.
        let schema = try PostgresLocation(url).schema
        try await withRawConnection(url) { raw in
            try await raw.execute("""
                UPDATE \(schema).groups SET last_token = 1;
                UPDATE \(schema).leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL
                """)
        }
        // This store saw token 2, so the record lost commits: b may still believe it holds its lease.
        #expect(try await store.heartbeat(heartbeat(c, .acquire)).outcome == .notGranted)
        clock.advance(by: .seconds(3))
        #expect(try await store.heartbeat(heartbeat(c, .acquire)).outcome == .granted(FencingToken(rawValue: 3)))
    }

    @Test func failoverToAReplicaThatLostCommits_nothingIsGrantedForTAndNoTokenRepeats() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let schema = try PostgresLocation(url).schema
        let replicaURL = try TestPostgres.replicaURL(schema: schema)
        let store = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        let a = try member("a"), b = try member("b"), c = try member("c")
        let first = try #require(try await store.heartbeat(beat(a, .acquire, sent: 10)).outcome.grantedToken)
        _ = try await store.heartbeat(beat(a, .release(first), sent: 10.1))
        let replicated = "SELECT 1 / count(*) FROM \(schema).groups g WHERE g.last_token = \(first.rawValue)"
            + " AND NOT EXISTS (SELECT 1 FROM \(schema).leases l WHERE l.holder IS NOT NULL)"
        #expect(try await eventually { TestPostgres.psqlSucceeds(replicaURL, replicated) }, "the replica did not catch up")

        // The replica falls behind: the next grant reaches the primary only. Then the primary fails.
        try TestPostgres.controlReplica("stop")
        let lost = try #require(try await store.heartbeat(beat(b, .acquire, sent: 20)).outcome.grantedToken)
        #expect(lost > first)
        try await store.close()
        try TestPostgres.control("stop")
        defer { try? TestPostgres.control("start") }
        try TestPostgres.controlReplica("start")
        try TestPostgres.controlReplica("promote")

        // b believes it holds its lease for T; the promoted replica has never heard of it.
        let promoted = try await PostgresStore(url: replicaURL)
        #expect(try await promoted.heartbeat(beat(c, .acquire, sent: 30)).outcome == .notGranted)
        try await TestPostgres.stepWallClock(replicaURL, by: .seconds(1))
        #expect(try await promoted.heartbeat(beat(c, .acquire, sent: 31)).outcome == .notGranted)
        try await TestPostgres.stepWallClock(replicaURL, by: .seconds(1))
        #expect(try await promoted.heartbeat(beat(c, .acquire, sent: 32)).outcome == .notGranted)
        try await TestPostgres.stepWallClock(replicaURL, by: .milliseconds(1_100))
        let next = try #require(try await promoted.heartbeat(beat(c, .acquire, sent: 33.1)).outcome.grantedToken)
        #expect(next > lost)
        try await promoted.close()
    }

    @Test func schemaOfVersion1_migratesKeepingItsLeasesAndGrantingAtOnce() async throws {
        // Back to version 1's tables, leases kept.
        let (url, schema, token) = try await leaseInAnOlderSchema { schema in
            """
            ALTER TABLE \(schema).groups DROP COLUMN store_now, DROP COLUMN wall_at, DROP COLUMN complete_since, DROP COLUMN identity;
            ALTER TABLE \(schema).members DROP COLUMN sent_at;
            DELETE FROM \(schema).understudy_meta WHERE key = 'complete_wall';
            UPDATE \(schema).understudy_meta SET value = '1' WHERE key = 'schema_version'
            """
        }
        let a = try member("a")
        let migrated = try await PostgresStore(url: url)
        #expect(try await migrated.heartbeat(beat(a, phase: .active, .renew(token), sent: 11)).outcome == .renewed)
        // Version 1's record counts as complete: a new group grants at once.
        #expect(try await migrated.heartbeat(heartbeat(member("b"), group: "new", .acquire)).outcome.grantedToken != nil)
        // Members of version 1 still running during the upgrade call what they called, without send instants.
        let item = #"{"i": 0, "group": "group", "goal": 1, "ttl": 3000000, "member": "a", "incarnation": "a-1", "weight": 50, "#
            + #""host": "test-host", "pid": 42, "phase": "active", "intent": "renew", "token": \#(token.rawValue)}"#
        let call = "SELECT 1 / (\(schema).understudy_heartbeats('[\(item)]'::jsonb, NULL, true) -> 0 -> 'result' ->> 'outcome' = 'renewed')::int"
        #expect(TestPostgres.psqlSucceeds(url, call))
    }

    @Test func schemaWithoutPartitionedGroups_gainsThemInPlaceKeepingItsLeases() async throws {
        // Back to a version-2 schema of before partition leases.
        let (url, _, token) = try await leaseInAnOlderSchema { schema in
            """
            ALTER TABLE \(schema).groups DROP COLUMN partitioned;
            DROP FUNCTION \(schema).understudy_partition_heartbeat, \(schema).understudy_admit, \(schema).understudy_record_member
            """
        }
        let upgraded = try await PostgresStore(url: url)
        let renewal = try await upgraded.heartbeat(beat(member("a"), phase: .active, .renew(token), sent: 11))
        #expect(renewal.outcome == .renewed)
        #expect(!renewal.view.partitioned)
        let partitioned = try await upgraded.heartbeat(partitionHeartbeat(member("b"), [.acquire(5)]))
        #expect(partitioned.outcomes.count == 1 && partitioned.outcomes.first != .notGranted, "\(partitioned.outcomes)")
        #expect(partitioned.view.partitioned && partitioned.view.leases.map(\.slot) == [5])
        try await upgraded.close()
    }

    /// A fresh schema in which member "a" was granted the lease of group "group" (sent at 10 s on its clock), its
    /// store then closed and its tables taken back by the statements `rewind` gives for the schema's name to what
    /// an older Understudy wrote.
    private func leaseInAnOlderSchema(_ rewind: (String) -> String) async throws -> (url: String, schema: String, token: FencingToken) {
        let url = try TestPostgres.freshSchemaURL()
        let schema = try PostgresLocation(url).schema
        let original = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        let token = try #require(try await original.heartbeat(beat(member("a"), .acquire, sent: 10)).outcome.grantedToken)
        try await original.close()
        try await withRawConnection(url) { raw in try await raw.execute(rewind(schema)) }
        return (url, schema, token)
    }

    // MARK: Counters

    @Test func tokenCounterAtItsMaximum_grantsNothingAndFailsNoOtherHeartbeat() async throws {
        let (store, url) = try await ledgerLikeStore(batchWindow: .milliseconds(20))
        let a = try member("a"), b = try member("b")
        _ = try await store.heartbeat(heartbeat(a, group: "exhausted", .none))
        _ = try await store.heartbeat(heartbeat(a, group: "fine", .none))
        let schema = try PostgresLocation(url).schema
        try await withRawConnection(url) { raw in
            try await raw.execute("UPDATE \(schema).groups SET last_token = 9223372036854775807 WHERE name = 'exhausted'")
        }
        let exhausted = Task { try await store.heartbeat(heartbeat(b, group: "exhausted", .acquire)) }
        let fine = Task { try await store.heartbeat(heartbeat(b, group: "fine", .acquire)) }
        #expect(try await exhausted.value.outcome == .notGranted)
        #expect(try await fine.value.outcome == .granted(FencingToken(rawValue: 1)))
    }

    @Test func joinCounterAtItsMaximum_stillAdmitsMembers() async throws {
        let (store, url) = try await ledgerLikeStore()
        _ = try await store.heartbeat(heartbeat(member("a"), .none))
        let schema = try PostgresLocation(url).schema
        try await withRawConnection(url) { raw in
            try await raw.execute("UPDATE \(schema).groups SET next_join = 9223372036854775807")
        }
        _ = try await store.heartbeat(heartbeat(member("b"), .none))
        let view = try await store.heartbeat(heartbeat(member("c"), .none)).view
        #expect(view.members.map(\.joinSequence).sorted() == [1, .max, .max])
    }
}

/// A store on a fresh schema that applies the ledger as the other backends do (no token floor, no wait after a
/// new record), with a manual clock; and its URL.
func ledgerLikeStore(batchWindow: Duration = .zero) async throws -> (PostgresStore, String) {
    let url = try TestPostgres.freshSchemaURL()
    let store = try await PostgresStore(url: url, batchWindow: batchWindow, clock: ManualClock().read)
    try await TestPostgres.withoutFloorOrHistory(url)
    return (store, url)
}

/// A heartbeat sent at `sent` seconds on the member's own clock.
private func beat(_ member: MemberInfo, phase: MemberPhase = .standby, _ intent: Heartbeat.Intent, sent: Double) throws -> Heartbeat {
    var beat = try heartbeat(member, phase: phase, intent)
    beat.sentAt = Instant(nanoseconds: Int64(sent * 1e9))
    return beat
}

extension HeartbeatReply.Outcome {
    var grantedToken: FencingToken? {
        if case .granted(let token) = self { token } else { nil }
    }
}

extension TestPostgres {
    /// Makes the schema of `url` apply the ledger's rules as the other backends do: its server's clock reads long
    /// before any token (so the token floor never shows) and its record has been complete for ever (so a new group
    /// grants at once). Both rules have tests of their own.
    static func withoutFloorOrHistory(_ url: String) async throws {
        let schema = try PostgresLocation(url).schema
        try await withRawConnection(url) { raw in
            try await raw.execute("""
                INSERT INTO \(schema).understudy_meta (key, value) VALUES ('test_wall_offset', '-100000000000000000')
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
                UPDATE \(schema).understudy_meta SET value = '-4000000000000000000' WHERE key = 'complete_wall'
                """)
        }
    }

    /// Makes the schema of `url` one whose record has always been complete, as one created by version 1.
    static func completeRecordForEver(_ url: String) async throws {
        let schema = try PostgresLocation(url).schema
        try await withRawConnection(url) { raw in
            try await raw.execute("UPDATE \(schema).understudy_meta SET value = '0' WHERE key = 'complete_wall'")
        }
    }

    /// Steps the wall clock that the schema of `url` reads, as NTP or a VM resume steps a server's clock.
    static func stepWallClock(_ url: String, by step: Duration) async throws {
        let schema = try PostgresLocation(url).schema
        let micros = step.nanoseconds / 1_000
        try await withRawConnection(url) { raw in
            try await raw.execute("""
                INSERT INTO \(schema).understudy_meta (key, value) VALUES ('test_wall_offset', '\(micros)')
                    ON CONFLICT (key) DO UPDATE SET value = (understudy_meta.value::bigint + \(micros))::text
                """)
        }
    }

    /// The replica's URL (a streaming replica of the test server that `scripts/test` starts) with `schema`.
    static func replicaURL(schema: String) throws -> String {
        guard let url = ProcessInfo.processInfo.environment["UNDERSTUDY_TEST_POSTGRES_REPLICA_URL"], !url.isEmpty else {
            throw NotConfigured()
        }
        return url + (url.contains("?") ? "&" : "?") + "schema=\(schema)"
    }

    /// Runs the replica's control script (`start`, `stop`, `promote`).
    static func controlReplica(_ command: String) throws {
        guard let script = ProcessInfo.processInfo.environment["UNDERSTUDY_TEST_POSTGRES_REPLICA_CTL"] else { throw NotConfigured() }
        guard try runToCompletion(script, [command]) == 0 else { throw StoreError(.unavailable, "replica pg_ctl \(command) failed") }
    }

    /// Whether `sql` runs without error on the server of `url`.
    static func psqlSucceeds(_ url: String, _ sql: String) -> Bool {
        guard let location = try? PostgresLocation(url) else { return false }
        var environment = ProcessInfo.processInfo.environment
        environment["PGPASSWORD"] = location.password
        let arguments = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", location.host, "-p", String(location.port), "-U", location.user,
                         "-d", location.database ?? "postgres", "-c", sql]
        return (try? runToCompletion("psql", arguments, environment: environment)) == 0
    }
}
