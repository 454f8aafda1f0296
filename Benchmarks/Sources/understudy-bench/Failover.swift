import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Understudy
import UnderstudyCore

/// One line a child wrote when it started.
struct Stamp: Sendable {
    var at: Int64
    var pid: pid_t
    var label: String
    var token: String
}

/// The file every child appends its start to; read incrementally.
final class StampFile {
    let path: String
    private var offset = 0
    private(set) var stamps: [Stamp] = []

    init(path: String) {
        self.path = path
        FileManager.default.createFile(atPath: path, contents: nil)
    }

    /// Reads lines appended since the last call.
    func refresh() {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        try? handle.seek(toOffset: UInt64(offset))
        let data = handle.readDataToEndOfFile()
        guard let end = data.lastIndex(of: UInt8(ascii: "\n")) else { return }
        let complete = data[data.startIndex...end]
        offset += complete.count
        for line in String(decoding: complete, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 4, let at = Int64(fields[0]), let pid = pid_t(fields[1]) else { continue }
            stamps.append(Stamp(at: at, pid: pid, label: String(fields[2]), token: String(fields[3])))
        }
    }

    /// Waits for the first stamp after index `after` that satisfies `matching`.
    func wait(after index: Int, timeout: Duration, matching: (Stamp) -> Bool = { _ in true }) -> (index: Int, stamp: Stamp)? {
        let deadline = boottime() + Int64(timeout.milliseconds * 1e6)
        while boottime() < deadline {
            refresh()
            if let found = stamps.indices.first(where: { $0 > index && matching(stamps[$0]) }) {
                return (found, stamps[found])
            }
            sleep(milliseconds: 1)
        }
        return nil
    }
}

/// A supervisor under test: Understudy with a store, or `etcdctl lock`.
protocol Contender {
    var name: String { get }
    /// The lease length, for the ratio column.
    var leaseLength: Duration { get }
    var supportsWeights: Bool { get }
    func start(label: String, weight: Int, stampFile: String) throws -> pid_t
    /// A graceful stop as an operator (or systemd) would send it.
    func terminate(_ pid: pid_t)
    /// What to SIGSTOP for a stand-in of a lost host: pids, or negated process group ids.
    func freezeTargets(_ pid: pid_t) -> [pid_t]
}

struct UnderstudyContender: Contender {
    var binary: String
    var child: String
    var store: BenchStore
    var group: String
    var heartbeat: String
    var activation: Duration
    var activationText: String
    var logDirectory: String
    /// Every child starts a `setsid` escaper.
    var escaper = false

    var name: String { "understudy (\(store.kind))" + (escaper ? " + setsid escaper" : "") }
    var leaseLength: Duration { activation }
    var supportsWeights: Bool { true }

    func start(label: String, weight: Int, stampFile: String) throws -> pid_t {
        try spawn([
            binary, "run", "--group", group, "--store", store.url, "--id", label, "--weight", "\(weight)",
            "--heartbeat", heartbeat, "--activation", activationText, "--stop-grace", "2s",
            "--", child, stampFile, label,
        ] + (escaper ? ["escape"] : []), log: "\(logDirectory)/\(label).log")
    }

    func terminate(_ pid: pid_t) { kill(pid, SIGTERM) }

    /// The supervisor and its watchdog: nobody is left to release the slot, only the guard inside the tree runs.
    func freezeTargets(_ pid: pid_t) -> [pid_t] { [pid] + watchdogs(of: pid) }

    /// The running children of `supervisor` that are watchdogs (`understudy __watchdog`).
    private func watchdogs(of supervisor: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid_t($0) }.filter { pid in
            guard parentPID(pid) == supervisor,
                  let command = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))
            else { return false }
            return String(decoding: command, as: UTF8.self).contains("__watchdog")
        }
    }
}

struct EtcdContender: Contender {
    var etcd: Etcd
    var child: String
    var ttl: Int
    var logDirectory: String

    var name: String { "etcdctl lock --ttl \(ttl)" }
    var leaseLength: Duration { .seconds(ttl) }
    var supportsWeights: Bool { false }

    func start(label: String, weight: Int, stampFile: String) throws -> pid_t {
        try spawn(
            [etcd.etcdctl, "--endpoints", etcd.endpoint, "lock", "--ttl", "\(ttl)", "understudy-bench", child, stampFile, label],
            log: "\(logDirectory)/\(label).log",
            environment: ["ETCDCTL_API": "3"]
        )
    }

