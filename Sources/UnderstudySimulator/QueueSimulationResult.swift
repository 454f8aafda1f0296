import UnderstudyCore

/// A property every queue run must have.
public enum QueueInvariant: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A job's work (from `startJob` until its command has actually stopped: it returned, or was killed) never
    /// runs in two places at the same instant.
    case exclusiveWork = "exclusive-work"
    /// Every claim of a job carries a larger token than the claims of that job before it, and jobs start in token
    /// order.
    case tokens
    /// No job with an ordering key is claimed or starts while an earlier job of its key is unfinished or its work
    /// still runs anywhere.
    case ordering
    /// Once faults stop, every job ends done or dead within the quiet tail (the job that always fails dead after
    /// its attempts), and no worker or store holds a claim.
    case liveness

    public var description: String { rawValue }
}

/// An invariant that a queue run broke, with what led up to it.
public struct QueueInvariantViolation: Hashable, Sendable, CustomStringConvertible {
    public var invariant: QueueInvariant
    /// When, on the simulator's real timeline.
    public var at: Instant
    public var message: String
    /// The newest trace entries up to the violation, oldest first.
    public var recentTrace: [String]

    public var description: String { "\(invariant) violated at \(at): \(message)" }
}

/// What one seed of the queue simulation did.
public struct QueueSimulationResult: Hashable, Sendable {
    public var seed: UInt64
    /// The first violation; the run stops there. `nil` when every invariant held.
    public var violation: QueueInvariantViolation?
    /// Identifies the trace: two runs with equal hashes took the same schedule.
    public var traceHash: TraceHash
    public var traceLength: Int
    /// For each job that ended: from its enqueueing until it was done or dead, on the store's clock.
    public var completionTimes: [Duration]
    /// How many jobs ended done, and how many dead.
    public var done: Int
    public var dead: Int
    /// Dead jobs other than the one that always fails (their attempts ran out through lost claims).
    public var deadByLostClaims: Int
    /// How many times a job's handler started.
    public var starts: Int
    /// Claims a worker lost (its store said so, or it fenced itself): their outcome was not recorded.
    public var claimsLost: Int
    /// Starts of a job whose previous start ended with no outcome recorded: work done again.
    public var reRuns: Int
    /// Claims given back (shutdown, or a claim that came too late to use).
    public var released: Int
    /// Claims the store granted that the worker dropped because it still held an earlier claim of the same job.
    public var claimsIgnored: Int
    /// Jobs the worker reported lost although the store had recorded their outcome: a renewal sent before the
    /// record and applied after it answered `false`, which ``QueueWorkerStateMachine/renewed(_:sentAt:now:)`` takes
    /// for a lost claim (a wrong "lost" log line and metric; nothing runs twice).
    public var lostButRecorded: Int
    /// How many times each fault struck.
    public var injected: [QueueFault: Int]
    /// Where the run stopped, on the simulator's real timeline.
    public var end: Instant
}

/// Many seeds of the same queue options.
public struct QueueSimulationSummary: Hashable, Sendable {
    public var options: QueueSimulationOptions
    public var runs: Int
    /// Runs with a violation, in seed order.
    public var failures: [QueueSimulationResult]
    /// All completion times of all runs, sorted.
    public var completionTimes: [Duration]
    public var done: Int
    public var dead: Int
    public var deadByLostClaims: Int
    public var starts: Int
    public var claimsLost: Int
    public var reRuns: Int
    public var released: Int
    public var claimsIgnored: Int
    public var lostButRecorded: Int
    public var injected: [QueueFault: Int]
    public var violationsByInvariant: [QueueInvariant: Int]
    /// The trace hashes of all runs folded in seed order.
    public var traceHash: TraceHash

    /// Runs every seed of `seeds` with `options` and gathers the results.
    public init(seeds: some Sequence<UInt64>, options: QueueSimulationOptions) throws(QueueSimulationOptionsError) {
        self.options = options
        runs = 0
        failures = []
        completionTimes = []
        done = 0
        dead = 0
        deadByLostClaims = 0
        starts = 0
        claimsLost = 0
        reRuns = 0
        released = 0
        claimsIgnored = 0
        lostButRecorded = 0
        injected = [:]
        violationsByInvariant = [:]
        traceHash = TraceHash()
        for seed in seeds {
            var simulation = try QueueSimulation(seed: seed, options: options)
            let result = simulation.run()
            runs += 1
            traceHash.combine(result.traceHash.value)
            completionTimes += result.completionTimes
            done += result.done
            dead += result.dead
            deadByLostClaims += result.deadByLostClaims
            starts += result.starts
            claimsLost += result.claimsLost
            reRuns += result.reRuns
            released += result.released
            claimsIgnored += result.claimsIgnored
            lostButRecorded += result.lostButRecorded
            injected.merge(result.injected, uniquingKeysWith: +)
            if let violation = result.violation {
                failures.append(result)
                violationsByInvariant[violation.invariant, default: 0] += 1
            }
        }
        completionTimes.sort()
    }
}
