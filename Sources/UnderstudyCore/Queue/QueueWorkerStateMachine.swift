/// The timing and capacity of one worker of a work queue.
///
/// - ``claimLease`` (T): how long a claim lasts on the store's clock without renewal; T > 2·I.
/// - ``renewInterval`` (I): how often the worker renews all its claims, in one round trip.
/// - A job whose claim has not been confirmed for T − I is stopped (the worker fences itself, as a group member
///   does), and its command killed by T − 3I/4, so it has stopped before the store can hand the job to another.
public struct QueueWorkerConfiguration: Hashable, Sendable {
    public let queue: QueueName
    public let worker: WorkerID
    /// How many jobs run at once (1 … 1,000).
    public let concurrency: Int
    public let claimLease: Duration
    public let renewInterval: Duration
    /// How often an idle worker looks for jobs when no announcement wakes it.
    public let pollInterval: Duration
    /// How long running jobs may go on after shutdown is asked before they are stopped and given back.
    public let stopGrace: Duration
    public let retry: RetryPolicy

    public static let concurrencies = 1...1_000

    /// Validates the configuration; throws ``ConfigurationError`` naming the first value out of range.
    public init(
        queue: QueueName,
        worker: WorkerID,
        concurrency: Int = 1,
        claimLease: Duration = .seconds(30),
        renewInterval: Duration? = nil,
        pollInterval: Duration = .seconds(1),
        stopGrace: Duration = .seconds(10),
        retry: RetryPolicy = RetryPolicy()
    ) throws(ConfigurationError) {
        guard Self.concurrencies.contains(concurrency) else { throw .concurrencyOutOfRange(concurrency) }
        let renewInterval = renewInterval ?? claimLease / 3
        for (name, value) in [("claim lease", claimLease), ("renew", renewInterval), ("poll", pollInterval)] where value <= .zero {
            throw .nonPositiveInterval(name: name, value)
        }
        guard stopGrace >= .zero else { throw .nonPositiveInterval(name: "stop grace", stopGrace) }
        guard claimLease > renewInterval * 2 else {
            throw .activationNotAboveTwiceHeartbeat(heartbeat: renewInterval, activation: claimLease)
        }
        self.queue = queue
        self.worker = worker
        self.concurrency = concurrency
        self.claimLease = claimLease
        self.renewInterval = renewInterval
        self.pollInterval = pollInterval
        self.stopGrace = stopGrace
        self.retry = retry
    }

    /// The timeline of a claim confirmed by a round trip sent at `sentAt`.
    public func timeline(sentAt: Instant) -> LeaseTimeline {
        LeaseTimeline(confirmedSentAt: sentAt, heartbeatInterval: renewInterval, activationInterval: claimLease)
    }
}

/// One worker of a work queue, as a sans-IO state machine: when to claim, renew, record and give back, and when
/// each job must start and stop.
///
/// Every claim keeps the ``LeaseTimeline`` of its newest confirmed renewal, as a group slot does: its job is
/// stopped at `s + T − I` when no renewal was confirmed since `s`, and must be dead by `s + T − I/2`, so it has
/// stopped before the store hands the job to another worker. Each method is named after what happened and returns
/// the ``Action``s to carry out, in order; a report about a job the machine does not hold changes nothing.
public struct QueueWorkerStateMachine: Sendable {
    public enum Action: Hashable, Sendable {
        /// Claim up to this many jobs; report with ``claimed(_:sentAt:now:)`` or ``claimFailed(now:)``.
        case claim(limit: Int)
        /// Renew these claims in one round trip; report with ``renewed(_:sentAt:now:)`` or ``renewFailed(now:)``.
        case renew([ClaimReference])
        /// Start the job; it MUST have stopped by `stopBy` unless ``extendJob(_:until:)`` moves that on. Report its
        /// end with ``jobEnded(_:_:jitter:now:)``.
        case startJob(JobClaim, stopBy: Instant)
        /// The claim was confirmed: the job may run until this instant (the new work deadline).
        case extendJob(JobID, until: Instant)
        /// Stop the job now (cancel it, SIGTERM its command), and report its end as usual.
        case stopJob(JobID, StopReason)
        /// Record these outcomes in one round trip (one at a time); report with ``recorded(_:replies:now:)`` or
        /// ``recordFailed(_:now:)``.
        case record([JobOutcome])
        /// Give these claims back, so that other workers take them at once.
        case release([ClaimReference])
        /// The job's claim was lost (for the reason given): its end is not recorded, and the store offers it again.
        case abandon(JobID, StopReason)
        /// Call ``tick(now:)`` at this instant (replaces any earlier request).
        case scheduleTick(at: Instant)
        /// Every job has ended and every claim is given back: stop driving the worker.
        case finish
    }

