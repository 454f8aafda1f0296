import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudyStore
import UnderstudyStoreConformance

@Suite("PostgreSQL store", .serialized, .timeLimit(.minutes(2)))
struct PostgresStoreTests {
    @Test func location_parsesEveryPartAndNeverShowsThePassword() throws {
        let location = try PostgresLocation("postgres://alice:s3cr%40t@db.example:6543/app?schema=jobs&sslmode=require")
        #expect(location.host == "db.example" && location.port == 6543 && location.user == "alice")
        #expect(location.password == "s3cr@t" && location.database == "app" && location.schema == "jobs")
        #expect(location.description == "postgres://alice:***@db.example:6543/app?schema=jobs")
    }

    @Test(arguments: [
        ("mysql://a:b@host/db", "expected postgres://"),
        ("postgres://a:b@/db", "has no host"),
        ("postgres://host/db", "has no user"),
        ("postgres://a:b@host/db?schema=Drop-Table", "invalid schema"),
        ("postgres://a:b@host/db?sslmode=maybe", "invalid sslmode"),
    ])
    func location_badURL_failsWithAClearMessageWithoutThePassword(url: String, message: String) throws {
        let error = #expect(throws: StoreError.self) { try PostgresLocation(url) }
        #expect(error?.kind == .invalidLocation)
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains(":b@") == false)
    }

    @Test func connecting_toAClosedPort_failsAsUnavailableWithoutThePassword() async throws {
        let error = await #expect(throws: StoreError.self) {
            try await PostgresStore(url: "postgres://someone:hunter2@127.0.0.1:1/postgres?sslmode=disable", timeout: .seconds(1))
        }
        #expect(error?.kind == .unavailable)
        #expect(error?.message.contains("hunter2") == false)
    }

    @Test func opening_aSchemaOfAnotherApplication_failsAsForeign() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let location = try PostgresLocation(url)
        try await withRawConnection(url) { store in
            try await store.execute("CREATE SCHEMA \(location.schema); CREATE TABLE \(location.schema).invoices (id int)")
        }
        let error = await #expect(throws: StoreError.self) { try await PostgresStore(url: url) }
        #expect(error?.kind == .foreign)
    }

    @Test func opening_aNewerSchema_failsAskingForAnUpgrade() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let location = try PostgresLocation(url)
        try await PostgresStore(url: url).close()
        try await withRawConnection(url) { store in
            try await store.execute("UPDATE \(location.schema).understudy_meta SET value = '7' WHERE key = 'schema_version'")
        }
        let error = await #expect(throws: StoreError.self) { try await PostgresStore(url: url) }
        #expect(error?.kind == .newerSchema)
        #expect(error?.message.contains("upgrade") == true)
    }

    @Test func heartbeat_onACorruptRow_failsThatHeartbeatOnly() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let location = try PostgresLocation(url)
        let store = try await PostgresStore(url: url)
        _ = try await store.heartbeat(heartbeat(member("a"), group: "broken", .none))
        _ = try await store.heartbeat(heartbeat(member("a"), group: "fine", .none))
        try await withRawConnection(url) { raw in
            try await raw.execute("UPDATE \(location.schema).members SET phase = 'dancing' WHERE group_name = 'broken'")
        }
        // Both heartbeats travel in one batch; only the one of the broken group fails.
        let b = try member("b")
        let broken = Task { try await store.heartbeat(heartbeat(b, group: "broken", .none)) }
        let fine = Task { try await store.heartbeat(heartbeat(b, group: "fine", .none)) }
        await #expect(throws: StoreError.self) { try await broken.value }
        #expect(try await fine.value.view.members.count == 2)
    }

    @Test func heartbeat_thatTheServerFailsOn_failsAloneAndTheRestOfItsBatchIsApplied() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let location = try PostgresLocation(url)
        let store = try await PostgresStore(url: url, batchWindow: .milliseconds(20))
        try await TestPostgres.withoutFloorOrHistory(url)
        _ = try await store.heartbeat(heartbeat(member("a"), group: "broken", .none))
        _ = try await store.heartbeat(heartbeat(member("a"), group: "fine", .none))
        // The next member to join "broken" makes the server raise an error.
        try await withRawConnection(url) { raw in
            try await raw.execute("""
                CREATE FUNCTION \(location.schema).refuse() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'value out of range'; END $$;
                CREATE TRIGGER refuse BEFORE INSERT ON \(location.schema).members
                    FOR EACH ROW WHEN (NEW.group_name = 'broken') EXECUTE FUNCTION \(location.schema).refuse()
                """)
        }
        let roundTripsBefore = store.roundTrips
        let b = try member("b")
        let broken = Task { try await store.heartbeat(heartbeat(b, group: "broken", .none)) }
        let fine = Task { try await store.heartbeat(heartbeat(b, group: "fine", .acquire)) }
        let error = await #expect(throws: StoreError.self) { try await broken.value }
        #expect(error?.message.contains("out of range") == true)
        #expect(try await fine.value.outcome == .granted(FencingToken(rawValue: 1)))
        // One batch: tried whole, rolled back, applied again heartbeat by heartbeat.
        #expect(store.roundTrips - roundTripsBefore == 2)
        let members = try await store.group(named: GroupName("fine"))?.members.map { $0.info.id.rawValue }
        #expect(members?.sorted() == ["a", "b"])
    }

    @Test func concurrentHeartbeats_ofManyGroups_shareRoundTrips() async throws {
        let store = try await PostgresStore(url: TestPostgres.freshSchemaURL(), batchWindow: .milliseconds(20))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                group.addTask { _ = try await store.heartbeat(heartbeat(member("m"), group: "g\(index)", .acquire)) }
            }
            try await group.waitForAll()
        }
        #expect(try await store.groups().count == 200)
        // 200 heartbeats, due together: a handful of round trips, not 200.
        #expect(store.roundTrips <= 20, "\(store.roundTrips) round trips")
    }

    @Test func manyHeartbeatsDueTogether_travelInBoundedBatchesAndAllSucceed() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url, batchWindow: .milliseconds(50))
        try await TestPostgres.withoutFloorOrHistory(url)
        let count = PostgresStore.maximumBatchSize * 2 + 1
        let granted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<count {
                group.addTask {
                    let reply = try await store.heartbeat(heartbeat(member("m"), group: "big\(index)", .acquire))
                    return reply.outcome == .granted(FencingToken(rawValue: 1))
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(granted == count)
        // At least three batches (none larger than the maximum), and far fewer than one per heartbeat.
        #expect((3...30).contains(store.roundTrips), "\(store.roundTrips) round trips")
    }

    @Test func heartbeat_whenTheServerFallsSilent_failsAtItsTimeoutThenSucceedsOnceTrafficFlows() async throws {
        let (store, proxy) = try await storeBehindStallingProxy()
        defer {
            proxy.close()
            Task { try await store.close() }
        }
        let beat = try heartbeat(member("a"), group: "silence", .none)
        #expect(await succeeds(store, beat), "the store did not answer before the stall")

        // No reply and no reset, as when a network path drops packets: the query waits on a reply that does not
        // come, and the heartbeat must fail at its timeout rather than wait with it.
        proxy.stall()
        let started = ContinuousClock.now
        await #expect(throws: StoreError.self) { try await store.heartbeat(beat) }
        #expect(ContinuousClock.now - started < .seconds(20), "a 1 s timeout took \(ContinuousClock.now - started)")

        proxy.resume()
        #expect(await succeeds(store, beat), "no heartbeat succeeded after traffic flowed again")
    }

    @Test func heartbeat_whenItsConnectionsGoSilentForGood_succeedsOnNewOnes() async throws {
        let (store, proxy) = try await storeBehindStallingProxy()
        defer {
            proxy.close()
            Task { try await store.close() }
        }
        let beat = try heartbeat(member("a"), group: "wedged", .none)
        #expect(await succeeds(store, beat), "the store did not answer before the connections went silent")

        // The connections open at each step go silent for good, as to a server host that died: no reply and
        // never closed. A query waiting on one holds it, so more of them than the pool's four connections would
        // use the pool up for good; it must be replaced instead.
        for _ in 0..<6 {
            proxy.wedgeOpenConnections()
            _ = try? await store.heartbeat(beat)
        }
        #expect(await succeeds(store, beat), "no heartbeat succeeded on fresh connections")
        #expect(store.poolReplacements >= 1)
    }

    @Test func serverDownAndBack_theActiveFencesItselfThenTheGoalIsMetAgain() async throws {
        let store = try await PostgresStore(url: TestPostgres.freshSchemaURL())
        let configuration = try GroupConfiguration(
            name: GroupName("outage"),
            heartbeatInterval: .milliseconds(100),
            activationInterval: .milliseconds(500)
        )
        let member = try Member(group: configuration, id: MemberID("only"), store: store)
        var events = member.events.makeAsyncIterator()
        let run = Task { try await member.run() }
        defer { try? TestPostgres.control("start") }
        let first = await events.next()
        #expect(first.map { if case .activate = $0 { true } else { false } } == true, "\(String(describing: first))")
        try TestPostgres.control("stop")
        #expect(await events.next() == .deactivate(.selfFenced))
        try TestPostgres.control("start")
        let recovered = await events.next()
        guard case .activate(let token) = recovered else {
            Issue.record("expected an activation after the server came back, got \(String(describing: recovered))")
            return
        }
        // The old lease may still have been valid when the server came back (the member re-acquires it) or
        // expired (a new grant): either way never a smaller token.
        if case .activate(let firstToken) = first { #expect(token >= firstToken) }
        member.leave()
        try await run.value
    }

    @Test func schemaOf63Characters_joinsAndAnnounces() async throws {
        let schema = "t_" + String(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16))
            + String(repeating: "x", count: 45)
        #expect(schema.count == 63)
        let base = try TestPostgres.baseURL
        let url = base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
        let (joiner, listener) = (try await PostgresStore(url: url), try await PostgresStore(url: url))
        var changes = try listener.changes(of: GroupName("long")).makeAsyncIterator()
        _ = try await joiner.heartbeat(heartbeat(member("a"), group: "long", .none))
        #expect(await changes.next() != nil)
        try await joiner.close()
        try await listener.close()
    }

    @Test func concurrentFirstStarts_underSerializableDefaultIsolation_allSucceed() async throws {
        let base = try TestPostgres.baseURL
        try await withRawConnection(base) { raw in
            try await raw.execute("""
                DO $$ BEGIN
                    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'understudy_strict') THEN
                        CREATE ROLE understudy_strict LOGIN PASSWORD 'strict';
                    END IF;
                END $$;
                GRANT CREATE ON DATABASE postgres TO understudy_strict;
                ALTER ROLE understudy_strict SET default_transaction_isolation = 'serializable';
                """)
        }
        let location = try PostgresLocation(try TestPostgres.freshSchemaURL())
        let url = "postgres://understudy_strict:strict@\(location.host):\(location.port)/postgres?sslmode=disable&schema=\(location.schema)"
        let failures = await withTaskGroup(of: String?.self) { group in
            for index in 0..<3 {
                group.addTask {
                    do {
                        let store = try await PostgresStore(url: url)
                        for _ in 0..<10 { _ = try await store.heartbeat(heartbeat(member("m\(index)"), group: "strict", goal: 2, .acquire)) }
                        try await store.close()
                        return nil
                    } catch {
                        return "\(error)"
                    }
                }
            }
            return await group.reduce(into: [String]()) { if let failure = $1 { $0.append(failure) } }
        }
        #expect(failures.isEmpty, "\(failures)")
    }
}

