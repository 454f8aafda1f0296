import ArgumentParser
import Foundation
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySQLite
import UnderstudyStore
#if canImport(Glibc)
import Glibc
#endif

/// Opens a store in this process.
func openStore(_ store: BenchStore) async throws -> any LeaseStore & ChangeAnnouncing {
    if store.url.hasPrefix("postgres") { return try await PostgresStore(url: store.url) }
    let path = store.url.hasPrefix("sqlite://") ? String(store.url.dropFirst("sqlite://".count)) : store.url
    return try SQLiteStore(path: path)
}

/// Counts the heartbeats a store is asked to apply; round trips are the store's own count (PostgreSQL calls,
/// SQLite transactions), since both batch heartbeats that are due together.
final class CountingStore: LeaseStore, ChangeAnnouncing {
    let base: any LeaseStore & ChangeAnnouncing
    private let count = Atomic<Int>(0)

    init(_ base: any LeaseStore & ChangeAnnouncing) { self.base = base }

    var heartbeats: Int { count.load(ordering: .relaxed) }
    var roundTrips: Int { (base as? PostgresStore)?.roundTrips ?? (base as? SQLiteStore)?.roundTrips ?? heartbeats }

    func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
        count.add(1, ordering: .relaxed)
        return try await base.heartbeat(heartbeat)
    }

    func close() async throws { try await base.close() }
    func changes(of group: GroupName) -> AsyncStream<Void> { base.changes(of: group) }
}

func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

// MARK: scale

struct ScaleResult: Codable, Sendable {
    var store: String
    var groups: Int
    var heartbeatMilliseconds: Double
    var windowSeconds: Double
    var roundTripsPerSecond: Double
    var heartbeatsPerSecond: Double
    var cpuPercentOfOneCore: Double
    var cpuPercentPerGroup: Double
    /// CPU of every `postgres` process on this host over the window (nil for SQLite): the server's share.
    var serverCPUPercentOfOneCore: Double?
    var rssMB: Double
    var rssBeforeMembersMB: Double
    var peakRSSMB: Double
    var activeAtEnd: Int
}

struct Scale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One process holding N groups (one Member each): store round trips, CPU and RSS over a window.",
        discussion: "Each N runs in a fresh process of its own, so RSS figures do not carry over between sizes."
    )

    @Option(help: "sqlite, postgres or a store URL.")
    var store = "sqlite"

    @Option(help: "Group counts, comma-separated.")
    var groups = "1,100,1000,10000"

    @Option(help: "Heartbeat interval I.")
    var heartbeat = "1s"

    @Option(help: "Activation interval T.")
    var activation = "3s"

    @Option(help: "Time after start before measuring.")
    var warmup = "5s"

    @Option(help: "Measurement window.")
    var window = "10s"

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: .hidden)
    var workerOutput: String?

    func run() async throws {
        if let workerOutput {
            let result = try await measure(store: BenchStore(kind: store.hasPrefix("postgres") ? "PostgreSQL" : "SQLite", url: store), groups: Int(groups)!)
            let data = try JSONEncoder().encode(result)
            _ = FileManager.default.createFile(atPath: workerOutput, contents: data)
            Glibc.exit(0)  // 10,000 members need not leave one by one; the store is thrown away.
        }
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.runAll() }
        let sizes = groups.split(separator: ",").compactMap { Int($0) }
        let shared = store == "sqlite" ? nil : try BenchStore.resolve(store)
        let directory = try makeTemporaryDirectory("understudy-bench-scale")
        var results: [ScaleResult] = []
        for size in sizes {
            let target = try shared ?? BenchStore.resolve(store)
            note("scale: \(size) groups on \(target.kind)")
            let output = "\(directory)/\(size).json"
            let self_ = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            let pid = try spawn([
                self_, "scale", "--store", target.url, "--groups", "\(size)", "--heartbeat", heartbeat,
                "--activation", activation, "--warmup", warmup, "--window", window, "--worker-output", output,
            ], log: "\(directory)/\(size).log")
            reap(pid, timeout: .seconds(600))
            guard let data = FileManager.default.contents(atPath: output) else {
                let log = (try? String(contentsOfFile: "\(directory)/\(size).log", encoding: .utf8)) ?? ""
                throw BenchError("the worker for \(size) groups failed:\n\(log.suffix(2000))")
            }
            results.append(try JSONDecoder().decode(ScaleResult.self, from: data))
        }
        if json {
            try printJSON(results)
            return
        }
        print("machine: \(MachineInfo.current().summary)")
        print("one process, one Member per group, I = \(heartbeat), T = \(activation); measured over \(window) after \(warmup)\n")
        print(table(
            ["store", "groups", "round trips/s", "heartbeats/s", "CPU % of a core", "CPU % per group", "server CPU %", "RSS MB", "RSS before members MB", "active at end"],
            results.map { r in
                [r.store, "\(r.groups)", String(format: "%.1f", r.roundTripsPerSecond), String(format: "%.0f", r.heartbeatsPerSecond),
                 String(format: "%.2f", r.cpuPercentOfOneCore), String(format: "%.5f", r.cpuPercentPerGroup),
                 r.serverCPUPercentOfOneCore.map { String(format: "%.1f", $0) } ?? "",
                 String(format: "%.1f", r.rssMB), String(format: "%.1f", r.rssBeforeMembersMB), "\(r.activeAtEnd)/\(r.groups)"]
            }
        ))
    }

    private func measure(store spec: BenchStore, groups count: Int) async throws -> ScaleResult {
        let heartbeatInterval = try parseDuration(heartbeat)
        let activationInterval = try parseDuration(activation)
        let store = CountingStore(try await openStore(spec))
        let rssBefore = residentMB() ?? 0
        var members: [Member] = []
        members.reserveCapacity(count)
        let run = UUID().uuidString.prefix(8)
        for index in 0..<count {
            let configuration = try GroupConfiguration(
                name: GroupName("scale-\(run)-\(index)"), heartbeatInterval: heartbeatInterval, activationInterval: activationInterval
            )
            members.append(try Member(group: configuration, id: MemberID("w\(index)"), store: store))
        }
        // Unstructured on purpose: the worker exits once it has measured, without waiting for 10,000 leaves.
        for member in members { Task { try await member.run() } }
        try await Task.sleep(for: try parseDuration(warmup))
        let server = spec.kind == "PostgreSQL"
        let (trips0, beats0, cpu0, server0, time0) = (store.roundTrips, store.heartbeats, processCPUSeconds(), server ? cpuSeconds(ofProcessesNamed: "postgres") : 0, boottime())
        try await Task.sleep(for: try parseDuration(window))
        let (trips1, beats1, cpu1, server1, time1) = (store.roundTrips, store.heartbeats, processCPUSeconds(), server ? cpuSeconds(ofProcessesNamed: "postgres") : 0, boottime())
        let seconds = Double(time1 - time0) / 1e9
        let rss = residentMB() ?? 0
        var active = 0
        for member in members {
            if case .active = await member.state { active += 1 }
        }
        let cpuPercent = (cpu1 - cpu0) / seconds * 100
        return ScaleResult(
            store: spec.kind, groups: count, heartbeatMilliseconds: heartbeatInterval.milliseconds, windowSeconds: seconds,
            roundTripsPerSecond: Double(trips1 - trips0) / seconds, heartbeatsPerSecond: Double(beats1 - beats0) / seconds,
            cpuPercentOfOneCore: cpuPercent, cpuPercentPerGroup: cpuPercent / Double(count),
            serverCPUPercentOfOneCore: server ? (server1 - server0) / seconds * 100 : nil,
            rssMB: rss, rssBeforeMembersMB: rssBefore, peakRSSMB: residentMB(peak: true) ?? 0, activeAtEnd: active
        )
    }
}

