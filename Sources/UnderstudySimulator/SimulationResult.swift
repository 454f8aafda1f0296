import UnderstudyCore

/// A property every run must have.
public enum Invariant: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// At every instant, at most the active goal of works act.
    case safetyActiveGoal = "safety-active-goal"
    /// The store never grants a slot while a work that holds an earlier token of that slot still acts, and a work
    /// only ever acts with a token the store granted to its own member process.
    case safetyNoOverlap = "safety-no-overlap"
    /// Every grant carries a larger token than every grant before it.
    case fencing
    /// Once faults stop, the goal is met within ``SimulationOptions/goalBound`` and the group settles (where heavier
    /// members preempt, the best-ranked ones hold the slots) within ``SimulationOptions/settleBound``.
    case liveness
    /// Once settled with no faults, no member activates or deactivates.
    case stability
    /// The store accepts a checkpoint write only from a token that holds a lease of the group valid on the store's
    /// clock at that moment (not one that expired, was released or went to another member),
    /// and never one older than the checkpoint's (with ``SimulationOptions/checkpointWrites``).
    case checkpointFencing = "checkpoint-fencing"

    public var description: String { rawValue }
}

/// An invariant that a run broke, with what led up to it.
public struct InvariantViolation: Hashable, Sendable, CustomStringConvertible {
    public var invariant: Invariant
    /// When, on the simulator's real timeline.
    public var at: Instant
    public var message: String
    /// The newest trace entries up to the violation, oldest first.
    public var recentTrace: [String]

    public var description: String { "\(invariant) violated at \(at): \(message)" }
}

/// What one seed did.
public struct SimulationResult: Hashable, Sendable {
    public var seed: UInt64
    /// The first violation; the run stops there. `nil` when every invariant held.
    public var violation: InvariantViolation?
    /// Identifies the trace: two runs with equal hashes took the same schedule.
    public var traceHash: TraceHash
    public var traceLength: Int
    /// Every period in which fewer works acted than the goal, after the goal was first met: failover times.
    public var shortfalls: [Duration]
    /// From the end of the faults until the goal was met again; `nil` if it never was.
    public var recovery: Duration?
    /// From the end of the faults until the group settled; `nil` if it never did.
    public var settling: Duration?
    /// How many times a work started acting.
    public var activations: Int
    /// How many times an active member was deactivated to make way for a heavier one.
    public var preemptions: Int
    /// How many grants a member gave back without acting on them (a grant that came too late to be vouched for).
    public var unusedGrants: Int
    /// How many times some faults struck: crashes, process crashes, restores, overrunning hooks, and members
    /// whose clock reads before zero (``SimulatedFault/skew``).
    public var injected: [SimulatedFault: Int]
    /// Checkpoint writes the store accepted and refused (with ``SimulationOptions/checkpointWrites``).
    public var checkpointsAccepted: Int
    public var checkpointsRefused: Int
    /// Where the run stopped, on the simulator's real timeline.
    public var end: Instant
}

/// Many seeds of the same options.
public struct SimulationSummary: Hashable, Sendable {
    public var options: SimulationOptions
    public var runs: Int
    /// Runs with a violation, in seed order.
    public var failures: [SimulationResult]
    /// All shortfalls of all runs, sorted.
    public var shortfalls: [Duration]
    /// All recoveries of all runs, sorted.
    public var recoveries: [Duration]
    public var activations: Int
    public var preemptions: Int
    public var unusedGrants: Int
    public var checkpointsAccepted: Int
    public var checkpointsRefused: Int
    /// The ``SimulationResult/injected`` counts of all runs added up.
    public var injected: [SimulatedFault: Int]
    public var violationsByInvariant: [Invariant: Int]
    /// The trace hashes of all runs folded in seed order: equal for two summaries that took the same schedules.
    public var traceHash: TraceHash

    /// Runs every seed of `seeds` with `options` and gathers the results.
    public init(seeds: some Sequence<UInt64>, options: SimulationOptions) throws(SimulationOptionsError) {
        self.options = options
        runs = 0
        failures = []
        shortfalls = []
        recoveries = []
        activations = 0
        preemptions = 0
        unusedGrants = 0
        checkpointsAccepted = 0
        checkpointsRefused = 0
        injected = [:]
        violationsByInvariant = [:]
        traceHash = TraceHash()
        for seed in seeds {
            var simulation = try Simulation(seed: seed, options: options)
            let result = simulation.run()
            runs += 1
            traceHash.combine(result.traceHash.value)
            shortfalls += result.shortfalls
            if let recovery = result.recovery { recoveries.append(recovery) }
            activations += result.activations
            preemptions += result.preemptions
            unusedGrants += result.unusedGrants
            checkpointsAccepted += result.checkpointsAccepted
            checkpointsRefused += result.checkpointsRefused
            injected.merge(result.injected, uniquingKeysWith: +)
            if let violation = result.violation {
                failures.append(result)
                violationsByInvariant[violation.invariant, default: 0] += 1
            }
        }
        shortfalls.sort()
        recoveries.sort()
    }

    /// The nearest-rank percentile (0...100) of sorted `values`; `nil` when empty.
    public static func percentile(_ percent: Int, of values: [Duration]) -> Duration? {
        guard !values.isEmpty else { return nil }
        let rank = max(1, (percent * values.count + 99) / 100)
        return values[min(rank, values.count) - 1]
    }
}
