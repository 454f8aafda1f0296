/// The name of a work queue: 1–128 characters of `A-Z a-z 0-9 . _ -`, as a group name.
public struct QueueName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Validates `rawValue`; throws ``JobError/invalidQueueName(_:)`` when it is not a valid name.
    public init(_ rawValue: String) throws(JobError) {
        guard Identifier.isValid(rawValue, extra: []) else { throw .invalidQueueName(rawValue) }
        self.rawValue = rawValue
    }

    public static func < (lhs: QueueName, rhs: QueueName) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { rawValue }
}

/// A job's identity in its store: positive, and larger for every job enqueued later.
public struct JobID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public static func < (lhs: JobID, rhs: JobID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { String(rawValue) }
}

/// Where a job is in its life.
///
/// ```
/// enqueue ─▶ scheduled ─(run-at)─▶ pending ─(claim)─▶ running ─(complete)─▶ done ─(retention)─▶ deleted
///                ▲                    ▲                 │  │
///                └──(fail: backoff)───┼─────────────────┘  └─(fail, last attempt)─▶ dead ─(redrive)─▶ pending
///                                     └──(release, or the claim lease expired)
/// cancel: scheduled, pending, running or dead ─▶ cancelled ─(retention)─▶ deleted
/// ```
public enum JobState: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Waiting for its run-at instant (a delay, or the backoff after a failed attempt).
    case scheduled
    /// Claimable now.
    case pending
    /// Claimed by a worker whose claim lease runs (an expired claim is claimable again, at once).
    case running
    /// Completed; kept for the retention period, so that its idempotency key still deduplicates.
    case done
    /// Failed its last attempt (or could not be read); kept with its last error until redriven or cancelled.
    case dead
    /// Cancelled before it completed; kept for the retention period.
    case cancelled

    public var description: String { rawValue }

    /// Whether the job has ended: it is never claimed again (unless a dead one is redriven).
    public var isFinished: Bool {
        switch self {
        case .done, .dead, .cancelled: true
        case .scheduled, .pending, .running: false
        }
    }
}

/// What a producer asks to be done: one job of a queue.
public struct JobSpec: Hashable, Sendable {
    /// The largest payload a store accepts by default (1 MiB).
    public static let defaultPayloadLimit = 1 << 20
    /// The longest idempotency or ordering key, in UTF-8 bytes.
    public static let maximumKeyLength = 255
    /// Priorities run from -1,000 to 1,000; a higher priority is claimed first.
    public static let priorities = -1_000...1_000
    /// At most 1,000 attempts.
    public static let attempts = 1...1_000

    public let queue: QueueName
    public let payload: [UInt8]
    public let priority: Int
    /// How long after enqueueing, on the store's clock, the job becomes claimable.
    public let delay: Duration
    public let maxAttempts: Int
    /// Enqueueing a key that a job of the same queue holds (pending, running, or finished and not yet deleted)
    /// returns that job instead of a new one.
    public let idempotencyKey: String?
    /// Jobs of one queue with the same ordering key run one at a time, in the order they were enqueued. A job
    /// holds up the later jobs of its key until it is done, dead or cancelled, so a job that exhausts its attempts
    /// blocks its key only while it is retried, never for ever.
    public let orderingKey: String?

    /// Validates the job; throws ``JobError`` naming the first value out of range.
    public init(
        queue: QueueName,
        payload: [UInt8],
        priority: Int = 0,
        delay: Duration = .zero,
        maxAttempts: Int = 5,
        idempotencyKey: String? = nil,
        orderingKey: String? = nil,
        payloadLimit: Int = JobSpec.defaultPayloadLimit
    ) throws(JobError) {
        guard payload.count <= payloadLimit else { throw .payloadTooLarge(payload.count, limit: payloadLimit) }
        guard Self.priorities.contains(priority) else { throw .priorityOutOfRange(priority) }
        guard delay >= .zero else { throw .negativeDelay(delay) }
        guard Self.attempts.contains(maxAttempts) else { throw .maxAttemptsOutOfRange(maxAttempts) }
        for (name, key) in [("idempotency", idempotencyKey), ("ordering", orderingKey)] {
            guard let key else { continue }
            guard !key.isEmpty, key.utf8.count <= Self.maximumKeyLength else { throw .invalidKey(name: name, key) }
        }
        self.queue = queue
        self.payload = payload
        self.priority = priority
        self.delay = delay
        self.maxAttempts = maxAttempts
        self.idempotencyKey = idempotencyKey
        self.orderingKey = orderingKey
    }
}

/// What enqueueing one job did.
public struct Enqueued: Hashable, Sendable {
    public let id: JobID
    /// Whether a job that already held the idempotency key was returned instead of a new one.
    public let deduplicated: Bool

    public init(id: JobID, deduplicated: Bool) {
        self.id = id
        self.deduplicated = deduplicated
    }
}

/// A worker of a queue, as its claims name it: its id and this run's incarnation.
public struct WorkerID: Hashable, Sendable, CustomStringConvertible {
    public let id: MemberID
    public let incarnation: String

    public init(id: MemberID, incarnation: String) {
        self.id = id
        self.incarnation = incarnation
    }

    /// `id/incarnation`, as a claim row holds it.
    public var description: String { "\(id)/\(incarnation)" }
}

