import ArgumentParser
import Foundation
import Logging
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySQLite
import UnderstudyStore

/// Counts each member's partition heartbeats, and cuts members off (every heartbeat fails), as a crash looks to
/// the store.
final class PartitionCountingStore: PartitionLeaseStore, ChangeAnnouncing {
    let base: any PartitionLeaseStore & ChangeAnnouncing
    private let state = Mutex<(counts: [MemberID: Int], cut: Set<MemberID>)>(([:], []))

    init(_ base: any PartitionLeaseStore & ChangeAnnouncing) { self.base = base }

    func count(of member: MemberID) -> Int { state.withLock { $0.counts[member] ?? 0 } }
    func cut(_ member: MemberID) { state.withLock { _ = $0.cut.insert(member) } }

    func heartbeat(_ heartbeat: PartitionHeartbeat) async throws -> PartitionHeartbeatReply {
        let cut = state.withLock { state in
            state.counts[heartbeat.member.id, default: 0] += 1
            return state.cut.contains(heartbeat.member.id)
        }
        if cut { throw BenchError("cut off") }
        return try await base.heartbeat(heartbeat)
    }

    func changes(of group: GroupName) -> AsyncStream<Void> { base.changes(of: group) }
}

/// From each revocation by rebalancing at the old owner to the assignment at the new one, on the boot clock.
final class HandoverLog: Sendable {
    private let state = Mutex<(revoked: [Int: Int64], milliseconds: [Double])>(([:], []))

    var milliseconds: [Double] { state.withLock { $0.milliseconds } }

    func follow(_ events: AsyncStream<PartitionEvent>) async {
        for await event in events {
            let now = boottime()
            switch event {
            case .revoked(let partition, .rebalanced):
                state.withLock { $0.revoked[partition] = now }
            case .assigned(let partition, _):
                state.withLock { state in
                    if let since = state.revoked.removeValue(forKey: partition) { state.milliseconds.append(Double(now - since) / 1e6) }
                }
            case .revoked, .prepare, .preparationWithdrawn:
                break
            }
        }
    }
}

struct PartitionResult: Codable, Sendable {
    var store: String
    var partitions: Int
    var members: Int
    var rounds: Int
    var heartbeatMilliseconds: Double
    var activationMilliseconds: Double
    /// From the join to a fully owned, balanced group.
    var join: Distribution?
    /// From the crash to a fully owned, balanced group, less T (when the leases allow it).
    var crashAfterLease: Distribution?
    /// From a revocation at the old owner to the assignment at the new one, during joins.
    var handover: Distribution?
    var roundTripsPerMemberPerInterval: Double
    var cpuPercentOfOneCore: Double
    var cpuPercentPer1000Partitions: Double
    var rssMB: Double
    var rssBeforeMembersMB: Double
}

