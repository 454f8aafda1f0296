import ArgumentParser
import Foundation
import Understudy
import UnderstudyCore
import UnderstudySQLite
import UnderstudyStore
import UnderstudySupervisor

/// `understudy demo`: a guided tour with three real members on a temporary SQLite store.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch failover, handover and preemption with three real members (about 15 seconds).",
        discussion: """
            Starts three `understudy run` members of group "demo" on a temporary SQLite store, each supervising \
            a shell loop that prints ticks; kills the active member (supervisor and watchdog) with SIGKILL, hands over gracefully with \
            SIGTERM, lets a member of higher weight preempt, and prints the measured timings. Nothing to set up; \
            everything is removed at the end.
            """
    )

    @Flag(name: .customLong("no-color"), help: "Plain output, even on a terminal (also: NO_COLOR).")
    var noColor = false

    func run() async throws {
        let style = Style(enabled: !noColor && isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil)
        let directory = try TemporaryDirectory()
        let tour = try Tour(directory: directory.path, style: style)
        defer { tour.stopAll() }
        try await tour.run()
    }
}

/// The steps of the demo, with the members it started.
private final class Tour: @unchecked Sendable {
    private struct Started {
        var name: String
        var process: WatchedProcess
    }

    private let directory: String
    private let style: Style
    private let store: SQLiteStore
    private let group: GroupName
    private let origin = MonotonicClock.now()
    private var tracker = ChangeTracker()
    private var members: [String: Started] = [:]
    private var timings: [(String, Duration)] = []
    private var tokens: [FencingToken] = []
    static let weights = ["alpha": 30, "beta": 20, "gamma": 10]

    init(directory: String, style: Style) throws {
        self.directory = directory
        self.style = style
        do {
            store = try SQLiteStore(path: directory + "/demo.db")
            group = try GroupName("demo")
        } catch {
            throw CLIError(.storeUnavailable, "cannot create the demo store in \(directory): \(error)")
        }
    }

    func run() async throws {
        say(style.bold("understudy demo") + ": group \"demo\", heartbeat I = 100ms, activation T = 500ms")
        say("store: \(directory)/demo.db (removed at the end)")
        heading("1. three members join: alpha (weight 30), beta (20), gamma (10)")
        try start("alpha")
        let first = try await waitForActivation(by: nil, after: origin)
        try start("beta")
        try start("gamma")
        try await observe(for: .seconds(2))
        let initial = first.member

        // The demo holds each member under a watchdog of its own, so that nothing outlives it; killing one kills the
        // member's whole tree, supervisor and watchdog alike, which is what a host loss looks like.
        heading("2. kill -9 the active member (\(initial)): supervisor and watchdog together, as when its host dies")
        let killedAt = MonotonicClock.now()
        members[initial]?.process.kill()
        members[initial] = nil
        let takeover = try await waitForActivation(by: nil, after: killedAt)
        let failover = takeover.at - killedAt
        timings.append(("failover after a host-like loss", failover))
        say(style.green("takeover by \(takeover.member) (token \(takeover.token)) after \(failover.formatted)")
            + ": nobody was left to prove the command dead, so the lease ran out (T = 500ms). When only the supervisor "
            + "dies, its watchdog proves the command dead and releases the slot: about 30 ms (docs/benchmarks.md, 3b)")
        try await observe(for: .seconds(2))

        heading("3. SIGTERM \(takeover.member): graceful handover, the slot is released at once")
        let terminatedAt = MonotonicClock.now()
        members[takeover.member]?.process.terminate()
        let handover = try await waitForActivation(by: nil, after: terminatedAt)
        timings.append(("graceful handover (SIGTERM)", handover.at - terminatedAt))
        say(style.green("handover to \(handover.member) with token \(handover.token) after \((handover.at - terminatedAt).formatted)"))
        members[takeover.member] = nil
        try await observe(for: .seconds(2))

        heading("4. \(initial) rejoins with weight 30 and preempts \(handover.member) (weight \(Self.weights[handover.member] ?? 0))")
        let joinedAt = MonotonicClock.now()
        try start(initial)
        let preemption = try await waitForActivation(by: initial, after: joinedAt)
        timings.append(("preemption (join to active)", preemption.at - joinedAt))
        say(style.green("\(initial) active with token \(preemption.token) after \((preemption.at - joinedAt).formatted)"))
        try await observe(for: .seconds(2))

        heading("summary")
        for (name, duration) in timings {
            say("  " + name.padding(toLength: 32, withPad: " ", startingAt: 0) + style.bold(duration.formatted))
        }
        let increasing = zip(tokens, tokens.dropFirst()).allSatisfy { $0 < $1 }
        say("  tokens granted, in order:       " + tokens.map { "\($0)" }.joined(separator: ", ")
            + (increasing ? " (strictly increasing)" : style.red(" (NOT increasing)")))
        say("  next: `understudy run --help`, `understudy status`, `understudy watch`")
    }