    /// Why a job was stopped before it ended by itself.
    public enum StopReason: Hashable, Sendable, CustomStringConvertible {
        /// The store says the claim is no longer this worker's (it expired, or the job was cancelled).
        case lost
        /// No renewal was confirmed for T − I: the claim cannot be vouched for.
        case selfFenced
        /// The worker shuts down and the stop grace ran out.
        case shutdown

        public var description: String {
            switch self {
            case .lost: "the claim was lost"
            case .selfFenced: "no renewal of the claim was confirmed in time"
            case .shutdown: "the worker shuts down"
            }
        }
    }

    /// How a job's handler ended.
    public enum JobResult: Hashable, Sendable {
        case succeeded
        case failed(String)
    }

    /// One claim and where its job is.
    private struct Held: Sendable {
        enum Phase: Sendable {
            /// The job runs.
            case working
            /// The job was told to stop; its end is awaited.
            case stopping(StopReason)
            /// The job ended; its outcome is being recorded (or waits to be sent again).
            case recording(JobOutcome, inFlight: Bool)
        }

        let claim: JobClaim
        var timeline: LeaseTimeline
        var phase: Phase
    }

    /// What a running or draining worker has.
    private struct Working: Sendable {
        var held: [JobID: Held] = [:]
        var claimInFlight = false
        var renewInFlight = false
        /// One record round trip at a time: outcomes that come meanwhile travel together in the next one, so a
        /// store whose commits wait for a disk flush pays one flush for many jobs.
        var recordInFlight = false
        /// When an idle worker looks for jobs again; `nil` to look at once.
        var nextPoll: Instant?
    }

    private enum State: Sendable {
        case idle
        case running(Working)
        /// Shutdown was asked: nothing more is claimed; jobs still running at `graceEnds` are stopped.
        case draining(Working, graceEnds: Instant)
        case finished
    }

    public let configuration: QueueWorkerConfiguration
    private var state = State.idle

    public init(configuration: QueueWorkerConfiguration) {
        self.configuration = configuration
    }

    /// How many claims the worker holds (jobs running, stopping or being recorded).
    public var heldCount: Int {
        switch state {
        case .running(let working), .draining(let working, _): working.held.count
        case .idle, .finished: 0
        }
    }

    /// Whether the worker has finished.
    public var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    /// Starts claiming.
    public mutating func start(now: Instant) -> [Action] {
        guard case .idle = state else { return [] }
        state = .running(Working())
        return tick(now: now)
    }

    /// An announcement: jobs were enqueued or given back, so an idle worker looks at once.
    public mutating func jobsAnnounced(now: Instant) -> [Action] {
        guard case .running(var working) = state else { return [] }
        working.nextPoll = nil
        state = .running(working)
        return tick(now: now)
    }

    /// Shutdown is asked: claim nothing more; running jobs may finish within the stop grace.
    public mutating func shutdown(now: Instant) -> [Action] {
        switch state {
        case .idle, .finished:
            state = .finished
            return [.finish]
        case .running(let working):
            state = .draining(working, graceEnds: now + configuration.stopGrace)
            return tick(now: now)
        case .draining:
            return []
        }
    }