struct PartitionBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "partitions",
        abstract: "P partitions over N in-process members: join and crash rebalance times, handover latency, round trips, CPU and RSS."
    )

    @Option(help: "sqlite, postgres or a store URL.")
    var store = "sqlite"

    @Option(help: "Partitions P.")
    var partitions = 1_024

    @Option(help: "Members N once the newcomer has joined.")
    var members = 16

    @Option(help: "Join-and-crash rounds.")
    var rounds = 5

    @Option(help: "Heartbeat interval I.")
    var heartbeat = "100ms"

    @Option(help: "Activation interval T.")
    var activation = "1s"

    @Option(help: "Steady-state window for round trips, CPU and RSS.")
    var window = "10s"

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.runAll() }
        let target = try BenchStore.resolve(store)
        note("partitions: \(partitions) over \(members) members on \(target.kind)")
        let result = try await measure(target)
        if json {
            try printJSON(result)
            return
        }
        print("machine: \(MachineInfo.current().summary)")
        print("\(partitions) partitions over \(members) members in one process, I = \(heartbeat), T = \(activation), \(rounds) rounds\n")
        func row(_ name: String, _ distribution: Distribution?) -> [String] {
            guard let d = distribution else { return [name, "0", "", "", "", ""] }
            return [name, "\(d.samples)", format(d.p50), format(d.p99), format(d.max), format(d.min)]
        }
        print(table(["ms", "n", "p50", "p99", "max", "min"], [
            row("join → balanced", result.join),
            row("crash → balanced, less T", result.crashAfterLease),
            row("handover (revoked → assigned)", result.handover),
        ]))
        print(String(
            format: "\nsteady state over %@: %.2f round trips per member per interval; CPU %.1f%% of a core (%.2f%% per 1,000 partitions held); RSS %.1f MB (%.1f MB before the members)",
            window, result.roundTripsPerMemberPerInterval, result.cpuPercentOfOneCore, result.cpuPercentPer1000Partitions,
            result.rssMB, result.rssBeforeMembersMB
        ))
    }

    /// A member running, its task, and when it was told what.
    private struct Running {
        var member: PartitionedMember
        var task: Task<Void, any Error>
    }

    private func measure(_ target: BenchStore) async throws -> PartitionResult {
        let heartbeatInterval = try parseDuration(heartbeat)
        let activationInterval = try parseDuration(activation)
        let base: any PartitionLeaseStore & ChangeAnnouncing = target.url.hasPrefix("postgres")
            ? try await PostgresStore(url: target.url)
            : try SQLiteStore(path: String(target.url.dropFirst("sqlite://".count)))
        let store = PartitionCountingStore(base)
        let rssBefore = residentMB() ?? 0
        let group = try GroupName("bench-\(UUID().uuidString.prefix(8).lowercased())")
        let configuration = try PartitionedGroupConfiguration(
            group: GroupConfiguration(name: group, heartbeatInterval: heartbeatInterval, activationInterval: activationInterval),
            partitions: partitions
        )
        let handovers = HandoverLog()
        var running: [MemberID: Running] = [:]
        var serial = 0
        func start() throws {
            serial += 1
            var logger = Logger(label: "understudy-bench")
            logger.logLevel = .warning
            let member = try PartitionedMember(group: configuration, id: MemberID("m\(serial)"), store: store, logger: logger)
            let events = member.events
            Task { await handovers.follow(events) }
            running[member.id] = Running(member: member, task: Task { try await member.run() })
        }
        /// Waits until every partition is owned, once, by a member within its balance bound; returns the time it took.
        func settled(since start: Int64) async throws -> Double {
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                var counts: [Int] = []
                var owned = Set<Int>()
                var total = 0
                for entry in running.values {
                    let partitions = await entry.member.ownedPartitions.keys
                    counts.append(partitions.count)
                    total += partitions.count
                    owned.formUnion(partitions)
                }
                let share = Double(partitions) / Double(running.count)
                let balanced = counts.allSatisfy { (Int(share.rounded(.down)) - 1...Int(share.rounded(.up))).contains($0) }
                if owned.count == partitions, total == partitions, balanced { return Double(boottime() - start) / 1e6 }
                try await Task.sleep(for: .milliseconds(2))
            }
            throw BenchError("the group did not settle within 120 s")
        }

        for _ in 0..<(members - 1) { try start() }
        _ = try await settled(since: boottime())
        var joins: [Double] = []
        var crashes: [Double] = []
        for round in 0..<rounds {
            note("round \(round + 1) of \(rounds)")
            let joinedAt = boottime()
            try start()
            joins.append(try await settled(since: joinedAt))
            // A crash: the member's heartbeats stop reaching the store (its leases and membership run out).
            let victim = running.keys.sorted()[round % running.count]
            let crashedAt = boottime()
            store.cut(victim)
            let entry = running.removeValue(forKey: victim)!
            crashes.append(try await settled(since: crashedAt) - activationInterval.milliseconds)
            entry.task.cancel()
        }
        try start()
        _ = try await settled(since: boottime())

        let windowDuration = try parseDuration(window)
        let ids = Array(running.keys)
        let (counts0, cpu0, time0) = (ids.map(store.count(of:)), processCPUSeconds(), boottime())
        try await Task.sleep(for: windowDuration)
        let (counts1, cpu1, time1) = (ids.map(store.count(of:)), processCPUSeconds(), boottime())
        let seconds = Double(time1 - time0) / 1e9
        let intervals = seconds / (heartbeatInterval.milliseconds / 1_000)
        let perMember = zip(counts0, counts1).map { Double($1 - $0) / intervals }
        let cpu = (cpu1 - cpu0) / seconds * 100
        let rss = residentMB() ?? 0
        for entry in running.values { entry.member.leave() }
        for entry in running.values { try? await entry.task.value }
        return PartitionResult(
            store: target.kind, partitions: partitions, members: members, rounds: rounds,
            heartbeatMilliseconds: heartbeatInterval.milliseconds, activationMilliseconds: activationInterval.milliseconds,
            join: Distribution(milliseconds: joins), crashAfterLease: Distribution(milliseconds: crashes),
            handover: Distribution(milliseconds: handovers.milliseconds),
            roundTripsPerMemberPerInterval: perMember.reduce(0, +) / Double(max(1, perMember.count)),
            cpuPercentOfOneCore: cpu, cpuPercentPer1000Partitions: cpu / (Double(partitions) / 1_000),
            rssMB: rss, rssBeforeMembersMB: rssBefore
        )
    }
}