    /// Starts `name` under a watchdog, so it cannot outlive the demo even if the demo is killed.
    private func start(_ name: String) throws {
        let weight = Self.weights[name] ?? 50
        let ticks = "n=0; while :; do n=$((n+1)); echo \"        $UNDERSTUDY_MEMBER_ID | tick $n (token $UNDERSTUDY_FENCING_TOKEN)\"; sleep 0.5; done"
        let command = [
            "/bin/sh", "-c", "exec \"$0\" \"$@\" 2>>\"\(directory)/\(name).log\"",
            WatchedProcess.executablePath, "run", "--group", "demo", "--store", "\(directory)/demo.db", "--id", name,
            "--weight", "\(weight)", "--heartbeat", "100ms", "--activation", "500ms", "--stop-grace", "1s",
            "--", "/bin/sh", "-c", ticks,
        ]
        let process = try WatchedProcess(
            command: command,
            environment: ProcessInfo.processInfo.environment,
            deadline: MonotonicClock.now() + .seconds(3_600),
            margin: .zero
        )
        members[name] = Started(name: name, process: process)
    }

    /// Prints the store's changes for `duration`.
    private func observe(for duration: Duration) async throws {
        let end = MonotonicClock.now() + duration
        while MonotonicClock.now() < end {
            _ = try await poll()
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits (at most 10 s) until `member` (or anyone) is granted a lease after `instant`.
    private func waitForActivation(by member: String?, after instant: Instant) async throws -> (member: String, token: FencingToken, at: Instant) {
        let deadline = MonotonicClock.now() + .seconds(10)
        while MonotonicClock.now() < deadline {
            for change in try await poll() where change.kind == .activate && (member == nil || change.member.rawValue == member) {
                if let token = change.token { return (change.member.rawValue, token, MonotonicClock.now()) }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw CLIError(.statusError, "the demo expected an activation within 10 s and saw none; logs are in \(directory)")
    }

    private func poll() async throws -> [GroupChange] {
        let views = try await store.group(named: group).map { [$0] } ?? []
        let changes = tracker.update(views)
        for change in changes {
            if change.kind == .activate, let token = change.token { tokens.append(token) }
            let elapsed = (MonotonicClock.now() - origin).formatted
            var line = "  \(elapsed.padding(toLength: 9, withPad: " ", startingAt: 0)) \(change.kind.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) \(change.member)"
            if let token = change.token { line += " token \(token)" }
            if let reason = change.reason { line += " (\(reason))" }
            say(change.kind == .activate ? style.green(line) : change.kind == .deactivate ? style.red(line) : line)
        }
        return changes
    }

    private func heading(_ text: String) {
        say("")
        say(style.bold(text))
    }

    private func say(_ line: String) {
        printLine(line)
    }

    func stopAll() {
        for member in members.values { member.process.terminate() }
        let deadline = MonotonicClock.now() + .seconds(3)
        while members.values.contains(where: { !$0.process.hasExited }), MonotonicClock.now() < deadline {
            usleep(20_000)
        }
        for member in members.values { member.process.kill() }
    }
}

/// ANSI styling, or none.
private struct Style {
    var enabled: Bool

    func bold(_ text: String) -> String { wrap(text, "1") }
    func green(_ text: String) -> String { wrap(text, "32") }
    func red(_ text: String) -> String { wrap(text, "31") }

    private func wrap(_ text: String, _ code: String) -> String {
        enabled ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }
}

/// A fresh temporary directory, removed when the value is released.
private final class TemporaryDirectory {
    let path: String

    init() throws(CLIError) {
        let template = (NSTemporaryDirectory() as NSString).appendingPathComponent("understudy-demo-XXXXXX")
        var bytes = Array(template.utf8CString)
        guard let result = mkdtemp(&bytes) else {
            throw CLIError(.storeUnavailable, "cannot create a temporary directory: \(String(cString: strerror(errno)))")
        }
        path = String(cString: result)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
