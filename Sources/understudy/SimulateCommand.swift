import ArgumentParser
import Foundation
import Understudy
import UnderstudyCore
import UnderstudySimulator

/// `understudy simulate`: runs the real core against a simulated store, clocks and faults, checks the invariants
/// and shows how long failovers take, in virtual time. A what-if tool for choosing intervals.
struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Simulate a group under faults: check the invariants and measure failover time.",
        discussion: """
            Runs the real member state machines against a simulated store with a virtual clock. Every random \
            choice comes from the seed, so a seed replays exactly. Failover time is the length of each period in \
            which fewer members act than the active goal, in virtual time. The store judges leases on a store \
            clock as PostgreSQL does, so clock-step (its wall clock steps by up to hours) models PostgreSQL; \
            SQLite's clock does not step. Exits with status 1 when an invariant is violated and prints the \
            command that replays the failing seed.

            With --queue it simulates a work queue instead: --workers real queue workers claim, renew and record \
            --jobs jobs (some with ordering keys, some failing a few times, one always failing) on a simulated \
            store under crash, freeze, shutdown, outage, slow, loss and drift faults, and shows job completion \
            times, claims lost and jobs re-run. --store-latency, --call-timeout, --faults, --seeds, --seed and \
            --json apply to both; the group options are ignored with --queue.

            With --partitions P it simulates a partitioned group instead: --members real partitioned members \
            (joined by heavier ones) share P partitions under crash, freeze, isolate, outage, slow, join, leave \
            and delay faults, and shows partitions moved per join, leave and crash, balance, and takeover times. \
            --members, --heartbeat, --activation, --store-latency, --call-timeout, --faults, --seeds, --seed and \
            --json apply.
            """
    )

    @Option(help: "Members in the group.")
    var members = 3

    @Option(name: .customLong("active-goal"), help: "How many members should be active at once.")
    var activeGoal = 1

    @Option(parsing: .unconditional, help: "Heartbeat interval I, such as 1s or 500ms.")
    var heartbeat = "1s"

    @Option(parsing: .unconditional, help: "Activation interval T (greater than 2·I).")
    var activation = "3s"

    @Option(parsing: .unconditional, help: "Preparation interval P (0 < P < T): when an active has been silent this long, the next in line prepares.")
    var preparation: String?

    @Flag(name: .customLong("no-preempt"), help: "A heavier member does not take over from an active one.")
    var noPreempt = false

    @Option(name: .customLong("store-latency"), parsing: .unconditional, help: "Round-trip time of a store call, as a range: 5ms..200ms.")
    var storeLatency = "5ms..200ms"

    @Option(name: .customLong("slow-member-latency"), parsing: .unconditional, help: "Round-trip time of member m1's store calls, as a range, when it is slower than the others.")
    var slowMemberLatency: String?

    @Option(name: .customLong("call-timeout"), parsing: .unconditional, help: "How long a member waits for a store round trip before giving up (PostgreSQL's default: 5s).")
    var callTimeout = "5s"

    @Option(name: .customLong("store-model"), help: "\(StoreModel.allCases.map(\.rawValue).joined(separator: " or ")).")
    var storeModel = StoreModel.singleStore.rawValue

    @Option(help: "Faults to inject, comma-separated, or all or none: \(SimulatedFault.allCases.map(\.rawValue).joined(separator: ",")).")
    var faults = "all"

    @Option(help: "How many seeds to run (seeds 1 to N).")
    var seeds = 1_000

    @Option(help: "Run this seed only, and show its trace when it fails.")
    var seed: UInt64?

    @Flag(help: "Print the results as JSON.")
    var json = false

    @Flag(help: "Simulate a work queue's workers and claims instead of a group.")
    var queue = false

    @Option(help: "With --queue: how many workers.")
    var workers = 3

    @Option(help: "With --queue: how many jobs.")
    var jobs = 24

    @Option(help: "With --queue: how many jobs each worker runs at once.")
    var concurrency = 2

    @Option(name: .customLong("claim-lease"), parsing: .unconditional, help: "With --queue: the claim lease T.")
    var claimLease = "3s"

    @Option(parsing: .unconditional, help: "With --queue: the renew interval I (T/3 by default; T > 2·I).")
    var renew: String?

    @Option(help: "Simulate a partitioned group of P partitions instead of a group of slots.")
    var partitions: Int?

    func validate() throws {
        if partitions != nil {
            _ = try partitionOptions()
        } else if queue {
            _ = try queueOptions()
        } else {
            _ = try simulationOptions()
        }
        guard seeds >= 1 else { throw ValidationError("invalid --seeds \(seeds): run at least one seed") }
    }

    func run() throws {
        if partitions != nil { return try runPartitions() }
        if queue { return try runQueue() }
        let options = try simulationOptions()
        let seedRange: [UInt64] = seed.map { [$0] } ?? Array(1...UInt64(seeds))
        let summary: SimulationSummary
        do {
            summary = try SimulationSummary(seeds: seedRange, options: options)
        } catch {
            throw ValidationError(error.description)
        }
        if json {
            try printJSON(summary)
        } else {
            printText(summary)
        }
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }

    // MARK: Options

    private func simulationOptions() throws -> SimulationOptions {
        let options = SimulationOptions(
            members: members,
            activeGoal: activeGoal,
            heartbeatInterval: try duration(heartbeat, option: "--heartbeat"),
            activationInterval: try duration(activation, option: "--activation"),
            preparationInterval: try preparation.map { try duration($0, option: "--preparation") },
            preemption: !noPreempt,
            storeLatency: try latencyRange(storeLatency, option: "--store-latency"),
            slowMemberLatency: try slowMemberLatency.map { try latencyRange($0, option: "--slow-member-latency") },
            callTimeout: try duration(callTimeout, option: "--call-timeout"),
            faults: try faultSet(),
            storeModel: try model()
        )
        do {
            _ = try options.groupConfiguration()
        } catch {
            throw ValidationError(error.description)
        }
        return options
    }

    private func duration(_ text: String, option: String) throws -> Duration {
        do {
            return try parseDuration(text)
        } catch {
            throw ValidationError("\(option): \(error)")
        }
    }

    private func latencyRange(_ text: String, option: String) throws -> ClosedRange<Duration> {
        let bounds = text.split(separator: "..", omittingEmptySubsequences: false)
        guard bounds.count == 2 else {
            throw ValidationError("\(option): invalid range \"\(text)\": write two durations joined by .., such as 5ms..200ms")
        }
        let lower = try duration(String(bounds[0]), option: option)
        let upper = try duration(String(bounds[1]), option: option)
        guard lower <= upper else {
            throw ValidationError("\(option): invalid range \"\(text)\": the lower bound is above the upper bound")
        }
        return lower...upper
    }

    private func faultSet() throws -> Set<SimulatedFault> {
        switch faults {
        case "all": return Set(SimulatedFault.allCases)
        case "none", "": return []
        default: break
        }
        var set: Set<SimulatedFault> = []
        for name in faults.split(separator: ",") {
            guard let fault = SimulatedFault(rawValue: String(name)) else {
                let valid = SimulatedFault.allCases.map(\.rawValue).joined(separator: ", ")
                throw ValidationError("--faults: unknown fault \"\(name)\"; valid faults are \(valid), or all or none")
            }
            set.insert(fault)
        }
        return set
    }

    private func model() throws -> StoreModel {
        guard let model = StoreModel(rawValue: storeModel) else {
            let valid = StoreModel.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("--store-model: unknown store model \"\(storeModel)\"; valid models are \(valid)")
        }
        return model
    }

    /// The command that runs `seed` again with exactly these options.
    private func replayCommand(seed: UInt64) -> String {
        [
            "understudy simulate --seed \(seed)",
            "--members \(members)",
            "--active-goal \(activeGoal)",
            "--heartbeat \(heartbeat)",
            "--activation \(activation)",
            preparation.map { "--preparation \($0)" },
            noPreempt ? "--no-preempt" : nil,
            "--store-latency \(storeLatency)",
            slowMemberLatency.map { "--slow-member-latency \($0)" },
            "--call-timeout \(callTimeout)",
            "--store-model \(storeModel)",
            "--faults \(faults.isEmpty ? "none" : faults)",
        ].compactMap { $0 }.joined(separator: " ")
    }

    // MARK: Output

    private func printText(_ summary: SimulationSummary) {
        let options = summary.options
        let faultNames = options.faults.isEmpty ? "none" : SimulatedFault.allCases.filter(options.faults.contains).map(\.rawValue).joined(separator: ",")
        print(
            "simulated \(summary.runs) seed\(summary.runs == 1 ? "" : "s"): \(options.members) members, active goal \(options.activeGoal), "
                + "heartbeat \(options.heartbeatInterval.formatted), activation \(options.activationInterval.formatted), "
                + "store latency \(storeLatency)" + (slowMemberLatency.map { " (m1: \($0))" } ?? "")
                + ", call timeout \(options.callTimeout.formatted), \(options.storeModel), faults \(faultNames)"
        )
        print("invariants:")
        for invariant in Invariant.allCases {
            let count = summary.violationsByInvariant[invariant] ?? 0
            let status = count == 0 ? "held" : "VIOLATED in \(count) seed\(count == 1 ? "" : "s")"
            print("  \(invariant.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0)) \(status)")
        }
        print("  liveness bounds: goal met within \(options.goalBound.formatted), settled within \(options.settleBound.formatted) of the faults stopping")
        print("failover time (periods below the goal): " + distribution(summary.shortfalls))
        print("recovery once faults stop:              " + distribution(summary.recoveries))
        print("activations: \(summary.activations); actives preempted by a heavier member: \(summary.preemptions); grants given back unused (too late): \(summary.unusedGrants)")
        if let result = summary.failures.first, let violation = result.violation {
            print("")
            print("seed \(result.seed): \(violation)")
            print("last events:")
            for line in violation.recentTrace { print("  \(line)") }
            print("replay: \(replayCommand(seed: result.seed))")
            if summary.failures.count > 1 {
                print("failing seeds: " + summary.failures.prefix(20).map { String($0.seed) }.joined(separator: " "))
            }
        }
        print("trace hash: \(summary.traceHash)")
    }

    private func distribution(_ values: [Duration]) -> String {
        guard let p50 = SimulationSummary.percentile(50, of: values),
            let p99 = SimulationSummary.percentile(99, of: values),
            let max = values.last
        else { return "none observed" }
        return "p50 \(p50.formatted), p99 \(p99.formatted), max \(max.formatted) (n=\(values.count))"
    }

    private func printJSON(_ summary: SimulationSummary) throws {
        struct Report: Encodable {
            var seeds: Int
            var invariants: [String: Int]
            var goalBoundNanoseconds: Int64
            var settleBoundNanoseconds: Int64
            var failover: SimulationDistributionJSON
            var recovery: SimulationDistributionJSON
            var unusedGrants: Int
            var failures: [SimulationFailureJSON]
            var traceHash: String
        }
        let report = Report(
            seeds: summary.runs,
            invariants: Dictionary(uniqueKeysWithValues: Invariant.allCases.map { ($0.rawValue, summary.violationsByInvariant[$0] ?? 0) }),
            goalBoundNanoseconds: summary.options.goalBound.nanoseconds,
            settleBoundNanoseconds: summary.options.settleBound.nanoseconds,
            failover: SimulationDistributionJSON(summary.shortfalls),
            recovery: SimulationDistributionJSON(summary.recoveries),
            unusedGrants: summary.unusedGrants,
            failures: summary.failures.compactMap { result in
                result.violation.map {
                    SimulationFailureJSON(
                        seed: result.seed,
                        invariant: $0.invariant.rawValue,
                        atNanoseconds: $0.at.nanoseconds,
                        message: $0.message,
                        lastEvents: $0.recentTrace,
                        replay: replayCommand(seed: result.seed)
                    )
                }
            },
            traceHash: summary.traceHash.description
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }
}