    /// Claims arrived for a claim round trip sent at `sentAt`.
    public mutating func claimed(_ claims: [JobClaim], sentAt: Instant, now: Instant) -> [Action] {
        update(now: now) { working, draining, config in
            working.claimInFlight = false
            var actions: [Action] = []
            let timeline = config.timeline(sentAt: sentAt)
            if draining || now >= timeline.selfFence {
                // Too late to use them (shutdown came, or the answer took T − I): give them back at once.
                if !claims.isEmpty { actions.append(.release(claims.map(\.reference))) }
                return actions
            }
            // A job this worker still holds under an older claim (the store expired that one) is not started a
            // second time here: its new claim is given back, and the renewal will tell whether the old one is lost.
            let again = claims.filter { working.held[$0.id] != nil }
            if !again.isEmpty { actions.append(.release(again.map(\.reference))) }
            for claim in claims where working.held[claim.id] == nil {
                working.held[claim.id] = Held(claim: claim, timeline: timeline, phase: .working)
                actions.append(.startJob(claim, stopBy: timeline.workDeadline))
            }
            // A full batch suggests more are waiting: look again at once; otherwise wait for the poll.
            let asked = config.concurrency - (working.held.count - claims.count)
            working.nextPoll = claims.count >= asked && !claims.isEmpty ? nil : now + config.pollInterval
            return actions
        }
    }

    /// A claim round trip failed.
    public mutating func claimFailed(now: Instant) -> [Action] {
        update(now: now) { working, draining, config in
            working.claimInFlight = false
            working.nextPoll = now + config.pollInterval
            return []
        }
    }

    /// The store answered a renewal sent at `sentAt`: whether each claim is still valid.
    public mutating func renewed(_ results: [(ClaimReference, Bool)], sentAt: Instant, now: Instant) -> [Action] {
        update(now: now) { working, draining, config in
            working.renewInFlight = false
            var actions: [Action] = []
            for (reference, valid) in results {
                guard var held = working.held[reference.id], held.claim.token == reference.token else { continue }
                if valid {
                    held.timeline.confirm(sentAt: sentAt)
                    working.held[reference.id] = held
                    if case .working = held.phase { actions.append(.extendJob(reference.id, until: held.timeline.workDeadline)) }
                } else {
                    actions += Self.lose(reference.id, .lost, in: &working)
                }
            }
            return actions
        }
    }

    /// A renewal round trip failed; the claims run on until they are fenced.
    public mutating func renewFailed(now: Instant) -> [Action] {
        update(now: now) { working, draining, config in
            working.renewInFlight = false
            return []
        }
    }

    /// A job's handler ended, with `jitter` (uniform in 0..<1) for the backoff of a failure.
    public mutating func jobEnded(_ id: JobID, _ result: JobResult, jitter: Double, now: Instant) -> [Action] {
        update(now: now) { working, draining, config in
            guard let held = working.held[id] else { return [] }
            switch held.phase {
            case .working where now < held.timeline.selfFence:
                let outcome: JobOutcome
                switch result {
                case .succeeded:
                    outcome = .completed(held.claim.reference)
                case .failed(let error):
                    let delay = config.retry.delay(afterAttempt: held.claim.attempt, jitter: jitter)
                    outcome = .failed(held.claim.reference, error: error, retryAfter: delay)
                }
                working.held[id]?.phase = .recording(outcome, inFlight: false)
                return []
            case .working:
                working.held[id] = nil
                return [.abandon(id, .selfFenced)]
            case .stopping(.shutdown):
                working.held[id] = nil
                return [.release([held.claim.reference])]
            case .stopping(let reason):
                working.held[id] = nil
                return [.abandon(id, reason)]
            case .recording:
                return []
            }
        }
    }

    /// The store answered a record round trip.
    public mutating func recorded(_ outcomes: [JobOutcome], replies: [OutcomeReply], now: Instant) -> [Action] {
        update(now: now) { working, draining, config in
            working.recordInFlight = false
            var actions: [Action] = []
            for (index, outcome) in outcomes.enumerated() {
                let id = outcome.claim.id
                guard let held = working.held[id], held.claim.token == outcome.claim.token else { continue }
                working.held[id] = nil
                if index < replies.count, replies[index] == .stale { actions.append(.abandon(id, .lost)) }
            }
            if !draining { working.nextPoll = nil }
            return actions
        }
    }

    /// A record round trip failed: the outcomes are sent again while their claims can be vouched for.
    public mutating func recordFailed(_ outcomes: [JobOutcome], now: Instant) -> [Action] {
        update(now: now) { working, draining, config in
            working.recordInFlight = false
            for outcome in outcomes {
                let id = outcome.claim.id
                guard case .recording(let pending, _)? = working.held[id]?.phase, pending == outcome else { continue }
                working.held[id]?.phase = .recording(pending, inFlight: false)
            }
            return []
        }
    }

