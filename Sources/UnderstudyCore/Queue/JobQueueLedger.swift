/// The store-side state of work queues and the rules by which producers and workers change it.
///
/// Every backend implements exactly these semantics and passes the queue suite of the conformance kit; the
/// in-memory store and the simulator call this type directly. Time is the store's clock (`now`), never a
/// worker's:
///
/// - **A claim is a lease**: it runs for the claim lease from when the store granted or last renewed it. An
///   expired claim is claimable again at once; no rescuer waits for an hour. A claim that expires on the job's
///   last attempt sends the job to the dead letter.
/// - **Order**: the claimable jobs of a queue go by priority (higher first), then by when they became claimable,
///   then by id. A job with an ordering key is claimable only while no earlier job of its queue with the same key
///   is unfinished (scheduled, pending or running), so the jobs of a key run one at a time, in enqueue order.
/// - **Tokens**: every claim of a job takes a token larger than the job's last one, and at least the store's wall
///   clock in microseconds (``StoreMoment/tokenFloor``), so a restored store never hands out a token twice.
/// - **Outcomes** are recorded only with the claim's token and before its expiry; otherwise they are stale.
/// - **A record that may be incomplete** (``StoreMoment/recordCompleteSince``: a replaced or restored store)
///   grants no claim for one claim lease, since a claim the lost record held may still run.
public struct JobQueueLedger: Sendable {
    /// A job as the store keeps it.
    public struct Job: Hashable, Sendable {
        public enum Stage: Hashable, Sendable {
            /// Claimable from `since` on (its run-at instant, or when its last claim expired).
            case available(since: Instant)
            /// Claimed by `worker` until `expiresAt`.
            case running(worker: WorkerID, expiresAt: Instant, since: Instant)
            /// Done, dead or cancelled at `at`.
            case finished(JobState, at: Instant)
        }

        public let id: JobID
        public let spec: JobSpec
        public let enqueuedAt: Instant
        public var stage: Stage
        public var attempt: Int
        public var token: FencingToken
        public var lastError: String?

        /// The state `queue stats` shows at `now`: an expired claim counts as pending again (or dead, on its last
        /// attempt), a job whose run-at has come as pending.
        public func state(at now: Instant) -> JobState {
            switch stage {
            case .available(let since): since > now ? .scheduled : .pending
            case .running(_, let expiresAt, _): expiresAt > now ? .running : (attempt >= spec.maxAttempts ? .dead : .pending)
            case .finished(let state, _): state
            }
        }

        func record(at now: Instant) -> JobRecord {
            JobRecord(
                id: id, queue: spec.queue, state: state(at: now), priority: spec.priority, attempt: attempt,
                maxAttempts: spec.maxAttempts, idempotencyKey: spec.idempotencyKey, orderingKey: spec.orderingKey,
                lastError: lastError, payloadSize: spec.payload.count, age: now - enqueuedAt
            )
        }
    }

    /// Every job not yet deleted, by id.
    public private(set) var jobs: [JobID: Job] = [:]
    private var lastID: Int64 = 0

    public init() {}

    /// Why a job whose claim expired on its last attempt is dead.
    public static func expiredOnLastAttempt(_ attempt: Int) -> String {
        "the claim lease of attempt \(attempt), its last, expired"
    }

    /// Enqueues `specs` in order; a spec whose idempotency key a job of its queue holds returns that job.
    public mutating func enqueue(_ specs: [JobSpec], at now: Instant) -> [Enqueued] {
        specs.map { spec in
            if let key = spec.idempotencyKey,
               let holder = jobs.values.first(where: { $0.spec.queue == spec.queue && $0.spec.idempotencyKey == key }) {
                return Enqueued(id: holder.id, deduplicated: true)
            }
            lastID += 1
            let id = JobID(rawValue: lastID)
            jobs[id] = Job(id: id, spec: spec, enqueuedAt: now, stage: .available(since: now + spec.delay), attempt: 0, token: FencingToken(rawValue: 0))
            return Enqueued(id: id, deduplicated: false)
        }
    }

    /// Claims up to `limit` claimable jobs of `queue` for `worker`, each for `lease` from now.
    public mutating func claim(queue: QueueName, worker: WorkerID, limit: Int, lease: Duration, at moment: StoreMoment) -> [JobClaim] {
        let now = moment.now
        if let since = moment.recordCompleteSince, now < since + lease { return [] }
        expireClaims(at: now)
        let ordered = jobs.values.filter { $0.spec.queue == queue }.sorted { $0.id < $1.id }
        var blockedKeys: Set<String> = []
        var candidates: [(job: Job, since: Instant)] = []
        for job in ordered {
            let unfinished: Bool
            var claimableSince: Instant?
            switch job.stage {
            case .available(let since):
                unfinished = true
                if since <= now { claimableSince = since }
            case .running:
                unfinished = true
            case .finished:
                unfinished = false
            }
            if let key = job.spec.orderingKey {
                defer { if unfinished { blockedKeys.insert(key) } }
                if blockedKeys.contains(key) { continue }
            }
            if let claimableSince { candidates.append((job, claimableSince)) }
        }
        candidates.sort { a, b in
            if a.job.spec.priority != b.job.spec.priority { return a.job.spec.priority > b.job.spec.priority }
            if a.since != b.since { return a.since < b.since }
            return a.job.id < b.job.id
        }
        return candidates.prefix(max(0, limit)).map { candidate in
            var job = candidate.job
            job.attempt += 1
            job.token = FencingToken(rawValue: max(job.token.rawValue + 1, moment.tokenFloor.rawValue))
            job.stage = .running(worker: worker, expiresAt: now + lease, since: now)
            jobs[job.id] = job
            return JobClaim(
                id: job.id, queue: queue, payload: job.spec.payload, attempt: job.attempt,
                maxAttempts: job.spec.maxAttempts, token: job.token, waited: now - candidate.since
            )
        }
    }