// MARK: - Queue claims

extension Simulate {
    private func runQueue() throws {
        let options = try queueOptions()
        let seedRange: [UInt64] = seed.map { [$0] } ?? Array(1...UInt64(seeds))
        let summary: QueueSimulationSummary
        do {
            summary = try QueueSimulationSummary(seeds: seedRange, options: options)
        } catch {
            throw ValidationError(error.description)
        }
        if json {
            try printQueueJSON(summary)
        } else {
            printQueueText(summary)
        }
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }

    private func queueOptions() throws -> QueueSimulationOptions {
        let lease = try duration(claimLease, option: "--claim-lease")
        let options = QueueSimulationOptions(
            workers: workers,
            jobs: jobs,
            concurrency: concurrency,
            claimLease: lease,
            renewInterval: try renew.map { try duration($0, option: "--renew") } ?? lease / 3,
            storeLatency: try latencyRange(storeLatency, option: "--store-latency"),
            callTimeout: try duration(callTimeout, option: "--call-timeout"),
            faults: try queueFaultSet()
        )
        do {
            try options.validate()
        } catch {
            throw ValidationError(error.description)
        }
        return options
    }

    private func queueFaultSet() throws -> Set<QueueFault> {
        try Self.faultSet(faults, kind: "queue", mode: "--queue")
    }