/// One job that a worker claimed: a lease on the job, for one attempt.
public struct JobClaim: Hashable, Sendable {
    public let id: JobID
    public let queue: QueueName
    public let payload: [UInt8]
    /// 1 for the first attempt; a claim given back (``JobQueueLedger/release(_:)``) does not count.
    public let attempt: Int
    public let maxAttempts: Int
    /// Larger for every claim of this job than for any before it: downstream systems reject an older one.
    public let token: FencingToken
    /// How long the job waited between becoming claimable and this claim, on the store's clock.
    public let waited: Duration

    public init(id: JobID, queue: QueueName, payload: [UInt8], attempt: Int, maxAttempts: Int, token: FencingToken, waited: Duration) {
        self.id = id
        self.queue = queue
        self.payload = payload
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.token = token
        self.waited = waited
    }

    /// This claim as renewals, completions and releases name it.
    public var reference: ClaimReference { ClaimReference(id: id, token: token) }
}

/// A claim, by the job and the claim's token.
public struct ClaimReference: Hashable, Sendable, CustomStringConvertible {
    public let id: JobID
    public let token: FencingToken

    public init(id: JobID, token: FencingToken) {
        self.id = id
        self.token = token
    }

    public var description: String { "job \(id) token \(token)" }
}

/// How a worker ended one attempt of a job.
public enum JobOutcome: Hashable, Sendable {
    /// The job is done.
    case completed(ClaimReference)
    /// The attempt failed with `error`; the job is retried after `retryAfter` unless that was its last attempt.
    case failed(ClaimReference, error: String, retryAfter: Duration)

    public var claim: ClaimReference {
        switch self {
        case .completed(let claim), .failed(let claim, _, _): claim
        }
    }
}

/// What the store made of one ``JobOutcome``.
public enum OutcomeReply: Hashable, Sendable {
    /// Recorded: the job is now in this state (done, scheduled for a retry, or dead).
    case recorded(JobState)
    /// The claim is no longer the job's (it expired and the job was claimed again, or was cancelled): nothing
    /// was recorded, and the worker has lost the job.
    case stale
}

/// A job as `queue list` shows it.
public struct JobRecord: Hashable, Sendable {
    public let id: JobID
    public let queue: QueueName
    public let state: JobState
    public let priority: Int
    public let attempt: Int
    public let maxAttempts: Int
    public let idempotencyKey: String?
    public let orderingKey: String?
    /// The error of the last failed attempt, or why the job went to the dead letter.
    public let lastError: String?
    public let payloadSize: Int
    /// How long ago, on the store's clock, the job was enqueued.
    public let age: Duration

    public init(
        id: JobID, queue: QueueName, state: JobState, priority: Int, attempt: Int, maxAttempts: Int,
        idempotencyKey: String?, orderingKey: String?, lastError: String?, payloadSize: Int, age: Duration
    ) {
        self.id = id
        self.queue = queue
        self.state = state
        self.priority = priority
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.idempotencyKey = idempotencyKey
        self.orderingKey = orderingKey
        self.lastError = lastError
        self.payloadSize = payloadSize
        self.age = age
    }
}

/// How many jobs of one queue are in each state, and how long the oldest pending one has waited.
public struct QueueStats: Hashable, Sendable {
    public let queue: QueueName
    public let counts: [JobState: Int]
    /// How long the oldest claimable job has waited since it became claimable; `nil` when none waits.
    public let oldestPendingAge: Duration?

    public init(queue: QueueName, counts: [JobState: Int], oldestPendingAge: Duration?) {
        self.queue = queue
        self.counts = counts
        self.oldestPendingAge = oldestPendingAge
    }

    public func count(_ state: JobState) -> Int { counts[state] ?? 0 }
}

/// A job or queue request that cannot be valid.
public enum JobError: Error, Hashable, Sendable, CustomStringConvertible {
    case invalidQueueName(String)
    case payloadTooLarge(Int, limit: Int)
    case priorityOutOfRange(Int)
    case negativeDelay(Duration)
    case maxAttemptsOutOfRange(Int)
    case invalidKey(name: String, String)
    case invalidSchedule(String, String)

    public var description: String {
        switch self {
        case .invalidQueueName(let name):
            "invalid queue name \"\(name)\": use 1 to 128 characters of A-Z a-z 0-9 . _ -"
        case .payloadTooLarge(let size, let limit):
            "payload of \(size) bytes is larger than the limit of \(limit) bytes"
        case .priorityOutOfRange(let priority):
            "invalid priority \(priority): it must be between \(JobSpec.priorities.lowerBound) and \(JobSpec.priorities.upperBound)"
        case .negativeDelay(let delay):
            "invalid delay \(delay.formatted): it must not be negative"
        case .maxAttemptsOutOfRange(let attempts):
            "invalid max attempts \(attempts): it must be between 1 and \(JobSpec.attempts.upperBound)"
        case .invalidSchedule(let schedule, let problem):
            "invalid schedule \"\(schedule)\": \(problem) (use \"@every 30s\" or a cron expression such as \"*/5 * * * *\")"
        case .invalidKey(let name, let key):
            "invalid \(name) key \"\(key.prefix(40))\(key.count > 40 ? "…" : "")\": use 1 to \(JobSpec.maximumKeyLength) bytes"
        }
    }
}
