import ArgumentParser
import ExampleFeed
import Foundation
import Synchronization
import UnderstudyCore
import UnderstudyPostgres

/// The whole example in one command, and the chaos test's workload: a generator, a group of publishers and the
/// checker as separate processes; the active publisher is killed (SIGKILL), frozen past T (SIGSTOP, then SIGCONT)
/// and stopped (SIGTERM) in turn, and the killed and stopped ones are started again.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a generator, a publisher group and the checker; fail the active over and over; check the sink.",
        discussion: """
            Prints one failover=… line per failover and a final result=ok or result=failed line; exits 1 when \
            the sink's stream is not whole or a re-send was not the unconfirmed window.
            """
    )

    @Option(help: "The PostgreSQL server (feed, store and sink, in schemas of the run's own).") var postgres: String
    @Option(help: "How many failovers.") var failovers = 9
    @Option(help: "Feed messages per second.") var rate = 1_000
    @Option(help: "Members of the publisher group.") var members = 3
    @Option(help: "Heartbeat interval I.", transform: duration) var heartbeat = Duration.milliseconds(200)
    @Option(help: "Activation interval T.", transform: duration) var activation = Duration.milliseconds(800)
    @Option(help: "How long the group runs undisturbed after each failover.", transform: duration) var settle = Duration.milliseconds(500)
    @Option(help: "Where the processes' logs go (default: a new temporary directory).") var logs: String?

    func run() async throws {
        let run = String(UUID().uuidString.lowercased().prefix(8))
        let logs = logs ?? NSTemporaryDirectory() + "feed-publisher-" + run
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let shared = ["--postgres", postgres]
        let names = ["--store-schema", "feed_store_\(run)", "--sink-schema", "feed_sink_\(run)", "--channel", "feed_\(run)", "--group", "feed-\(run)"]
        let lines = Lines()
        report(["run": run, "logs": logs])

        var publishers: [Child] = []
        var incarnations = Array(repeating: 0, count: members)
        func start(_ slot: Int) throws -> Child {
            incarnations[slot] += 1
            let id = "p\(slot)-\(incarnations[slot])"
            return try Child(
                ["publish"] + shared + names + ["--id", id, "--heartbeat", heartbeat.formatted, "--activation", activation.formatted],
                name: id, logs: logs, lines: lines
            )
        }
        for slot in 0..<members { publishers.append(try start(slot)) }
        defer {
            for child in publishers { child.signal(SIGCONT); child.signal(SIGKILL) }
        }
        let wait = activation * 10
        // The feed starts once every member listens, so each sees it from message 1.
        var listeningAfter = 0
        for _ in 0..<members {
            guard let line = await lines.next(after: listeningAfter, within: wait, where: { $0.fields["event"] == "listening" }) else {
                throw ValidationError("the publishers did not start listening within \(wait.formatted); see \(logs)")
            }
            listeningAfter = line.index + 1
        }
        let generator = try Child(["generate"] + shared + ["--channel", "feed_\(run)", "--rate", "\(rate)"], name: "generator", logs: logs, lines: lines)
        defer { generator.signal(SIGKILL) }

        var failures: [String] = []
        guard var active = await lines.next(after: 0, within: wait, where: { $0.fields["event"] == "active" }) else {
            throw ValidationError("no publisher activated within \(wait.formatted); see \(logs)")
        }
        var firstToken = UInt64(active.fields["token"] ?? "") ?? 0
        try await Task.sleep(for: settle)
        var resent = 0
        for number in 1...max(1, failovers) {
            guard let slot = publishers.firstIndex(where: { $0.name == active.source }) else { break }
            let kind = ["kill", "stop", "term"][(number - 1) % 3]
            let victim = publishers[slot]
            let oldToken = UInt64(active.fields["token"] ?? "") ?? 0
            let mark = await lines.count
            let began = ContinuousClock.now
            switch kind {
            case "kill": victim.signal(SIGKILL)
            case "stop": victim.signal(SIGSTOP)
            default: victim.signal(SIGTERM)
            }
            guard let next = await lines.next(after: mark, within: wait, where: {
                $0.fields["event"] == "active" && (UInt64($0.fields["token"] ?? "") ?? 0) > oldToken
            }) else {
                failures.append("failover \(number) (\(kind)): no new active within \(wait.formatted)")
                break
            }
            let took = ContinuousClock.now - began
            let (from, count, lastInput) = (Int64(next.fields["from"] ?? "") ?? 0, Int(next.fields["count"] ?? "") ?? -1, Int64(next.fields["last_input"] ?? "") ?? 0)
            // The re-send is the whole unconfirmed window: every message after the confirmed position it had received.
            let window = Int(max(0, lastInput - from + 1))
            if count != window { failures.append("failover \(number): re-sent \(count), but the unconfirmed window was \(window)") }
            resent += count
            report([
                "failover": "\(number)", "kind": kind, "from_member": active.source, "to_member": next.source,
                "old_token": "\(oldToken)", "new_token": next.fields["token"] ?? "", "confirmed": "\(from - 1)",
                "resent": "\(count)", "window": "\(window)", "took": took.formatted,
            ])
            switch kind {
            case "kill":
                publishers[slot] = try start(slot)
            case "stop":
                // Resumed past T, the old active finds its lease gone: it steps down (or is fenced first).
                let resumed = await lines.count
                victim.signal(SIGCONT)
                if await lines.next(after: resumed, within: wait, where: { $0.source == victim.name && ["deactivated", "fenced"].contains($0.fields["event"] ?? "") }) == nil {
                    failures.append("failover \(number): the resumed old active did not step down")
                }
            default:
                _ = await victim.exit(within: wait)
                publishers[slot] = try start(slot)
            }
            active = next
            firstToken = min(firstToken, oldToken)
            try await Task.sleep(for: settle)
        }

        generator.signal(SIGTERM)
        guard let final = await lines.next(after: 0, within: wait, where: { $0.source == "generator" && $0.fields["final"] == "true" }),
              let sent = Int64(final.fields["sent"] ?? "")
        else { throw ValidationError("the generator did not report its last message; see \(logs)") }
        let sink = try await PostgresContinuitySink(url: schemaURL(postgres, "feed_sink_\(run)"), stream: "feed-\(run)")
        defer { sink.close() }
        let verdict = try await Verdict(of: sink, expecting: sent, within: .seconds(30))
        verdict.report()
        // The first active's token, long stale: the sink and the checkpoint refuse it.
        if try await !probeStaleWrite(sink, epoch: FencingToken(rawValue: firstToken)) { failures.append("the sink accepted a stale epoch") }
        let store = try await PostgresStore(url: schemaURL(postgres, "feed_store_\(run)"))
        let write = try await store.writeCheckpoint(
            of: GroupName("feed-\(run)"), named: CheckpointName("output"), value: ContinuityPosition.encode(0), token: FencingToken(rawValue: firstToken)
        )
        try await store.close()
        let checkpointRefused = if case .rejected = write { true } else { false }
        report(["stale_checkpoint": checkpointRefused ? "refused" : "accepted", "answer": "\"\(write)\""])
        if !checkpointRefused { failures.append("the checkpoint accepted a stale token") }
        let all = await lines.all
        let fenced = all.filter { $0.fields["event"] == "fenced" }.count
        let gaps = all.filter { $0.fields["event"] == "gap" }.count
        if gaps > 0 { failures.append("\(gaps) gaps were published") }
        failures += verdict.problems
        report([
            "result": failures.isEmpty ? "ok" : "failed", "sent": "\(sent)", "failovers": "\(min(failovers, all.filter { $0.fields["event"] == "active" }.count - 1))",
            "resent": "\(resent)", "fenced": "\(fenced)", "gaps": "\(gaps)",
        ])
        for failure in failures.prefix(20) { report(["failure": "\"\(failure)\""]) }
        if !failures.isEmpty { throw ExitCode(1) }
    }
}