    /// etcdctl forwards no signal to its command: SIGTERM to etcdctl alone leaves it holding the lock until the
    /// command exits. A graceful stop therefore signals the whole process group, as systemd or Ctrl-C would.
    func terminate(_ pid: pid_t) { kill(-pid, SIGTERM) }

    /// etcdctl's whole process group, its command included.
    func freezeTargets(_ pid: pid_t) -> [pid_t] { [-pid] }
}

struct ScenarioResult: Codable, Sendable {
    var system: String
    var scenario: String
    var leaseMilliseconds: Double
    var distribution: Distribution?
    var samplesMilliseconds: [Double]
    var timeouts: Int
    /// Crash and freeze: in how many rounds the old child (or its escaper) was still running when the next child
    /// started.
    var oldChildStillRunning: Int?
    var tokensIncreasing: Bool?
    var targetMilliseconds: Double?
    var target: String?
}

struct FailoverReport: Codable, Sendable {
    var machine: MachineInfo
    var command: String
    var heartbeatMilliseconds: Double
    var activationMilliseconds: Double
    var members: Int
    var rounds: Int
    var results: [ScenarioResult]
}

struct Failover: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Crash failover (kill -9), graceful handover (SIGTERM) and preemption with real `understudy run` processes.",
        discussion: """
            Starts MEMBERS `understudy run` supervisors of one group, each supervising a tiny C child that stamps \
            its start on CLOCK_BOOTTIME. Each round injects the fault and measures from just before kill() to the \
            next child's own stamp. Every process is stopped at the end, also on SIGINT/SIGTERM.
            """
    )

    @Option(help: "sqlite (a fresh file), postgres (a throwaway server on loopback) or a store URL; repeatable.")
    var store: [String] = ["sqlite"]

    @Option(help: "Supervisors in the group.")
    var members = 3

    @Option(help: "Rounds per scenario.")
    var rounds = 20

    @OptionGroup var supervisor: SupervisorOptions

    @Option(help: "Scenarios: crash, graceful, preemption, freeze (SIGSTOP of the active supervisor and its watchdog) (comma-separated).")
    var scenarios = "crash,graceful,preemption"

    @Flag(help: "Also run every Understudy store with children that start a `setsid` escaper (crash and freeze count escapers still running).")
    var escaper = false

    @Flag(help: "Also run the scenarios against `etcdctl lock` on a single-node etcd (installed when missing); freeze stops etcdctl's process group.")
    var etcd = false

    @Option(name: .customLong("etcd-ttl"), help: "etcdctl's --ttl, in seconds (1 is the smallest it accepts).")
    var etcdTTL = 1

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "The wait after the members start and after each round, before the random wait of up to I (default: T + 300ms).")
    var settle: String?

    @Option(help: "Also draw every sample, side by side on a log time axis, as an SVG file.")
    var svg: String?

    @Option(help: "Measure nothing: print (and with --svg, draw) a report saved with --json.")
    var report: String?

    func run() throws {
        let report = try self.report.map { try JSONDecoder().decode(FailoverReport.self, from: Data(contentsOf: URL(fileURLWithPath: $0))) }
            ?? measure()
        if let svg { try FailoverPlot(report: report).svg.write(toFile: svg, atomically: true, encoding: .utf8) }
        if json {
            try printJSON(report)
        } else {
            print(Self.render(report))
        }
    }

    func measure() throws -> FailoverReport {
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.runAll() }
        let binary = try Binaries.understudy(supervisor.understudy)
        let child = try Binaries.child()
        let heartbeatInterval = try parseDuration(supervisor.heartbeat)
        let activationInterval = try parseDuration(supervisor.activation)
        let wanted = Set(scenarios.split(separator: ",").map(String.init))
        let settleInterval = try settle.map { try parseDuration($0) } ?? activationInterval + .milliseconds(300)
        let logDirectory = try makeTemporaryDirectory("understudy-bench-logs")

        var contenders: [any Contender] = []
        for (index, spec) in store.enumerated() {
            let resolved = try BenchStore.resolve(spec)
            for escaping in escaper ? [false, true] : [false] {
                contenders.append(UnderstudyContender(
                    binary: binary, child: child, store: resolved, group: "bench-\(index)\(escaping ? "-escaper" : "")",
                    heartbeat: supervisor.heartbeat, activation: activationInterval, activationText: supervisor.activation,
                    logDirectory: logDirectory, escaper: escaping
                ))
            }
        }
        if etcd {
            contenders.append(EtcdContender(etcd: try Etcd.start(), child: child, ttl: etcdTTL, logDirectory: logDirectory))
        }

        var results: [ScenarioResult] = []
        for (index, contender) in contenders.enumerated() {
            let runner = ScenarioRunner(
                contender: contender, members: members, rounds: rounds, heartbeat: heartbeatInterval,
                activation: activationInterval, settle: settleInterval, stampFile: StampFile(path: "\(logDirectory)/stamps-\(index).txt"), prefix: "c\(index)"
            )
            results += try runner.run(scenarios: ["crash", "graceful", "preemption", "freeze"].filter(wanted.contains))
        }
        return FailoverReport(
            machine: .current(), command: CommandLine.arguments.joined(separator: " "),
            heartbeatMilliseconds: heartbeatInterval.milliseconds, activationMilliseconds: activationInterval.milliseconds,
            members: members, rounds: rounds, results: results
        )
    }

    static func render(_ report: FailoverReport) -> String {
        let rows = report.results.map { result -> [String] in
            guard let d = result.distribution else {
                return [result.system, result.scenario, "0", "-", "-", "-", "-", "-", "-", "-", "\(result.timeouts) timeouts"]
            }
            let met = result.targetMilliseconds.map { d.p99 <= $0 ? "met" : "**missed**" } ?? ""
            var notes: [String] = []
            if let alive = result.oldChildStillRunning { notes.append("old child or escaper running at the next start: \(alive)/\(d.samples)") }
            if result.timeouts > 0 { notes.append("\(result.timeouts) timeouts") }
            if result.tokensIncreasing == false { notes.append("TOKENS NOT INCREASING") }
            return [
                result.system, result.scenario, "\(d.samples)", format(d.p50), format(d.p90), format(d.p99), format(d.max),
                String(format: "%.2f", d.p99 / result.leaseMilliseconds),
                result.target.map { "\($0) \(met)" } ?? "", notes.joined(separator: "; "),
            ]
        }
        return """
            machine: \(report.machine.summary)
            I = \(format(report.heartbeatMilliseconds)) ms, T = \(format(report.activationMilliseconds)) ms, \(report.members) members, \(report.rounds) rounds per scenario; times in ms, from the fault to the next child's own start stamp

            """ + table(["system", "scenario", "n", "p50", "p90", "p99", "max", "p99 / lease", "target (p99)", "notes"], rows)
    }
}

