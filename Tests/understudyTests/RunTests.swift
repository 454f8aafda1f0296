import Foundation
import Testing

/// Real `understudy run` processes on a real store (a SQLite file, the test PostgreSQL server), with real signals.
@Suite(.serialized)
struct RunTests {
    /// Three members; the active one is killed with SIGKILL, then frozen with SIGSTOP past T, then sent SIGTERM.
    @Test(arguments: ["sqlite", "postgres"])
    func test_failover_killStopTerm_oneChildAtATime_tokensIncrease(backend: String) async throws {
        let scratch = try Scratch()
        let script = try scratch.childScript()
        let store = backend == "sqlite" ? scratch.file("store.db") : try Self.freshPostgresSchemaURL()
        var members: [String: Launched] = [:]
        func start(_ id: String) throws {
            members[id] = try Launched(
                ["run", "--group", "g", "--store", store, "--id", id, "--stop-grace", "2s", "--", script],
                in: scratch, name: id
            )
        }
        for id in ["a", "b", "c"] { try start(id) }
        func starts() -> [LogEntry] { entries(scratch.lines("log")).filter { $0.kind == "start" } }

        // SIGKILL of the active supervisor: its child dies with it (orphan guarantee), a standby takes over.
        #expect(try await eventually { starts().count == 1 })
        let first = try #require(starts().last)
        let firstID = try #require(first.member)
        let firstMember = try #require(members[firstID])
        #expect(isAlive(first.pid))
        firstMember.signal(SIGKILL)
        #expect(try await eventually(timeout: .seconds(2)) { !isAlive(first.pid) }, "the child outlived its supervisor")
        #expect(try await eventually { starts().count == 2 })

        // SIGSTOP of the active supervisor past T: the watchdog kills the child, a standby takes over.
        let second = try #require(starts().last)
        let secondID = try #require(second.member)
        let secondMember = try #require(members[secondID])
        // Frozen outside a SQLite write transaction: frozen inside one, it would stop every member of the store
        // (a known limit of SQLite's file lock), which is not what this test is about.
        try await secondMember.freeze()
        #expect(try await eventually(timeout: .seconds(3)) { !isAlive(second.pid) }, "a frozen supervisor's child kept running")
        #expect(try await eventually { starts().count == 3 })
        try await Task.sleep(for: .milliseconds(300))
        secondMember.signal(SIGCONT)

        // SIGTERM of the active supervisor: the child gets SIGTERM, the slot is released, the supervisor exits 0.
        let third = try #require(starts().last)
        let thirdID = try #require(third.member)
        let thirdMember = try #require(members[thirdID])
        thirdMember.signal(SIGTERM)
        #expect(try await thirdMember.exitStatus() == 0)
        #expect(scratch.lines("log").contains("stop \(third.token) \(third.pid)"))
        #expect(try await eventually { starts().count == 4 })

        for member in members.values where member.process.isRunning { member.signal(SIGTERM) }
        for member in members.values { #expect(try await member.exitStatus() != nil) }

        let log = scratch.lines("log")
        #expect(!log.contains { $0.hasPrefix("OVERLAP") }, "two children ran at once: \(log)")
        let tokens = starts().map(\.token)
        #expect(zip(tokens, tokens.dropFirst()).allSatisfy { $0 < $1 }, "tokens not strictly increasing: \(tokens)")
        #expect(starts().allSatisfy { $0.member != nil } && log.allSatisfy { !$0.hasPrefix("start") || $0.hasSuffix(" g") })
        for entry in starts() { #expect(!isAlive(entry.pid)) }
        let lines = members.values.map(\.stderr).joined()
        #expect(lines.contains("activated group=g member="))
        #expect(lines.contains("reason=shutdown"))
    }

    /// A SIGTERM that arrives while the command is still being started is not lost: the command stops at once,
    /// not when `--stop-grace` runs out.
    @Test func test_sigtermRightAfterActivation_stopsTheCommandWithoutWaitingForTheGrace() async throws {
        for round in 0..<3 {
            let scratch = try Scratch()
            let member = try Launched(
                ["run", "--group", "early", "--store", scratch.file("store.db"), "--stop-grace", "30s", "--", "/bin/sleep", "300"],
                in: scratch, name: "early\(round)"
            )
            #expect(try await eventually { member.stderr.contains("activated") })
            member.signal(SIGTERM)
            // Within the grace, SIGTERM must be what stopped the command; 10 s is far below the 30 s grace.
            #expect(try await member.exitStatus(within: .seconds(10)) == 0, "round \(round): \(member.stderr)")
        }
    }

    /// Several processes that create the same new store at the same moment all start (switching a new file to
    /// WAL takes a lock SQLite's busy handler does not wait for).
    @Test func test_manyProcessesCreatingOneStore_allStart() async throws {
        for round in 0..<5 {
            let scratch = try Scratch()
            let store = scratch.file("new.db")
            // One member that writes its heartbeats all along, while the others open the store.
            let busy = try Launched(["run", "--group", "busy", "--store", store, "--heartbeat", "20ms", "--activation", "100ms", "--", "sleep", "30"], in: scratch, name: "busy")
            defer { busy.signal(SIGTERM) }
            let runs = try await withThrowingTaskGroup(of: (status: Int32, stdout: String, stderr: String).self) { group in
                for index in 0..<8 {
                    group.addTask {
                        // A long lease: what is tested is that each opens the store, not how fast the store answers 9 writers.
                        try await understudy(["run", "--group", "g\(index)", "--store", store, "--activation", "2s", "--once", "--", "true"], in: scratch)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let failed = runs.filter { $0.status != 0 }.map { "status \($0.status): \($0.stderr)" }
            #expect(failed.isEmpty, "round \(round): \(failed); the busy member: \(busy.stderr)")
        }
    }

    /// `--once` runs the command once, with hooks around it, and exits with its status.
    @Test func test_once_runsTheCommandOnce_andExitsWithItsStatus() async throws {
        let scratch = try Scratch()
        let log = scratch.file("log")
        let result = try await understudy(
            [
                "run", "--group", "cron", "--store", scratch.file("store.db"), "--once", "--log-format", "json",
                "--on-activate", "echo activate $UNDERSTUDY_FENCING_TOKEN >> \(log)",
                "--on-deactivate", "echo deactivate $UNDERSTUDY_REASON >> \(log)",
                "--", "/bin/sh", "-c", "echo ran $UNDERSTUDY_FENCING_TOKEN >> \(log); exit 7",
            ],
            in: scratch
        )
        #expect(result.status == 7)
        let lines = scratch.lines("log")
        let token = try #require(lines.first.flatMap { $0.split(separator: " ").last }.map(String.init))
        #expect(lines == ["activate \(token)", "ran \(token)", "deactivate resigned"])
        #expect((UInt64(token) ?? 0) > 1_700_000_000_000_000)  // a new store's first token is its wall clock in µs
        let json = result.stderr.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(json.contains { $0["message"] as? String == "activated" && $0["token"] as? String == token && $0["group"] as? String == "cron" })
    }

    /// A command that exits while active gives the slot up and competes again after the backoff.
    @Test func test_childExit_releasesTheSlot_andRestartsAfterBackoff() async throws {
        let scratch = try Scratch()
        let log = scratch.file("log")
        let member = try Launched(
            [
                "run", "--group", "g", "--store", scratch.file("store.db"), "--restart-backoff", "200ms",
                "--", "/bin/sh", "-c", "echo start $UNDERSTUDY_FENCING_TOKEN >> \(log); exit 1",
            ],
            in: scratch, name: "member"
        )
        #expect(try await eventually { scratch.lines("log").count >= 3 })
        member.signal(SIGTERM)
        #expect(try await member.exitStatus() == 0)
        let tokens = scratch.lines("log").prefix(3).compactMap { $0.split(separator: " ").last.flatMap { UInt64($0) } }
        #expect(tokens.count == 3 && tokens == tokens.sorted() && Set(tokens).count == 3, "\(scratch.lines("log"))")
        #expect(member.stderr.contains("reason=resigned"))
    }

    /// A second SIGINT exits at once with 130, and the watchdog still kills the child.
    @Test func test_secondInterrupt_exitsAtOnce() async throws {
        let scratch = try Scratch()
        let log = scratch.file("log")
        let member = try Launched(
            [
                "run", "--group", "g", "--store", scratch.file("store.db"), "--stop-grace", "30s",
                "--", "/bin/sh", "-c", "trap '' TERM; echo start 1 $$ >> \(log); while :; do sleep 0.05; done",
            ],
            in: scratch, name: "member"
        )
        #expect(try await eventually { !scratch.lines("log").isEmpty })
        let child = try #require(entries(scratch.lines("log")).first).pid
        member.signal(SIGINT)
        #expect(try await eventually { member.stderr.contains("shutting down") })
        member.signal(SIGINT)
        #expect(try await member.exitStatus(within: .seconds(5)) == 130)
        #expect(try await eventually(timeout: .seconds(2)) { !isAlive(child) })
    }

    /// The throwaway PostgreSQL server of `scripts/test`, with a schema no other test uses.
    static func freshPostgresSchemaURL() throws -> String {
        guard let base = ProcessInfo.processInfo.environment["UNDERSTUDY_TEST_POSTGRES_URL"], !base.isEmpty else {
            throw PostgresNotConfigured()
        }
        let schema = "cli_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        return base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
    }

    struct PostgresNotConfigured: Error, CustomStringConvertible {
        var description: String { "UNDERSTUDY_TEST_POSTGRES_URL is not set: run the suite with ./scripts/test, which starts PostgreSQL" }
    }
}