/// A line of `key=value` fields printed by a child.
struct Line: Sendable {
    var source: String
    var fields: [String: String]
    /// Its place among all the lines.
    var index = 0

    init(source: String, text: String) {
        self.source = source
        fields = Dictionary(text.split(separator: " ").compactMap { field in
            let parts = field.split(separator: "=", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }, uniquingKeysWith: { _, last in last })
    }
}

/// Every line the children printed, in arrival order, with waiting for the next that matches.
actor Lines {
    private(set) var all: [Line] = []
    private var waiters: [(id: Int, after: Int, predicate: @Sendable (Line) -> Bool, continuation: CheckedContinuation<Line?, Never>)] = []
    private var waiterIDs = 0

    var count: Int { all.count }

    func append(_ line: Line) {
        var line = line
        line.index = all.count
        all.append(line)
        let index = line.index
        waiters.removeAll { waiter in
            guard index >= waiter.after, waiter.predicate(line) else { return false }
            waiter.continuation.resume(returning: line)
            return true
        }
    }

    /// The first line at index `after` or later that matches, or `nil` if none arrives within `timeout`.
    func next(after: Int, within timeout: Duration, where predicate: @escaping @Sendable (Line) -> Bool) async -> Line? {
        if let line = all[min(after, all.count)...].first(where: predicate) { return line }
        waiterIDs += 1
        let id = waiterIDs
        return await withCheckedContinuation { continuation in
            waiters.append((id, after, predicate, continuation))
            Task {
                try? await Task.sleep(for: timeout)
                self.expire(id)
            }
        }
    }

    private func expire(_ id: Int) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        waiters.remove(at: index).continuation.resume(returning: nil)
    }
}

/// A subcommand of this program in a process of its own: stdout is read line by line into `lines` (and the log),
/// stderr goes to the log.
final class Child: Sendable {
    let name: String
    private let process: Process

    init(_ arguments: [String], name: String, logs: String, lines: Lines) throws {
        self.name = name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = arguments
        let log = logs + "/" + name + ".log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardError = logHandle
        let pipe = Pipe()
        process.standardOutput = pipe
        let buffer = Mutex<[UInt8]>([])
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            logHandle.write(data)
            let complete: [String] = buffer.withLock { buffer in
                buffer += data
                guard let last = buffer.lastIndex(of: UInt8(ascii: "\n")) else { return [] }
                let text = String(decoding: buffer[...last], as: UTF8.self)
                buffer.removeFirst(last + 1)
                return text.split(separator: "\n").map(String.init)
            }
            guard !complete.isEmpty else { return }
            let parsed = complete.map { Line(source: name, text: $0) }
            let semaphore = DispatchSemaphore(value: 0)
            Task {
                for line in parsed { await lines.append(line) }
                semaphore.signal()
            }
            semaphore.wait()  // keeps each child's lines in order
            if data.isEmpty { handle.readabilityHandler = nil }
        }
        try process.run()
        self.process = process
    }

    func signal(_ number: Int32) {
        if process.isRunning { kill(process.processIdentifier, number) }
    }

    /// Waits for the process to end, up to `timeout`; whether it did.
    func exit(within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return !process.isRunning
    }
}