    /// Time passed: fence, renew, record, claim and stop as due.
    public mutating func tick(now: Instant) -> [Action] {
        update(now: now) { _, _, _ in [] }
    }

    /// Marks a claim lost and stops its job (or forgets its outcome).
    private static func lose(_ id: JobID, _ reason: StopReason, in working: inout Working) -> [Action] {
        guard let held = working.held[id] else { return [] }
        switch held.phase {
        case .working:
            working.held[id]?.phase = .stopping(reason)
            return [.stopJob(id, reason)]
        case .stopping(.shutdown) where reason != .shutdown:
            working.held[id]?.phase = .stopping(reason)
            return []
        case .stopping:
            return []
        case .recording(_, inFlight: true) where reason == .lost:
            // The record may have been applied before the renewal that found the claim gone: its own answer says
            // whether the job was lost.
            return []
        case .recording:
            working.held[id] = nil
            return [.abandon(id, reason)]
        }
    }

    /// Applies `change` to the working set (unless idle or finished), then does what is due at `now`.
    private mutating func update(
        now: Instant,
        _ change: (inout Working, _ draining: Bool, QueueWorkerConfiguration) -> [Action]
    ) -> [Action] {
        var working: Working
        var graceEnds: Instant?
        switch state {
        case .idle, .finished: return []
        case .running(let current): working = current
        case .draining(let current, let ends): (working, graceEnds) = (current, ends)
        }
        var actions = change(&working, graceEnds != nil, configuration)
        actions += due(now: now, working: &working, graceEnds: graceEnds)
        if let graceEnds {
            if working.held.isEmpty && !working.claimInFlight {
                state = .finished
                return actions + [.finish]
            }
            state = .draining(working, graceEnds: graceEnds)
        } else {
            state = .running(working)
        }
        if let next = nextTick(working: working, graceEnds: graceEnds, now: now) { actions.append(.scheduleTick(at: next)) }
        return actions
    }

    private func due(now: Instant, working: inout Working, graceEnds: Instant?) -> [Action] {
        var actions: [Action] = []
        for (id, held) in working.held.sorted(by: { $0.key < $1.key }) {
            if now >= held.timeline.selfFence {
                actions += Self.lose(id, .selfFenced, in: &working)
            } else if let graceEnds, now >= graceEnds, case .working = held.phase {
                actions += Self.lose(id, .shutdown, in: &working)
            }
        }
        let unsent = working.held.values.compactMap { held -> JobOutcome? in
            guard case .recording(let outcome, inFlight: false) = held.phase else { return nil }
            return outcome
        }.sorted { $0.claim.id < $1.claim.id }
        if !unsent.isEmpty, !working.recordInFlight {
            for outcome in unsent { working.held[outcome.claim.id]?.phase = .recording(outcome, inFlight: true) }
            working.recordInFlight = true
            actions.append(.record(unsent))
        }
        // Every claim is renewed while it may still be valid, even one whose job is stopping (it is given back
        // afterwards), except those the store said are lost.
        let renewable = working.held.values.filter { if case .stopping(.lost) = $0.phase { false } else { true } }
        if !working.renewInFlight, let renewBy = renewable.map(\.timeline.renewBy).min(), renewBy <= now {
            working.renewInFlight = true
            actions.append(.renew(renewable.map(\.claim.reference).sorted { $0.id < $1.id }))
        }
        let free = configuration.concurrency - working.held.count
        if graceEnds == nil, !working.claimInFlight, free > 0, working.nextPoll.map({ $0 <= now }) ?? true {
            working.claimInFlight = true
            actions.append(.claim(limit: free))
        }
        return actions
    }

    private func nextTick(working: Working, graceEnds: Instant?, now: Instant) -> Instant? {
        var candidates: [Instant] = working.held.values.flatMap { held -> [Instant] in
            if case .stopping(.lost) = held.phase { return [] }
            return [held.timeline.selfFence, held.timeline.renewBy]
        }
        if let poll = working.nextPoll, graceEnds == nil { candidates.append(poll) }
        if let graceEnds, working.held.values.contains(where: { if case .working = $0.phase { true } else { false } }) {
            candidates.append(graceEnds)
        }
        return candidates.filter { $0 > now }.min()
    }
}