    /// The faults `--faults` names: `all`, `none`, or a comma-separated list of `Fault`'s raw values.
    static func faultSet<Fault: CaseIterable & RawRepresentable & Hashable>(
        _ names: String, kind: String, mode: String
    ) throws -> Set<Fault> where Fault.RawValue == String {
        switch names {
        case "all": return Set(Fault.allCases)
        case "none", "": return []
        default: break
        }
        var set: Set<Fault> = []
        for name in names.split(separator: ",") {
            guard let fault = Fault(rawValue: String(name)) else {
                let valid = Fault.allCases.map(\.rawValue).joined(separator: ", ")
                throw ValidationError("--faults: unknown \(kind) fault \"\(name)\"; valid faults with \(mode) are \(valid), or all or none")
            }
            set.insert(fault)
        }
        return set
    }

    /// The command that runs `seed` of the queue simulation again with exactly these options.
    private func queueReplayCommand(seed: UInt64) -> String {
        [
            "understudy simulate --queue --seed \(seed)",
            "--workers \(workers)",
            "--jobs \(jobs)",
            "--concurrency \(concurrency)",
            "--claim-lease \(claimLease)",
            renew.map { "--renew \($0)" },
            "--store-latency \(storeLatency)",
            "--call-timeout \(callTimeout)",
            "--faults \(faults.isEmpty ? "none" : faults)",
        ].compactMap { $0 }.joined(separator: " ")
    }

