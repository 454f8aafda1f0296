import Foundation
import Testing

/// Real `understudy queue` processes on real stores, with real signals: jobs pushed from the shell, worked off by
/// commands under the watchdog.
@Suite("queue commands", .serialized, .timeLimit(.minutes(4)))
struct QueueCommandTests {
    /// A job command that logs `start ID TOKEN ATTEMPT PAYLOAD` and `end ID TOKEN PAYLOAD`, writes `OVERLAP ID` if
    /// another run of its job still lives (one flock per job), and fails with status 3 when its payload starts
    /// with `fail`.
    static func jobScript(in scratch: Scratch, sleep: String = "0.02") throws -> String {
        let script = scratch.file("job.sh")
        try FileManager.default.createDirectory(atPath: scratch.file("locks"), withIntermediateDirectories: true)
        try """
            #!/bin/sh
            payload=$(cat)
            exec 9>"\(scratch.file("locks"))/$UNDERSTUDY_JOB_ID"
            flock -n 9 || echo "OVERLAP $UNDERSTUDY_JOB_ID" >> "\(scratch.file("log"))"
            echo "start $UNDERSTUDY_JOB_ID $UNDERSTUDY_FENCING_TOKEN $UNDERSTUDY_JOB_ATTEMPT $payload $UNDERSTUDY_QUEUE" >> "\(scratch.file("log"))"
            case "$payload" in fail*) exit 3;; esac
            sleep \(sleep)
            echo "end $UNDERSTUDY_JOB_ID $UNDERSTUDY_FENCING_TOKEN $payload" >> "\(scratch.file("log"))"

            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        return script
    }

    /// `understudy queue push … --lines` with `lines` on standard input, through the shell; the ids it printed.
    static func push(_ lines: [String], store: String, extra: [String] = [], in scratch: Scratch) async throws -> [String] {
        let input = scratch.file("input-\(UInt32.random(in: 0...UInt32.max))")
        try (lines.joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let command = ([understudyPath, "queue", "push", "--store", store, "--queue", "q", "--lines"] + extra)
            .map { "'\($0)'" }.joined(separator: " ") + " < '\(input)'"
        let shell = try Launched(["/bin/sh", "-c", command], in: scratch, name: "push-\(UInt32.random(in: 0...UInt32.max))", executable: true)
        #expect(try await shell.exitStatus(within: .seconds(30)) == 0, "\(shell.stderr)")
        return shell.stdout.split(separator: "\n").map(String.init)
    }

    static func stats(_ store: String, in scratch: Scratch) async throws -> [String: Int] {
        let result = try await understudy(["queue", "stats", "--store", store, "--queue", "q", "--json"], in: scratch)
        guard result.status == 0,
              let document = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
              let queue = (document["queues"] as? [[String: Any]])?.first
        else { return [:] }
        return queue.compactMapValues { $0 as? Int }
    }

    static func worker(_ name: String, store: String, script: String, in scratch: Scratch) throws -> Launched {
        try Launched(
            ["queue", "work", "--store", store, "--queue", "q", "--id", name, "--concurrency", "4", "--claim-lease", "3s",
             "--renew", "1s", "--poll", "200ms", "--stop-grace", "1s", "--", script],
            in: scratch, name: "\(name)-\(UInt32.random(in: 0...UInt32.max))"
        )
    }

    @Test func pushWorkStatsListRedriveCancel_onSQLite() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let script = try Self.jobScript(in: scratch)
        let single = try await understudy(["queue", "push", "--store", store, "--queue", "q", "--max-attempts", "2", "fail-once"], in: scratch)
        #expect(single.status == 0, "\(single.stderr)")
        let ids = try await Self.push(["a", "b", "c"], store: store, in: scratch)
        #expect(ids.count == 3)
        let keyed = try await understudy(["queue", "push", "--store", store, "--queue", "q", "--idempotency-key", "k", "d"], in: scratch)
        let again = try await understudy(["queue", "push", "--store", store, "--queue", "q", "--idempotency-key", "k", "e"], in: scratch)
        #expect(keyed.stdout == again.stdout && !keyed.stdout.isEmpty)
        let cancelled = try await understudy(["queue", "push", "--store", store, "--queue", "q", "--delay", "1h", "never"], in: scratch)
        let cancelID = cancelled.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await understudy(["queue", "cancel", "--store", store, cancelID], in: scratch).stdout == "\(cancelID) cancelled\n")

        let worker = try Self.worker("w", store: store, script: script, in: scratch)
        #expect(try await eventually(timeout: .seconds(30)) {
            let lines = scratch.lines("log")
            return lines.filter { $0.hasPrefix("end") }.count == 4 && lines.filter { $0.contains("fail-once") }.count == 2
        })
        #expect(try await eventually(timeout: .seconds(10)) { true })
        let stats = try await Self.stats(store, in: scratch)
        #expect(stats["done"] == 4 && stats["dead"] == 1 && stats["cancelled"] == 1, "\(stats)")
        let dead = try await understudy(["queue", "list", "--store", store, "--state", "dead", "--json"], in: scratch)
        #expect(dead.stdout.contains("the command exited with status 3"), "\(dead)")
        #expect(scratch.lines("log").contains { $0.hasPrefix("start") && $0.hasSuffix(" a q") })

        // Redrive: the dead job runs again, from its first attempt.
        let redriven = try await understudy(["queue", "redrive", "--store", store, "--queue", "q"], in: scratch)
        #expect(redriven.stdout == "1\n")
        #expect(try await eventually(timeout: .seconds(30)) { scratch.lines("log").filter { $0.contains("fail-once") }.count == 4 })
        worker.signal(SIGTERM)
        #expect(try await worker.exitStatus() == 0, "\(worker.stderr)")
        #expect(!scratch.read("log").contains("OVERLAP"))
    }

    /// Two workers enqueue `@every 1s`; one is killed with SIGKILL (if it was the enqueuer, the other takes over
    /// within T and catches up). Every second in between has exactly one job.
    @Test func periodicJobs_onePerTick_acrossAFailover() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let script = try Self.jobScript(in: scratch, sleep: "0")
        func worker(_ name: String) throws -> Launched {
            try Launched(
                ["queue", "work", "--store", store, "--queue", "q", "--id", name, "--claim-lease", "3s", "--renew", "1s",
                 "--poll", "200ms", "--periodic", "tick=@every 1s", "--", script],
                in: scratch, name: name
            )
        }
        let (a, b) = (try worker("a"), try worker("b"))
        func runs() -> [String] { scratch.lines("log").filter { $0.hasPrefix("start") && $0.contains(" tick ") } }
        #expect(try await eventually(timeout: .seconds(30)) { runs().count >= 4 })
        a.signal(SIGKILL)
        let before = runs().count
        #expect(try await eventually(timeout: .seconds(30)) { runs().count >= before + 8 })
        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0, "\(b.stderr)")
        let done = try await understudy(["queue", "list", "--store", store, "--state", "done", "--limit", "1000", "--json"], in: scratch)
        let ticks = done.stdout.split(separator: "\n").compactMap { line -> Int64? in
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return (object?["idempotencyKey"] as? String).flatMap { Int64($0.split(separator: ":").last ?? "") }
        }.sorted()
        // About 12 s of ticks; the last ones may still be pending when the worker drained.
        #expect(ticks.count >= 8, "\(ticks)")
        // One job per second, none missing in between, none twice.
        #expect(ticks == Array(ticks.first!...ticks.last!), "\(ticks)")
    }

    @Test func badInput_getsOneLineAndItsOwnExitStatus() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let cases: [([String], Int32, String)] = [
            (["queue", "push", "--store", store, "--queue", "no spaces", "x"], 73, "invalid queue name"),
            (["queue", "push", "--store", store, "--queue", "q", "--priority", "5000", "x"], 73, "invalid priority"),
            (["queue", "push", "--store", store, "--queue", "q", "--ordering-key", String(repeating: "k", count: 300), "x"], 73, "invalid ordering key"),
            (["queue", "push", "--store", store, "--queue", "q", "--delay", "soon", "x"], 65, "--delay"),
            (["queue", "push", "--store", store, "--queue", "q", "--max-attempts", "0", "x"], 73, "invalid max attempts"),
            (["queue", "work", "--store", store, "--queue", "q", "--claim-lease", "1s", "--renew", "1s", "--", "true"], 66, "activation interval"),
            (["queue", "work", "--store", store, "--queue", "q"], 64, "missing command"),
            (["queue", "work", "--store", store, "--queue", "q", "--", "/nonexistent/cmd"], 127, "command not found"),
            (["queue", "cancel", "--store", store, "424242"], 74, "no job 424242"),
            (["queue", "work", "--store", store, "--queue", "q", "--periodic", "x=* * *", "--", "true"], 73, "invalid schedule"),
            (["queue", "work", "--store", store, "--queue", "q", "--periodic", "nameless", "--", "true"], 73, "NAME=SCHEDULE"),
        ]
        for (arguments, status, message) in cases {
            let result = try await understudy(arguments, in: scratch)
            #expect(result.status == status, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(message) && result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
        }
        let big = scratch.file("big")
        try Data(count: (1 << 20) + 1).write(to: URL(fileURLWithPath: big))
        let shell = try Launched(["/bin/sh", "-c", "'\(understudyPath)' queue push --store '\(store)' --queue q < '\(big)'"], in: scratch, name: "big", executable: true)
        #expect(try await shell.exitStatus() == 73)
        #expect(shell.stderr.contains("larger than the limit"))
    }

    /// Four workers on several hundred jobs, killed with SIGKILL and restarted at random, one frozen past its claim
    /// lease; on PostgreSQL the server restarts once. Every job is recorded done exactly once, no two runs of a job
    /// overlap, each ordering key keeps its order, the job that always fails is dead-lettered after its attempts.
    @Test(arguments: ["sqlite", "postgres"])
    func chaos_everyJobDoneOnce_noOverlap_orderKept(backend: String) async throws {
        let scratch = try Scratch()
        let store = backend == "sqlite" ? scratch.file("store.db") : try RunTests.freshPostgresSchemaURL()
        let script = try Self.jobScript(in: scratch, sleep: "0.03")
        let plain = (1...300).map { "p\($0)" }
        _ = try await Self.push(plain, store: store, in: scratch)
        let keys = ["ka", "kb", "kc"]
        for key in keys { _ = try await Self.push((1...10).map { "\(key)-\($0)" }, store: store, extra: ["--ordering-key", key], in: scratch) }
        _ = try await Self.push(["fail-always"], store: store, extra: ["--max-attempts", "3"], in: scratch)
        let total = plain.count + keys.count * 10 + 1

        var workers = try (0..<4).map { try Self.worker("w\($0)", store: store, script: script, in: scratch) }
        func ended() -> Int { Set(scratch.lines("log").filter { $0.hasPrefix("end") }.map { $0.split(separator: " ")[1] }).count }
        for round in 0..<4 {
            #expect(try await eventually(timeout: .seconds(60)) { ended() >= (round + 1) * 50 }, "round \(round): \(ended()) ended")
            let victim = Int.random(in: 0..<workers.count)
            workers[victim].signal(SIGKILL)
            _ = try await workers[victim].exitStatus()
            workers[victim] = try Self.worker("w\(victim)", store: store, script: script, in: scratch)
        }
        // One worker frozen past its claim lease: the watchdog kills its commands, the jobs run elsewhere.
        try await workers[0].freeze()
        try await Task.sleep(for: .seconds(4))
        workers[0].signal(SIGCONT)
        if backend == "postgres" { try await runPostgresControl("restart", in: scratch) }
        #expect(try await eventually(timeout: .seconds(120)) {
            ended() == total - 1 && scratch.lines("log").filter { $0.contains("fail-always") }.count == 3
        }, "\(ended()) of \(total - 1) ended")
        var stats: [String: Int] = [:]
        #expect(try await eventuallyAsync(timeout: .seconds(30)) {
            stats = try await Self.stats(store, in: scratch)
            return stats["done"] == total - 1 && stats["dead"] == 1
        }, "\(stats)")
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { #expect(try await worker.exitStatus(within: .seconds(20)) == 0, "\(worker.stderr)") }

        let log = scratch.lines("log")
        #expect(!log.contains { $0.hasPrefix("OVERLAP") }, "two runs of one job overlapped")
        let starts = log.filter { $0.hasPrefix("start") }.map { $0.split(separator: " ").map(String.init) }
        var lastToken: [String: UInt64] = [:]
        for fields in starts {
            let (job, token) = (fields[1], UInt64(fields[2]) ?? 0)
            #expect(token > lastToken[job, default: 0], "job \(job): token \(token) after \(lastToken[job, default: 0])")
            lastToken[job] = token
        }
        for key in keys {
            for index in 1..<10 {
                let lastEnd = log.lastIndex { $0.hasPrefix("end") && $0.hasSuffix(" \(key)-\(index)") }
                let nextStart = log.firstIndex { $0.hasPrefix("start") && $0.contains(" \(key)-\(index + 1) ") }
                #expect(lastEnd != nil && nextStart != nil && lastEnd! < nextStart!, "\(key)-\(index + 1) started before \(key)-\(index) ended")
            }
        }
    }
}

/// Polls an async `condition` every 50 ms until it holds or `timeout` passes.
func eventuallyAsync(timeout: Duration, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

/// Runs the control script of the test PostgreSQL server (`restart`, …) to completion.
func runPostgresControl(_ command: String, in scratch: Scratch) async throws {
    guard let script = ProcessInfo.processInfo.environment["UNDERSTUDY_TEST_POSTGRES_CTL"] else { throw RunTests.PostgresNotConfigured() }
    let control = try Launched([script, command], in: scratch, name: "pg-\(command)", executable: true)
    #expect(try await control.exitStatus(within: .seconds(60)) == 0, "\(control.stderr)")
}