/// Runs the scenarios against one contender.
struct ScenarioRunner {
    var contender: any Contender
    var members: Int
    var rounds: Int
    var heartbeat: Duration
    var activation: Duration
    var settle: Duration
    var stampFile: StampFile
    var prefix: String

    /// The pids of the escapers that the children of `label` started.
    func escapers(of label: String) -> [pid_t] {
        let text = (try? String(contentsOfFile: stampFile.path + ".escapers", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            return fields.count == 2 && fields[1] == label ? pid_t(fields[0]) : nil
        }
    }

    private final class State {
        var supervisors: [String: pid_t] = [:]
        var started = 0
    }

    func run(scenarios: [String]) throws -> [ScenarioResult] {
        let state = State()
        func startMember(weight: Int = 50) throws -> String {
            state.started += 1
            let label = "\(prefix)m\(state.started)"
            state.supervisors[label] = try contender.start(label: label, weight: weight, stampFile: stampFile.path)
            return label
        }
        defer {
            for pid in state.supervisors.values {
                kill(-pid, SIGKILL)
                reap(pid)
            }
            stampFile.refresh()
            for stamp in stampFile.stamps where isRunning(stamp.pid) { kill(stamp.pid, SIGKILL) }
            for stamp in stampFile.stamps { for escaper in escapers(of: stamp.label) where isRunning(escaper) { kill(escaper, SIGKILL) } }
        }

        note("\(contender.name): starting \(members) members")
        for _ in 0..<members {
            _ = try startMember()
            sleep(milliseconds: 150)
        }
        guard stampFile.wait(after: -1, timeout: .seconds(30)) != nil else {
            throw BenchError("\(contender.name): no member activated within 30 s")
        }
        let settle = Int(settle.milliseconds)
        sleep(milliseconds: settle)
        let timeout = activation * 4 + .seconds(10)

        var results: [ScenarioResult] = []
        for scenario in scenarios {
            if scenario == "preemption", !contender.supportsWeights { continue }
            note("\(contender.name): \(scenario), \(rounds) rounds")
            var samples: [Double] = []
            var timeouts = 0
            var stillRunning = 0
            for _ in 0..<rounds {
                // Rounds follow each other in step with the members' events, so without this the fault would
                // fall at nearly the same point of the active's heartbeat interval every round; a random wait of
                // up to I spreads it over the whole interval.
                sleep(milliseconds: Int.random(in: 0...Int(heartbeat.milliseconds)))
                stampFile.refresh()
                guard let activeIndex = stampFile.stamps.indices.last else { break }
                let active = stampFile.stamps[activeIndex]
                switch scenario {
                case "freeze":
                    guard let pid = state.supervisors[active.label] else { throw BenchError("\(contender.name): lost track of \(active.label)") }
                    let frozen = contender.freezeTargets(pid)
                    let faultAt = boottime()
                    for target in frozen { kill(target, SIGSTOP) }
                    if let next = stampFile.wait(after: activeIndex, timeout: timeout, matching: { $0.label != active.label })?.stamp {
                        samples.append(Double(next.at - faultAt) / 1e6)
                        if isRunning(active.pid) || escapers(of: active.label).contains(where: isRunning) { stillRunning += 1 }
                    } else {
                        timeouts += 1
                    }
                    for target in frozen.reversed() { kill(target, SIGCONT) }
                    contender.terminate(pid)
                    reap(pid, timeout: .seconds(15))
                    state.supervisors[active.label] = nil
                    _ = try startMember()
                case "crash", "graceful":
                    guard let pid = state.supervisors[active.label] else { throw BenchError("\(contender.name): lost track of \(active.label)") }
                    let faultAt = boottime()
                    if scenario == "crash" { kill(pid, SIGKILL) } else { contender.terminate(pid) }
                    if let next = stampFile.wait(after: activeIndex, timeout: timeout, matching: { $0.label != active.label })?.stamp {
                        samples.append(Double(next.at - faultAt) / 1e6)
                        if scenario == "crash", isRunning(active.pid) || escapers(of: active.label).contains(where: isRunning) {
                            stillRunning += 1
                            kill(active.pid, SIGKILL)
                        }
                    } else {
                        timeouts += 1
                    }
                    reap(pid, timeout: .seconds(15))
                    state.supervisors[active.label] = nil
                    _ = try startMember()
                case "preemption":
                    let joinAt = boottime()
                    let label = try startMember(weight: 100)
                    guard let index = stampFile.wait(after: activeIndex, timeout: timeout, matching: { $0.label == label })?.index else {
                        timeouts += 1
                        continue
                    }
                    samples.append(Double(stampFile.stamps[index].at - joinAt) / 1e6)
                    sleep(milliseconds: settle)
                    // Hand back to the weight-50 members, so the next round can preempt again.
                    let pid = state.supervisors[label]!
                    contender.terminate(pid)
                    _ = stampFile.wait(after: index, timeout: timeout) { $0.label != label }
                    reap(pid, timeout: .seconds(15))
                    state.supervisors[label] = nil
                default:
                    throw BenchError("unknown scenario \(scenario): crash, graceful, preemption or freeze")
                }
                sleep(milliseconds: settle)
            }
            stampFile.refresh()
            let tokens = stampFile.stamps.compactMap { UInt64($0.token) }
            let t = activation.milliseconds, i = heartbeat.milliseconds
            let understudy = contender is UnderstudyContender
            let isPostgres = contender.name.contains("PostgreSQL")
            let target: (Double, String)? = switch (scenario, understudy) {
            // Proof-of-death failover: the watchdog releases the slot once the tree is dead, no waiting for T.
            case ("crash", true): (50, "≤ 50")
            // Frozen with its watchdog, nobody can release: the lease expires; the guard killed the tree before.
            case ("freeze", true): (1.05 * t, "≤ 1.05 × T = \(format(1.05 * t))")
            case ("graceful", true): isPostgres ? (100, "≤ 100") : (i + 20, "≤ I + 20 = \(format(i + 20))")
            default: nil
            }
            results.append(ScenarioResult(
                system: contender.name, scenario: scenario, leaseMilliseconds: contender.leaseLength.milliseconds,
                distribution: Distribution(milliseconds: samples), samplesMilliseconds: samples, timeouts: timeouts,
                oldChildStillRunning: scenario == "crash" || scenario == "freeze" ? stillRunning : nil,
                tokensIncreasing: tokens.isEmpty ? nil : zip(tokens, tokens.dropFirst()).allSatisfy { $0 < $1 },
                targetMilliseconds: target?.0, target: target?.1
            ))
        }
        return results
    }
}