    private func printQueueText(_ summary: QueueSimulationSummary) {
        let options = summary.options
        let faultNames = options.faults.isEmpty ? "none" : QueueFault.allCases.filter(options.faults.contains).map(\.rawValue).joined(separator: ",")
        print(
            "simulated \(summary.runs) seed\(summary.runs == 1 ? "" : "s") of a work queue: \(options.workers) workers × \(options.concurrency), "
                + "\(options.jobs) jobs, claim lease \(options.claimLease.formatted), renew \(options.renewInterval.formatted), "
                + "store latency \(storeLatency), call timeout \(options.callTimeout.formatted), faults \(faultNames)"
        )
        print("invariants:")
        for invariant in QueueInvariant.allCases {
            let count = summary.violationsByInvariant[invariant] ?? 0
            let status = count == 0 ? "held" : "VIOLATED in \(count) seed\(count == 1 ? "" : "s")"
            print("  \(invariant.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0)) \(status)")
        }
        print("  liveness bound: every job done or dead, and no claim held, within \((options.quietTail ?? options.claimLease * 40).formatted) of the faults stopping")
        print("violations: \(summary.failures.count) of \(summary.runs) seeds")
        print("job completion time (enqueued to done or dead): " + distribution(summary.completionTimes))
        print("jobs: \(summary.done) done, \(summary.dead) dead (\(summary.deadByLostClaims) other than the always-failing one, through lost claims)")
        print("starts: \(summary.starts); jobs re-run (previous start's outcome never recorded): \(summary.reRuns); claims lost: \(summary.claimsLost); claims given back: \(summary.released); claims dropped (an earlier claim of the job still held): \(summary.claimsIgnored)")
        if summary.lostButRecorded > 0 {
            print("jobs reported lost although their outcome was recorded (a renewal applied after the record): \(summary.lostButRecorded)")
        }
        let struck = QueueFault.allCases.compactMap { fault in summary.injected[fault].map { "\(fault) \($0)" } }
        if !struck.isEmpty { print("faults struck: " + struck.joined(separator: ", ")) }
        if let result = summary.failures.first, let violation = result.violation {
            print("")
            print("seed \(result.seed): \(violation)")
            print("last events:")
            for line in violation.recentTrace { print("  \(line)") }
            print("replay: \(queueReplayCommand(seed: result.seed))")
            if summary.failures.count > 1 {
                print("failing seeds: " + summary.failures.prefix(20).map { String($0.seed) }.joined(separator: " "))
            }
        }
        print("trace hash: \(summary.traceHash)")
    }

