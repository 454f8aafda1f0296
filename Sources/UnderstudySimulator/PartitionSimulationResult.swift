import UnderstudyCore

/// A property every partition run must have.
public enum PartitionInvariant: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A member acts on a partition from its `startWork` until its work has stopped. No two members act on one
    /// partition at once, and nobody acts on it with token t once the store has granted it a token larger than t.
    case exclusiveWork = "exclusive-work"
    /// Each partition's grants carry strictly increasing tokens, its work starts in token order (again with the
    /// same token only by the process that kept that lease), and only with a token the store granted that process.
    case tokens
    /// Within T + 2·I of the last fault's effect (the last fault's end, a member joining, a round trip that failed
    /// or was slowed by it), the group is settled: every partition acted on by the owner the assignment gives it,
    /// with its valid lease, and every member agreeing.
    case liveness
    /// From a steady group, a join moves partitions only to the newcomer (at most one between the others) and at
    /// most its share rounded up plus one; a leave or a crash moves only the departed member's partitions; once
    /// settled, member i of weight wᵢ of W holds between ⌊P·wᵢ/W⌋ − 1 and ⌈P·wᵢ/W⌉ partitions.
    case movement
    /// Once settled, with no fault in effect and no membership change, no partition is granted, started or stopped.
    case steadyState = "steady-state"

    public var description: String { rawValue }
}

/// An invariant that a partition run broke, with what led up to it.
public struct PartitionInvariantViolation: Hashable, Sendable, CustomStringConvertible {
    public var invariant: PartitionInvariant
    /// When, on the simulator's real timeline.
    public var at: Instant
    public var message: String
    /// The newest trace entries up to the violation, oldest first.
    public var recentTrace: [String]

    public var description: String { "\(invariant) violated at \(at): \(message)" }
}

/// A membership change of a steady group.
public enum PartitionChangeKind: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case join, leave, crash

    public var description: String { rawValue }
}

/// What one membership change of a steady group moved, and how long the group took to settle again.
public struct PartitionChange: Hashable, Sendable {
    public var kind: PartitionChangeKind
    /// Partitions whose owner changed.
    public var moved: Int
    /// The fewest that had to move: the newcomer's share rounded down, or what the departed member held.
    public var minimum: Int
    /// From the change until every partition was acted on by its new owner.
    public var settledIn: Duration
}

/// What one seed of the partition simulation did.
public struct PartitionSimulationResult: Hashable, Sendable {
    public var seed: UInt64
    /// The first violation; the run stops there. `nil` when every invariant held.
    public var violation: PartitionInvariantViolation?
    /// Identifies the trace: two runs with equal hashes took the same schedule.
    public var traceHash: TraceHash
    public var traceLength: Int
    /// The membership changes of a steady group, in order.
    public var changes: [PartitionChange]
    /// From the last fault's effect until the group settled.
    public var recoveryTime: Duration?
    /// Partitions handed over to another member (told to stop, `rebalanced`).
    public var handovers: Int
    /// Store round trips per live member per heartbeat interval while the group was steady; `nil` if it never was.
    public var heartbeatsPerMemberInterval: Double?
    /// Over every settled state: the most partitions a member held above its share rounded up (≤ 0 when the
    /// bound holds), and the fewest below its share rounded down (≥ −1 when it holds).
    public var worstOverCeiling: Int?
    public var worstUnderFloor: Int?
    /// How many times each fault struck.
    public var injected: [PartitionFault: Int]
    /// Where the run stopped, on the simulator's real timeline.
    public var end: Instant
}

/// Many seeds of the same partition options.
public struct PartitionSimulationSummary: Hashable, Sendable {
    public var options: PartitionSimulationOptions
    public var runs: Int
    /// Runs with a violation, in seed order.
    public var failures: [PartitionSimulationResult]
    public var violationsByInvariant: [PartitionInvariant: Int]
    /// Every membership change of a steady group, over all runs.
    public var changes: [PartitionChange]
    /// Each run's time from the last fault's effect until settled, sorted.
    public var recoveryTimes: [Duration]
    public var handovers: Int
    /// The mean over runs of ``PartitionSimulationResult/heartbeatsPerMemberInterval``.
    public var heartbeatsPerMemberInterval: Double?
    public var worstOverCeiling: Int?
    public var worstUnderFloor: Int?
    public var injected: [PartitionFault: Int]
    /// The trace hashes of all runs folded in seed order.
    public var traceHash: TraceHash

    /// Runs every seed of `seeds` with `options` and gathers the results.
    public init(seeds: some Sequence<UInt64>, options: PartitionSimulationOptions) throws(PartitionSimulationOptionsError) {
        self.options = options
        runs = 0
        failures = []
        violationsByInvariant = [:]
        changes = []
        recoveryTimes = []
        handovers = 0
        var rates: [Double] = []
        injected = [:]
        traceHash = TraceHash()
        for seed in seeds {
            var simulation = try PartitionSimulation(seed: seed, options: options)
            let result = simulation.run()
            runs += 1
            traceHash.combine(result.traceHash.value)
            changes += result.changes
            if let recovery = result.recoveryTime { recoveryTimes.append(recovery) }
            handovers += result.handovers
            if let rate = result.heartbeatsPerMemberInterval { rates.append(rate) }
            if let over = result.worstOverCeiling { worstOverCeiling = max(worstOverCeiling ?? over, over) }
            if let under = result.worstUnderFloor { worstUnderFloor = min(worstUnderFloor ?? under, under) }
            injected.merge(result.injected, uniquingKeysWith: +)
            if let violation = result.violation {
                failures.append(result)
                violationsByInvariant[violation.invariant, default: 0] += 1
            }
        }
        heartbeatsPerMemberInterval = rates.isEmpty ? nil : rates.reduce(0, +) / Double(rates.count)
        recoveryTimes.sort()
    }

    /// The changes of one kind.
    public func changes(_ kind: PartitionChangeKind) -> [PartitionChange] {
        changes.filter { $0.kind == kind }
    }
}
