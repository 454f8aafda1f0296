import ArgumentParser
import Foundation
import UnderstudyCore
#if canImport(Glibc)
import Glibc
#endif

struct QueueReport: Codable, Sendable {
    var machine: MachineInfo
    var command: String
    var throughput: [RateResult] = []
    var latency: [LatencyResult] = []
    var failover: [QueueFailoverResult] = []
    var steady: [SizeSample] = []
    var idle: [RateResult] = []
    var idleSessionState: [String] = []
}

/// `understudy-bench queue`: the work queue's figures of issue 16, side by side with the server's floor and a
/// Python peer, on one throwaway PostgreSQL server.
struct QueueBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Work-queue throughput, latency, failover, table size and a held transaction, beside pgbench and PgQueuer.",
        discussion: """
            Parts (--parts, comma-separated): throughput (in-process QueueWorker, no-op handlers, a producer keeping \
            1,000 jobs queued), floor (pgbench running a plain FOR UPDATE SKIP LOCKED claim-and-delete loop), python \
            (PgQueuer from PyPI in a temporary venv), latency (enqueue to handler start into an idle worker), failover \
            (kill -9 of a real `understudy queue work` holding jobs), steady (table size under steady load with a short \
            retention), idle (throughput while another session is idle in transaction). One PostgreSQL server on \
            loopback serves every part.
            """
    )

    @Option(help: "sqlite, postgres, memory (the in-memory store, for the harness) or a store URL; repeatable.")
    var store: [String] = ["sqlite", "postgres"]

    @Option(help: "The parts to run (comma-separated).")
    var parts = "throughput,floor,python,latency,failover,steady,idle"

    @Option(help: "Measurement window of each throughput configuration.")
    var duration = "60s"

    @Option(help: "Time each throughput configuration runs before it is measured.")
    var warmup = "5s"

    @Option(help: "Concurrent handlers (pgbench clients, PgQueuer concurrency), comma-separated.")
    var handlers = "1,4,16"

    @Option(name: .customLong("latency-samples"), help: "Jobs per store for enqueue-to-start latency.")
    var latencySamples = 200

    @Option(help: "The idle worker's poll interval (a fallback when no announcement wakes it).")
    var poll = "1s"

    @Option(name: .customLong("failover-rounds"), help: "Rounds of kill -9 per store.")
    var failoverRounds = 10

    @Option(name: .customLong("claim-lease"), help: "The claim lease of the failover part's workers.")
    var claimLease = "5s"

    @Option(name: .customLong("failover-poll"), help: "The failover part's workers' --poll (the CLI's default: 1s).")
    var failoverPoll = "1s"

    @Option(help: "Length of the steady run (docs: 10m).")
    var steady = "2m"

    @Option(name: .customLong("steady-every"), help: "How often the steady run prints the table's size.")
    var steadyEvery = "30s"

    @Option(name: .customLong("steady-rate"), help: "Jobs enqueued per second per store in the steady run.")
    var steadyRate = 500.0

    @Option(help: "Retention of done jobs in the steady run.")
    var retention = "30s"

    @Option(name: .customLong("prune-every"), help: "How often the steady run's workers prune (QueueWorker's default: 30s).")
    var pruneEvery = "30s"

    @Option(name: .customLong("idle-handlers"), help: "Handlers of the held-transaction part.")
    var idleHandlers = 4

    @Option(name: .customLong("idle-isolation"), help: "Isolation levels of the idle session, comma-separated.")
    var idleIsolation = "read committed,repeatable read"

    @Option(help: "The `understudy` executable for the failover part (default: the root's .build-release or .build release build).")
    var understudy: String?

    @Flag(help: "Print JSON instead of tables.")
    var json = false

    func run() async throws {
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.runAll() }
        let selected = Set(parts.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let known: Set<String> = ["throughput", "floor", "python", "latency", "failover", "steady", "idle"]
        guard selected.isSubset(of: known) else { throw ValidationError("unknown parts: \(selected.subtracting(known).sorted())") }
        let duration = try parseDuration(self.duration)
        let warmup = try parseDuration(self.warmup)
        let counts = handlers.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let directory = try makeTemporaryDirectory("understudy-bench-queue")

        // One server for every part; started on first use.
        var postgresURL: String?
        func postgres() throws -> String {
            if let postgresURL { return postgresURL }
            // track_functions: the time each queue function takes in the server, printed beside the throughput.
            let url = try ThrowawayPostgres.start(settings: ["track_functions=pl"])
            postgresURL = url
            return url
        }
        let targets = try store.map { try QueueTarget.resolve($0, postgres: postgres) }
        let needsServer = !selected.isDisjoint(with: ["floor", "python", "idle"])
        let serverURL = needsServer ? try postgres() : postgresURL
        let pgTarget = serverURL.map { QueueTarget(kind: "PostgreSQL", url: $0) }

        var report = QueueReport(machine: MachineInfo.current(), command: CommandLine.arguments.joined(separator: " "))
        if !json {
            say("machine: \(report.machine.summary)")
            say("command: \(report.command)\n")
        }

        let needsStore = !selected.isDisjoint(with: ["throughput", "latency", "failover", "steady", "idle"])
        for target in (targets + (selected.contains("idle") ? [pgTarget].compactMap { $0 } : [])) where needsStore {
            note("queue: waiting until the \(target.kind) store grants claims (a fresh store grants none for one claim lease)")
            let waited = try await prime(target)
            note(String(format: "queue: the \(target.kind) store granted its first claim after %.1f s", waited))
        }

        // 1–3. Throughput beside the floor and the peer, concurrency by concurrency.
        if !selected.isDisjoint(with: ["throughput", "floor", "python"]) {
            let peer = selected.contains("python") ? try PythonPeer.install(in: directory) : nil
            for count in counts {
                if selected.contains("throughput") {
                    for target in targets {
                        note("queue throughput: understudy on \(target.kind), \(count) handlers")
                        report.throughput.append(try await understudyThroughput(target, handlers: count, warmup: warmup, duration: duration))
                    }
                }
                if selected.contains("floor"), let serverURL {
                    report.throughput.append(try PgbenchFloor.run(url: serverURL, clients: count, warmup: warmup, duration: duration, directory: directory))
                }
                if let peer, let serverURL {
                    report.throughput.append(try PythonPeer.run(
                        python: peer.python, version: peer.version, directory: directory, url: serverURL, handlers: count, warmup: warmup, duration: duration
                    ))
                }
            }
            if !json { printThroughput(report.throughput, window: duration, warmup: warmup) }
        }

        // 4. Enqueue-to-start latency into an idle worker.
        if selected.contains("latency") {
            for target in targets {
                note("queue latency: \(target.kind), \(latencySamples) jobs")
                report.latency.append(try await enqueueToStart(target, samples: latencySamples, poll: try parseDuration(poll)))
            }
            if !json { printLatency(report.latency) }
        }

        // 5. A killed worker's jobs elsewhere.
        if selected.contains("failover") {
            let binary = try Binaries.understudy(understudy)
            let child = try Binaries.child()
            let lease = try parseDuration(claimLease)
            for target in targets where target.kind != "memory" {
                note("queue failover: \(target.kind), claim lease \(claimLease), \(failoverRounds) rounds")
                report.failover.append(try killedWorkerFailover(
                    binary: binary, child: child, target: target, rounds: failoverRounds, lease: lease, leaseText: claimLease,
                    pollText: failoverPoll, directory: directory
                ))
            }
            if !json { printFailover(report.failover) }
        }

        // 6. Table size under steady load.
        if selected.contains("steady") {
            let json = self.json
            note("queue steady: \(steady) at \(steadyRate) jobs/s per store, retention \(retention)")
            if !json { say("steady run: \(steady), \(Int(steadyRate)) jobs/s per store, \(idleHandlers) handlers, retention \(retention), pruned every \(pruneEvery)") }
            report.steady = try await steadyRun(
                targets.filter { $0.kind != "memory" }, postgresURL: postgresURL, length: try parseDuration(steady),
                every: try parseDuration(steadyEvery), retention: try parseDuration(retention), pruneInterval: try parseDuration(pruneEvery),
                rate: steadyRate, handlers: idleHandlers
            ) { sample in
                if !json {
                    let line = "  " + String(format: "%5.0f s", sample.seconds) + "  " + sample.store.padding(toLength: 10, withPad: " ", startingAt: 0)
                        + "  \(megabytes(sample.bytes))  (\(sample.doneSoFar) done; \(sample.detail ?? ""))\n"
                    FileHandle.standardOutput.write(Data(line.utf8))
                }
            }
            if !json { say("") }
        }

        // 7. Throughput while another session holds a transaction open.
        if selected.contains("idle"), let pgTarget {
            for isolation in idleIsolation.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                note("queue idle: normal, then with a session idle in transaction (\(isolation))")
                report.idle.append(try await understudyThroughput(pgTarget, handlers: idleHandlers, warmup: warmup, duration: duration))
                let holder = try IdleTransaction.start(url: pgTarget.url, isolation: isolation, log: "\(directory)/idle-tx.log")
                let stateBefore = (try? IdleTransaction.state(url: pgTarget.url)) ?? "?"
                let held: RateResult
                do {
                    held = try await understudyThroughput(
                        pgTarget, handlers: idleHandlers, warmup: warmup, duration: duration, condition: "idle in transaction (\(isolation))"
                    )
                } catch {
                    holder.stop()
                    throw error
                }
                let stateAfter = (try? IdleTransaction.state(url: pgTarget.url)) ?? "?"
                holder.stop()
                report.idle.append(held)
                report.idleSessionState.append("\(isolation): before \(stateBefore), after \(stateAfter) (state|backend_xmin)")
            }
            if !json { printIdle(report.idle, states: report.idleSessionState) }
        }

        if json { try printJSON(report) }
    }

    // MARK: Tables

    private func rate(_ value: Double) -> String { String(format: "%.0f", value) }

    private func printThroughput(_ results: [RateResult], window: Duration, warmup: Duration) {
        say("throughput: enqueue → claim → complete, no-op handlers; jobs/s over \(self.duration) after \(self.warmup) (per-second samples)\n")
        let rows = results.map { r -> [String] in
            let d = r.distribution
            let floor = results.first { $0.system == "pgbench floor" && $0.handlers == r.handlers }
            let ours = results.first { $0.system == "understudy" && $0.store == "PostgreSQL" && $0.handlers == r.handlers }
            var comparison = ""
            if r.system == "understudy", r.store == "PostgreSQL", let floor, floor.mean > 0 {
                let ratio = r.mean / floor.mean
                comparison = String(format: "%.2f × floor", ratio) + " (target ≥ 0.5: \(ratio >= 0.5 ? "met" : "**missed**"))"
            } else if r.system.hasPrefix("PgQueuer"), let ours, r.mean > 0 {
                comparison = String(format: "understudy (PostgreSQL) = %.2f × this", ours.mean / r.mean)
            }
            return [r.system, r.store, "\(r.handlers)", rate(r.mean), d.map { rate($0.p50) } ?? "-", d.map { rate($0.p99) } ?? "-",
                    d.map { rate($0.min) } ?? "-", "\(r.perSecond.count)", "\(r.jobs)", comparison, r.note ?? ""]
        }
        say(table(["system", "store", "handlers", "jobs/s (mean)", "p50", "p99", "min", "n (s)", "jobs", "ratio", "notes"], rows))
        say("")
    }

    private func printLatency(_ results: [LatencyResult]) {
        say("enqueue → handler start, one job at a time into an idle worker (announcement wake-up, poll \(poll)); ms\n")
        say(table(["store", "n", "p50", "p90", "p99", "max", "target (p99 ≤ 20 ms)"], results.map { r in
            guard let d = r.distribution else { return [r.store, "0", "-", "-", "-", "-", ""] }
            return [r.store, "\(d.samples)", String(format: "%.2f", d.p50), String(format: "%.2f", d.p90), String(format: "%.2f", d.p99),
                    String(format: "%.2f", d.max), d.p99 <= 20 ? "met" : "**missed**"]
        }))
        say("")
    }

    private func printFailover(_ results: [QueueFailoverResult]) {
        say("kill -9 of a `understudy queue work` holding jobs → each job's command started under another worker\n")
        say(table(["store", "claim lease", "poll", "rounds", "n (jobs)", "p50 ms", "p99 ms", "max ms", "p99 / lease", "max / lease", "target (≤ 1.1 × lease)", "timeouts", "old command still running"],
                    results.map { r in
            guard let d = r.distribution else { return [r.store, "", "", "\(r.rounds)", "0", "-", "-", "-", "-", "-", "", "\(r.timeouts)", ""] }
            let ratio = d.p99 / r.leaseMilliseconds
            return [r.store, format(r.leaseMilliseconds) + " ms", format(r.pollMilliseconds) + " ms", "\(r.rounds)", "\(d.samples)", format(d.p50), format(d.p99),
                    format(d.max), String(format: "%.2f", ratio), String(format: "%.2f", d.max / r.leaseMilliseconds),
                    ratio <= 1.1 ? "met" : "**missed**", "\(r.timeouts)", "\(r.oldCommandStillRunning)/\(d.samples)"]
        }))
        say("")
    }

    private func printIdle(_ results: [RateResult], states: [String]) {
        say("PostgreSQL throughput at \(idleHandlers) handlers, normal and while another session is idle in transaction after a SELECT; jobs/s\n")
        var rows: [[String]] = []
        var normal: RateResult?
        for r in results {
            let d = r.distribution
            var ratio = ""
            if r.condition == "normal" {
                normal = r
            } else if let normal, normal.mean > 0 {
                let value = r.mean / normal.mean
                ratio = String(format: "%.0f %% of normal", value * 100) + " (target ≥ 70 %: \(value >= 0.7 ? "met" : "**missed**"))"
            }
            rows.append([r.condition, rate(r.mean), d.map { rate($0.p50) } ?? "-", d.map { rate($0.min) } ?? "-", "\(r.perSecond.count)", ratio])
        }
        say(table(["condition", "jobs/s (mean)", "p50", "min", "n (s)", "ratio"], rows))
        for state in states { say("  idle session: \(state)") }
        say("")
    }
}

/// A line on stdout, unbuffered, so that the steady run's lines and the tables keep their order in a file.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