    private func printQueueJSON(_ summary: QueueSimulationSummary) throws {
        struct Report: Encodable {
            var seeds: Int
            var invariants: [String: Int]
            var completion: SimulationDistributionJSON
            var done: Int
            var dead: Int
            var deadByLostClaims: Int
            var starts: Int
            var reRuns: Int
            var claimsLost: Int
            var claimsReleased: Int
            var claimsDropped: Int
            var lostButRecorded: Int
            var failures: [SimulationFailureJSON]
            var traceHash: String
        }
        let report = Report(
            seeds: summary.runs,
            invariants: Dictionary(uniqueKeysWithValues: QueueInvariant.allCases.map { ($0.rawValue, summary.violationsByInvariant[$0] ?? 0) }),
            completion: SimulationDistributionJSON(summary.completionTimes),
            done: summary.done,
            dead: summary.dead,
            deadByLostClaims: summary.deadByLostClaims,
            starts: summary.starts,
            reRuns: summary.reRuns,
            claimsLost: summary.claimsLost,
            claimsReleased: summary.released,
            claimsDropped: summary.claimsIgnored,
            lostButRecorded: summary.lostButRecorded,
            failures: summary.failures.compactMap { result in
                result.violation.map {
                    SimulationFailureJSON(
                        seed: result.seed, invariant: $0.invariant.rawValue, atNanoseconds: $0.at.nanoseconds,
                        message: $0.message, lastEvents: $0.recentTrace, replay: queueReplayCommand(seed: result.seed)
                    )
                }
            },
            traceHash: summary.traceHash.description
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }
}

// MARK: - Partitioned groups

extension Simulate {
    private func runPartitions() throws {
        let options = try partitionOptions()
        let seedRange: [UInt64] = seed.map { [$0] } ?? Array(1...UInt64(seeds))
        let summary: PartitionSimulationSummary
        do {
            summary = try PartitionSimulationSummary(seeds: seedRange, options: options)
        } catch {
            throw ValidationError(error.description)
        }
        if json {
            try printPartitionJSON(summary)
        } else {
            printPartitionText(summary)
        }
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }

    private func partitionOptions() throws -> PartitionSimulationOptions {
        let options = PartitionSimulationOptions(
            members: members,
            partitions: partitions ?? 1,
            heartbeatInterval: try duration(heartbeat, option: "--heartbeat"),
            activationInterval: try duration(activation, option: "--activation"),
            storeLatency: try latencyRange(storeLatency, option: "--store-latency"),
            callTimeout: try duration(callTimeout, option: "--call-timeout"),
            faults: try partitionFaultSet()
        )
        do {
            _ = try options.configuration()
        } catch {
            throw ValidationError(error.description)
        }
        return options
    }

    private func partitionFaultSet() throws -> Set<PartitionFault> {
        try Self.faultSet(faults, kind: "partition", mode: "--partitions")
    }

    /// The command that runs `seed` of the partition simulation again with exactly these options.
    private func partitionReplayCommand(seed: UInt64) -> String {
        [
            "understudy simulate --partitions \(partitions ?? 1) --seed \(seed)",
            "--members \(members)",
            "--heartbeat \(heartbeat)",
            "--activation \(activation)",
            "--store-latency \(storeLatency)",
            "--call-timeout \(callTimeout)",
            "--faults \(faults.isEmpty ? "none" : faults)",
        ].joined(separator: " ")
    }