    /// Claims that expired become claimable at once, or dead on their last attempt.
    private mutating func expireClaims(at now: Instant) {
        for (id, job) in jobs {
            guard case .running(_, let expiresAt, _) = job.stage, expiresAt <= now else { continue }
            if job.attempt >= job.spec.maxAttempts {
                jobs[id]?.stage = .finished(.dead, at: expiresAt)
                jobs[id]?.lastError = Self.expiredOnLastAttempt(job.attempt)
            } else {
                jobs[id]?.stage = .available(since: expiresAt)
            }
        }
    }

    /// The job of `claim` while that claim is valid at `now`.
    private func held(_ claim: ClaimReference, at now: Instant) -> Job? {
        guard let job = jobs[claim.id], job.token == claim.token,
              case .running(_, let expiresAt, _) = job.stage, expiresAt > now else { return nil }
        return job
    }

    /// Renews each claim that is still valid for `lease` from now; `false` for each that is lost.
    public mutating func renew(_ claims: [ClaimReference], lease: Duration, at now: Instant) -> [Bool] {
        claims.map { claim in
            guard let job = held(claim, at: now), case .running(let worker, _, let since) = job.stage else { return false }
            jobs[claim.id]?.stage = .running(worker: worker, expiresAt: now + lease, since: since)
            return true
        }
    }

    /// Records each outcome whose claim is still valid.
    public mutating func record(_ outcomes: [JobOutcome], at now: Instant) -> [OutcomeReply] {
        outcomes.map { outcome in
            guard let job = held(outcome.claim, at: now) else { return .stale }
            switch outcome {
            case .completed:
                jobs[job.id]?.stage = .finished(.done, at: now)
                return .recorded(.done)
            case .failed(_, let error, let retryAfter):
                jobs[job.id]?.lastError = error
                if job.attempt >= job.spec.maxAttempts {
                    jobs[job.id]?.stage = .finished(.dead, at: now)
                    return .recorded(.dead)
                }
                jobs[job.id]?.stage = .available(since: now + max(retryAfter, .zero))
                return .recorded(retryAfter > .zero ? .scheduled : .pending)
            }
        }
    }

    /// Gives claims back: each still valid is claimable at once, and the attempt does not count.
    public mutating func release(_ claims: [ClaimReference], at now: Instant) {
        for claim in claims {
            guard held(claim, at: now) != nil else { continue }
            jobs[claim.id]?.stage = .available(since: now)
            jobs[claim.id]?.attempt -= 1
        }
    }

    /// Cancels a job that is not done; returns its state afterwards, or `nil` if there is no such job.
    public mutating func cancel(_ id: JobID, at now: Instant) -> JobState? {
        guard let job = jobs[id] else { return nil }
        let state = job.state(at: now)
        guard state != .done else { return .done }
        if state != .cancelled { jobs[id]?.stage = .finished(.cancelled, at: now) }
        return .cancelled
    }

    /// Makes the dead jobs of `queue` (only those of `ids`, if given) pending again with their attempts reset;
    /// returns how many.
    public mutating func redrive(queue: QueueName, ids: [JobID]?, at now: Instant) -> Int {
        expireClaims(at: now)
        let wanted = ids.map(Set.init)
        var count = 0
        for (id, job) in jobs where job.spec.queue == queue && (wanted?.contains(id) ?? true) {
            guard case .finished(.dead, _) = job.stage else { continue }
            jobs[id]?.stage = .available(since: now)
            jobs[id]?.attempt = 0
            count += 1
        }
        return count
    }

    /// Deletes at most `limit` jobs done or cancelled at least `retention` ago; returns how many. Dead jobs stay
    /// until they are redriven or cancelled.
    public mutating func prune(retention: Duration, limit: Int, at now: Instant) -> Int {
        let expired = jobs.values.filter { job in
            guard case .finished(let state, let at) = job.stage, state != .dead else { return false }
            return at + retention <= now
        }.map(\.id).sorted().prefix(max(0, limit))
        for id in expired { jobs[id] = nil }
        return expired.count
    }

    /// The counts of every queue with jobs (or only `queue`'s), in name order.
    public func stats(queue: QueueName?, at now: Instant) -> [QueueStats] {
        let byQueue = Dictionary(grouping: jobs.values.filter { queue == nil || $0.spec.queue == queue }, by: \.spec.queue)
        return byQueue.keys.sorted().map { name in
            var counts: [JobState: Int] = [:]
            var oldest: Instant?
            for job in byQueue[name]! {
                let state = job.state(at: now)
                counts[state, default: 0] += 1
                guard state == .pending else { continue }
                let since: Instant
                switch job.stage {
                case .available(let at): since = at
                case .running(_, let expiresAt, _): since = expiresAt
                case .finished(_, let at): since = at
                }
                oldest = min(oldest ?? since, since)
            }
            return QueueStats(queue: name, counts: counts, oldestPendingAge: oldest.map { now - $0 })
        }
    }

    /// At most `limit` jobs in `state` (of `queue`, if given), in id order after `cursor`.
    public func jobs(queue: QueueName?, state: JobState, after cursor: JobID?, limit: Int, at now: Instant) -> [JobRecord] {
        jobs.values
            .filter { (queue == nil || $0.spec.queue == queue) && $0.state(at: now) == state && $0.id > (cursor ?? JobID(rawValue: 0)) }
            .sorted { $0.id < $1.id }
            .prefix(max(0, limit))
            .map { $0.record(at: now) }
    }

    /// One job, or `nil` if there is none with `id`.
    public func job(_ id: JobID, at now: Instant) -> JobRecord? {
        jobs[id]?.record(at: now)
    }
}
