import UnderstudyCore

/// A kind of fault the queue simulation injects during the fault window of a run.
public enum QueueFault: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A worker process dies (SIGKILL, an OOM kill): the watchdog of each of its commands sees its control pipe
    /// close and kills the command at once. The claims stay on the store until they expire; the worker restarts
    /// later with a new incarnation.
    case crash
    /// A worker process freezes (SIGSTOP, a GC pause, a stopped VM) for 0.5·T–3·T: its inputs wait until it
    /// resumes, its commands keep running, and only their watchdogs kill them at their work deadlines.
    case freeze
    /// A worker is asked to shut down: it claims nothing more, lets its jobs finish within the stop grace, then
    /// stops them and gives their claims back; it is started again later.
    case shutdown
    /// The store is unreachable for everyone for 0.5·T–2·T: half of the calls are refused at once, the others
    /// time out.
    case outage
    /// The store is slow for 0.5·T–3·T: every leg of a round trip takes 0.2–1.5 s more.
    case slow
    /// Round trips lose their request (2%) or their reply (2%), or are late (3%): two thirds answered I–2·I
    /// late, one third held up on the way in until after the caller gave up, and applied then.
    case loss
    /// Workers' clocks run fast or slow by up to ``QueueSimulationOptions/maximumDrift``.
    case drift

    public var description: String { rawValue }
}

/// A deliberately broken piece of the system around the queue core, to prove that the invariant checker catches
/// real bugs. The core itself is never changed.
public enum QueueWeakening: Hashable, Sendable, CustomStringConvertible {
    /// The worker's shell ignores the fence timeline: a `stopJob` for a self-fenced claim is not carried out, and
    /// the watchdog is given no work deadlines, so a job whose claim could not be renewed runs to its end.
    case workerIgnoresFence
    /// The store lets every claim lapse this long before the claim lease the worker asked for (it judges expiry
    /// early), so it hands the job to another worker while the holder still rightly runs it.
    case storeExpiresEarly(by: Duration)
    /// The watchdog is given no work deadlines: only the worker process stops a command (SIGTERM, then SIGKILL
    /// after the stop grace), and a frozen worker stops nothing.
    case watchdogIgnoresDeadlines

    public var description: String {
        switch self {
        case .workerIgnoresFence: "worker-ignores-fence"
        case .storeExpiresEarly(let margin): "store-expires-\(margin.formatted)-early"
        case .watchdogIgnoresDeadlines: "watchdog-ignores-deadlines"
        }
    }
}

/// What to simulate: the workers, the jobs, the store and the faults. Every run of the same options and seed is
/// identical.
public struct QueueSimulationOptions: Hashable, Sendable {
    public var workers: Int
    public var jobs: Int
    /// How many jobs each worker runs at once.
    public var concurrency: Int
    /// T.
    public var claimLease: Duration
    /// I.
    public var renewInterval: Duration
    public var pollInterval: Duration
    /// How long a draining worker lets its jobs run, and how long a command gets between SIGTERM and SIGKILL
    /// (`understudy queue work --stop-grace` sets both).
    public var stopGrace: Duration
    /// The round-trip time of one store call when nothing goes wrong; each leg takes half of a value in range.
    public var storeLatency: ClosedRange<Duration>
    /// How long a store call may take before the worker's store client gives up on it (PostgreSQL's round-trip
    /// timeout, 5 s by default).
    public var callTimeout: Duration
    public var faults: Set<QueueFault>
    /// `nil` for the faithful system.
    public var weakening: QueueWeakening?
    /// How long faults are injected, from the start of the run. `nil` means 8·T.
    public var faultWindow: Duration?
    /// How long after the faults every job must have ended and every claim been given back. `nil` means 40·T.
    public var quietTail: Duration?

    /// The largest clock-rate error with ``QueueFault/drift``: 3%, well inside the I/(2·T) the margins absorb.
    public static let maximumDrift = 0.03

    public init(
        workers: Int = 3,
        jobs: Int = 24,
        concurrency: Int = 2,
        claimLease: Duration = .seconds(3),
        renewInterval: Duration = .seconds(1),
        pollInterval: Duration = .milliseconds(500),
        stopGrace: Duration = .seconds(1),
        storeLatency: ClosedRange<Duration> = .milliseconds(5) ... .milliseconds(200),
        callTimeout: Duration = .seconds(5),
        faults: Set<QueueFault> = Set(QueueFault.allCases),
        weakening: QueueWeakening? = nil,
        faultWindow: Duration? = nil,
        quietTail: Duration? = nil
    ) {
        self.workers = workers
        self.jobs = jobs
        self.concurrency = concurrency
        self.claimLease = claimLease
        self.renewInterval = renewInterval
        self.pollInterval = pollInterval
        self.stopGrace = stopGrace
        self.storeLatency = storeLatency
        self.callTimeout = callTimeout
        self.faults = faults
        self.weakening = weakening
        self.faultWindow = faultWindow
        self.quietTail = quietTail
    }

    /// The configuration of worker `id`'s incarnation; throws when the options cannot make a valid worker.
    public func workerConfiguration(_ worker: WorkerID) throws(QueueSimulationOptionsError) -> QueueWorkerConfiguration {
        guard (1...100).contains(workers) else { throw .workersOutOfRange(workers) }
        guard (1...10_000).contains(jobs) else { throw .jobsOutOfRange(jobs) }
        guard storeLatency.lowerBound >= .zero else { throw .negativeLatency }
        guard callTimeout > .zero else { throw .nonPositiveCallTimeout }
        do {
            return try QueueWorkerConfiguration(
                queue: Self.queue, worker: worker, concurrency: concurrency, claimLease: claimLease,
                renewInterval: renewInterval, pollInterval: pollInterval, stopGrace: stopGrace, retry: Self.retry
            )
        } catch {
            throw .invalidWorker(error)
        }
    }

    /// Validates the options.
    public func validate() throws(QueueSimulationOptionsError) {
        _ = try workerConfiguration(WorkerID(id: Self.probeID, incarnation: "probe"))
    }

    static let queue = try! QueueName("simulated")
    private static let probeID = try! MemberID("w1")
    /// Short backoffs, so that retries happen inside a run: 200 ms doubling up to 2 s.
    static let retry = RetryPolicy(base: .milliseconds(200), maximum: .seconds(2))

    var effectiveFaultWindow: Duration {
        faults.isEmpty ? .zero : (faultWindow ?? claimLease * 8)
    }

    var effectiveQuietTail: Duration { quietTail ?? claimLease * 40 }

    /// I/4: how long before a work deadline the watchdog kills a command (``LeaseTimeline/killMargin``).
    var killMargin: Duration { renewInterval / 4 }
}

public enum QueueSimulationOptionsError: Error, Hashable, Sendable, CustomStringConvertible {
    case workersOutOfRange(Int)
    case jobsOutOfRange(Int)
    case negativeLatency
    case nonPositiveCallTimeout
    case invalidWorker(ConfigurationError)

    public var description: String {
        switch self {
        case .workersOutOfRange(let workers): "invalid worker count \(workers): it must be between 1 and 100"
        case .jobsOutOfRange(let jobs): "invalid job count \(jobs): it must be between 1 and 10000"
        case .negativeLatency: "store latency must not be negative"
        case .nonPositiveCallTimeout: "the call timeout must be positive"
        case .invalidWorker(let error): error.description
        }
    }
}