    private func printPartitionText(_ summary: PartitionSimulationSummary) {
        let options = summary.options
        let faultNames = options.faults.isEmpty ? "none" : PartitionFault.allCases.filter(options.faults.contains).map(\.rawValue).joined(separator: ",")
        print(
            "simulated \(summary.runs) seed\(summary.runs == 1 ? "" : "s") of a partitioned group: \(options.members) members, "
                + "\(options.partitions) partitions, heartbeat \(options.heartbeatInterval.formatted), activation \(options.activationInterval.formatted), "
                + "store latency \(storeLatency), call timeout \(options.callTimeout.formatted), faults \(faultNames)"
        )
        print("invariants:")
        for invariant in PartitionInvariant.allCases {
            let count = summary.violationsByInvariant[invariant] ?? 0
            let status = count == 0 ? "held" : "VIOLATED in \(count) seed\(count == 1 ? "" : "s")"
            print("  \(invariant.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0)) \(status)")
        }
        print("  liveness bound: settled within T + 2·I = \(options.livenessBound.formatted) of the last fault's effect")
        print("violations: \(summary.failures.count) of \(summary.runs) seeds")
        for kind in PartitionChangeKind.allCases {
            let changes = summary.changes(kind)
            guard !changes.isEmpty else { continue }
            let moved = changes.map(\.moved).reduce(0, +)
            let minimum = changes.map(\.minimum).reduce(0, +)
            print("\(kind) of a steady group (\(changes.count)): \(moved) partitions moved (at least \(minimum) had to); settled in " + distribution(changes.map(\.settledIn).sorted()))
        }
        print("recovery (last fault's effect to settled): " + distribution(summary.recoveryTimes))
        if let over = summary.worstOverCeiling, let under = summary.worstUnderFloor {
            print("balance: at most \(over) above a share rounded up, at least \(under) below a share rounded down (bound: 0 and -1)")
        }
        if let rate = summary.heartbeatsPerMemberInterval {
            print("store round trips per member per interval in a steady group: " + String(Double(Int(rate * 100)) / 100))
        }
        print("handovers: \(summary.handovers)")
        let struck = PartitionFault.allCases.compactMap { fault in summary.injected[fault].map { "\(fault) \($0)" } }
        if !struck.isEmpty { print("faults struck: " + struck.joined(separator: ", ")) }
        if let result = summary.failures.first, let violation = result.violation {
            print("")
            print("seed \(result.seed): \(violation)")
            print("last events:")
            for line in violation.recentTrace { print("  \(line)") }
            print("replay: \(partitionReplayCommand(seed: result.seed))")
            if summary.failures.count > 1 {
                print("failing seeds: " + summary.failures.prefix(20).map { String($0.seed) }.joined(separator: " "))
            }
        }
        print("trace hash: \(summary.traceHash)")
    }

    private func printPartitionJSON(_ summary: PartitionSimulationSummary) throws {
        struct Changes: Encodable {
            var count: Int
            var moved: Int
            var minimum: Int
            var settled: SimulationDistributionJSON
        }
        struct Report: Encodable {
            var seeds: Int
            var invariants: [String: Int]
            var changes: [String: Changes]
            var recovery: SimulationDistributionJSON
            var worstOverCeiling: Int?
            var worstUnderFloor: Int?
            var heartbeatsPerMemberInterval: Double?
            var handovers: Int
            var failures: [SimulationFailureJSON]
            var traceHash: String
        }
        let report = Report(
            seeds: summary.runs,
            invariants: Dictionary(uniqueKeysWithValues: PartitionInvariant.allCases.map { ($0.rawValue, summary.violationsByInvariant[$0] ?? 0) }),
            changes: Dictionary(uniqueKeysWithValues: PartitionChangeKind.allCases.map { kind in
                let changes = summary.changes(kind)
                return (kind.rawValue, Changes(
                    count: changes.count, moved: changes.map(\.moved).reduce(0, +), minimum: changes.map(\.minimum).reduce(0, +),
                    settled: SimulationDistributionJSON(changes.map(\.settledIn).sorted())
                ))
            }),
            recovery: SimulationDistributionJSON(summary.recoveryTimes),
            worstOverCeiling: summary.worstOverCeiling,
            worstUnderFloor: summary.worstUnderFloor,
            heartbeatsPerMemberInterval: summary.heartbeatsPerMemberInterval,
            handovers: summary.handovers,
            failures: summary.failures.compactMap { result in
                result.violation.map {
                    SimulationFailureJSON(
                        seed: result.seed, invariant: $0.invariant.rawValue, atNanoseconds: $0.at.nanoseconds,
                        message: $0.message, lastEvents: $0.recentTrace, replay: partitionReplayCommand(seed: result.seed)
                    )
                }
            },
            traceHash: summary.traceHash.description
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }
}

/// A p50/p99/max distribution in `--json` output.
private struct SimulationDistributionJSON: Encodable {
    var count: Int
    var p50Nanoseconds: Int64?
    var p99Nanoseconds: Int64?
    var maxNanoseconds: Int64?
}

extension SimulationDistributionJSON {
    init(_ values: [Duration]) {
        self.init(
            count: values.count,
            p50Nanoseconds: SimulationSummary.percentile(50, of: values)?.nanoseconds,
            p99Nanoseconds: SimulationSummary.percentile(99, of: values)?.nanoseconds,
            maxNanoseconds: values.last?.nanoseconds
        )
    }
}

/// A failing seed in `--json` output.
private struct SimulationFailureJSON: Encodable {
    var seed: UInt64
    var invariant: String
    var atNanoseconds: Int64
    var message: String
    var lastEvents: [String]
    var replay: String
}