// MARK: roundtrip

struct RoundTripResult: Codable, Sendable {
    var store: String
    var distribution: Distribution?
}

struct RoundTrip: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "roundtrip",
        abstract: "Latency of one heartbeat (a lease renewal) per backend, one at a time, from this process."
    )

    @Option(help: "sqlite, postgres or a store URL; repeatable.")
    var store: [String] = ["sqlite", "postgres"]

    @Option(help: "Heartbeats per store.")
    var samples = 2_000

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.runAll() }
        var results: [RoundTripResult] = []
        for spec in store {
            let target = try BenchStore.resolve(spec)
            results.append(try await measure(target, label: target.kind))
        }
        if json {
            try printJSON(results)
            return
        }
        print("machine: \(MachineInfo.current().summary)")
        print("one renewal heartbeat at a time; ms\n")
        print(table(["store", "n", "p50", "p90", "p99", "max"], results.map { r in
            guard let d = r.distribution else { return [r.store, "0", "-", "-", "-", "-"] }
            return [r.store, "\(d.samples)", String(format: "%.3f", d.p50), String(format: "%.3f", d.p90), String(format: "%.3f", d.p99), String(format: "%.3f", d.max)]
        }))
    }

    private func measure(_ spec: BenchStore, label: String) async throws -> RoundTripResult {
        note("roundtrip: \(label)")
        let store = try await openStore(spec)
        let group = try GroupName("roundtrip-\(UUID().uuidString.prefix(8))")
        let member = try MemberInfo(id: MemberID("rt"), incarnation: UUID().uuidString, host: "bench", pid: getpid())
        func heartbeat(_ phase: MemberPhase, _ intent: Heartbeat.Intent) -> Heartbeat {
            Heartbeat(group: group, activeGoal: 1, activationInterval: .seconds(30), member: member, phase: phase, intent: intent)
        }
        guard case .granted(let token) = try await store.heartbeat(heartbeat(.standby, .acquire)).outcome else {
            throw BenchError("the store did not grant the benchmark's lease")
        }
        for _ in 0..<50 { _ = try await store.heartbeat(heartbeat(.active, .renew(token))) }
        var values: [Double] = []
        values.reserveCapacity(samples)
        for _ in 0..<samples {
            let start = boottime()
            let reply = try await store.heartbeat(heartbeat(.active, .renew(token)))
            values.append(Double(boottime() - start) / 1e6)
            guard reply.outcome == .renewed else { throw BenchError("renewal answered \(reply.outcome)") }
        }
        _ = try await store.heartbeat(heartbeat(.active, .leave(releasing: token)))
        try? await store.close()
        return RoundTripResult(store: label, distribution: Distribution(milliseconds: values))
    }
}