/// Whether `beat` succeeds within 20 tries, each bounded by the store's timeout.
private func succeeds(_ store: PostgresStore, _ beat: Heartbeat) async -> Bool {
    for _ in 0..<20 {
        if (try? await store.heartbeat(beat)) != nil { return true }
    }
    return false
}

/// A store on a fresh schema of the test server, reached through a ``StallingProxy``, with a 1 s timeout.
private func storeBehindStallingProxy() async throws -> (PostgresStore, StallingProxy) {
    let url = try TestPostgres.freshSchemaURL()
    let port = try PostgresLocation(url).port
    let proxy = try StallingProxy(targetPort: port)
    do {
        let store = try await PostgresStore(
            url: url.replacingOccurrences(of: ":\(port)/", with: ":\(proxy.port)/"), timeout: .seconds(1)
        )
        return (store, proxy)
    } catch {
        proxy.close()
        throw error
    }
}

/// Runs statements on the test server outside of Understudy, as an operator or another application would.
func withRawConnection(_ url: String, _ body: (RawPostgres) async throws -> Void) async throws {
    try await body(RawPostgres(url: url))
}

struct RawPostgres {
    let url: String

    /// Runs `sql` with psql.
    func execute(_ sql: String) async throws {
        let location = try PostgresLocation(url)
        var environment = ProcessInfo.processInfo.environment
        environment["PGPASSWORD"] = location.password
        let status = try runToCompletion(
            "psql",
            ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", location.host, "-p", String(location.port), "-U", location.user,
             "-d", location.database ?? "postgres", "-c", sql],
            environment: environment
        )
        guard status == 0 else { throw StoreError(.unavailable, "psql failed: \(sql)") }
    }
}
