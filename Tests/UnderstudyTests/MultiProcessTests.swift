import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySQLite
import UnderstudyStore

/// Three real member processes on one SQLite file, with real signals. Each logs when it starts and stops
/// acting, on the host's boot-time clock, and the end of the last lease it had confirmed.
@Suite("Multi-process failover", .serialized, .timeLimit(.minutes(3)))
struct MultiProcessTests {
    struct Activation {
        var token: UInt64
        var pid: Int32
        var start: Int64
        var stop: Int64?
        var validUntil: Int64?
        /// The end of the interval in which the member may have acted: it stopped, or its lease ran out.
        var end: Int64 { min(stop ?? .max, validUntil.map { $0 == 0 ? .max : $0 } ?? .max) }
    }

    static var fixture: URL {
        let tests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for directory in [tests, tests.deletingLastPathComponent(), tests.deletingLastPathComponent().deletingLastPathComponent()] {
            let candidate = directory.appendingPathComponent("understudy-fixture")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return URL(fileURLWithPath: ".build/debug/understudy-fixture")
    }

    static func activations(in log: String) throws -> [Activation] {
        guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { return [] }
        var byToken: [UInt64: Activation] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 4, let token = UInt64(fields[1]), let pid = Int32(fields[2]), let instant = Int64(fields[3]) else {
                Issue.record("malformed log line: \(line)")
                continue
            }
            switch fields[0] {
            case "start": byToken[token] = Activation(token: token, pid: pid, start: instant)
            case "stop":
                byToken[token]?.stop = instant
                byToken[token]?.validUntil = fields.count > 4 ? Int64(fields[4]) : nil
            default: Issue.record("unknown log line: \(line)")
            }
        }
        return byToken.values.sorted { $0.start < $1.start }
    }

    @Test(arguments: ["sqlite", "postgres"])
    func killPauseAndStop_theActive_aStandbyTakesOverWithoutOverlap(backend: String) async throws {
        let directory = try TemporaryDirectory()
        let database = backend == "sqlite" ? directory.file("group.db") : try TestPostgres.freshSchemaURL()
        let log = directory.file("activations.log")
        _ = FileManager.default.createFile(atPath: directory.file("members.err"), contents: nil)
        var processes: [Int32: Process] = [:]
        defer {
            for process in processes.values where process.isRunning {
                kill(process.processIdentifier, SIGCONT)
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
        func launch(_ id: String, weight: Int) throws {
            let process = Process()
            process.executableURL = Self.fixture
            process.arguments = [database, "failover", id, String(weight), log]
            // Not the test's own stderr: a pipe nobody drains would block the member's logging.
            process.standardError = FileHandle(forWritingAtPath: directory.file("members.err")) ?? FileHandle.nullDevice
            try process.run()
            processes[process.processIdentifier] = process
        }
        /// Waits for an activation newer than `token` and returns it.
        func activation(after token: UInt64) async throws -> Activation? {
            var found: Activation?
            _ = try await eventually {
                found = try Self.activations(in: log).first { $0.token > token }
                return found != nil
            }
            return found
        }
        try launch("m1", weight: 50)
        let first = try #require(try await activation(after: 0))
        try launch("m2", weight: 50)
        try launch("m3", weight: 50)

        // kill -9 the active: a standby takes over once the lease expires.
        kill(first.pid, SIGKILL)
        processes[first.pid]?.waitUntilExit()
        let firstDiedBy = MonotonicClock.now().nanoseconds
        let second = try #require(try await activation(after: first.token))
        #expect(second.pid != first.pid)

        // Freeze the new active past T, then let it go on: it must not have acted past its lease.
        try await freezeOutsideWriteLock(second.pid)
        let third = try #require(try await activation(after: second.token))
        #expect(third.pid != second.pid)
        kill(second.pid, SIGCONT)
        #expect(try await eventually { try Self.activations(in: log).first { $0.token == second.token }?.stop != nil })

        // Graceful stop of the current active: it stops, and another one starts.
        let current = try #require(try Self.activations(in: log).last)
        kill(current.pid, SIGTERM)
        let fourth = try #require(try await activation(after: current.token))
        #expect(fourth.pid != current.pid)
        processes[current.pid]?.waitUntilExit()
        #expect(processes[current.pid]?.terminationStatus == 0)

        if backend == "postgres" {
            // The server kills every member's session: they reconnect, and the group keeps or regains its goal.
            let before = try #require(try Self.activations(in: log).last)
            try await withRawConnection(database) { raw in
                try await raw.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database()"
                )
            }
            let store = try await PostgresStore(url: database)
            #expect(try await waitUntil { try await store.group(named: GroupName("failover")).map(GroupStatus.init)?.meetsGoal == true })
            // The server goes away past T: every active fences itself; once it is back, a member activates again.
            try TestPostgres.control("stop")
            #expect(try await eventually { try Self.activations(in: log).allSatisfy { $0.stop != nil || $0.token == first.token } })
            let latest = try Self.activations(in: log).map(\.token).max() ?? before.token
            try TestPostgres.control("start")
            let recovered = try await activation(after: latest)
            #expect(recovered != nil, "no activation after token \(latest) once the server was back:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")\n\((try? String(contentsOfFile: directory.file("members.err"), encoding: .utf8)) ?? "")")
            try await store.close()
        }

        var activations = try Self.activations(in: log)
        // The killed member logged no stop: it acted until it died, at the latest.
        if let index = activations.firstIndex(where: { $0.token == first.token }) { activations[index].stop = firstDiedBy }
        #expect(activations.map(\.token) == activations.map(\.token).sorted())
        #expect(Set(activations.map(\.token)).count == activations.count)
        for (earlier, later) in zip(activations, activations.dropFirst()) {
            #expect(earlier.end <= later.start, "token \(earlier.token) may have acted until \(earlier.end), token \(later.token) started at \(later.start)")
        }
        // The frozen member's lease ended before the next member started, and it stopped once thawed.
        let frozen = try #require(activations.first { $0.token == second.token })
        #expect(frozen.validUntil.map { $0 > 0 } == true)
        #expect(frozen.end <= third.start)
    }

    /// A member in a boot-time namespace of its own (`unshare --time --boottime`, as a CRIU restore makes one)
    /// judges leases on the same host clock as the others: it is not granted a slot another member holds.
    @Test func memberInAnotherBootTimeNamespace_isNotGrantedAHeldSlot() async throws {
        let directory = try TemporaryDirectory()
        let database = directory.file("group.db")
        let log = directory.file("activations.log")
        let errors = directory.file("members.err")
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        var processes: [Process] = []
        defer {
            for process in processes where process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
        func launch(_ id: String, prefix: [String] = []) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: prefix.first ?? Self.fixture.path)
            process.arguments = Array(prefix.dropFirst()) + (prefix.isEmpty ? [] : [Self.fixture.path]) + [database, "clocks", id, "50", log]
            process.standardError = FileHandle(forWritingAtPath: errors) ?? FileHandle.nullDevice
            try process.run()
            processes.append(process)
        }
        try launch("here")
        #expect(try await eventually { try !Self.activations(in: log).isEmpty })
        // Its boot-time clock reads a day more than the host's: every lease in the file looks expired to it.
        try launch("elsewhere", prefix: ["/usr/bin/unshare", "--time", "--boottime", "86400", "--fork", "--kill-child"])
        let reader = try SQLiteStore(path: database, readOnly: true)
        var heartbeats = 0
        var lastAge: Duration?
        #expect(try await waitUntil {
            guard let view = try await reader.group(named: GroupName("clocks")),
                  let age = view.members.first(where: { $0.info.id.rawValue == "elsewhere" })?.heartbeatAge else { return false }
            if let lastAge, age < lastAge { heartbeats += 1 }
            lastAge = age
            return heartbeats >= 5  // time enough to acquire, had it been allowed to
        })
        let view = try #require(try await reader.group(named: GroupName("clocks")))
        #expect(view.leases.map(\.holder.rawValue) == ["here"])
        #expect(try Self.activations(in: log).count == 1, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        try await reader.close()
    }
}
