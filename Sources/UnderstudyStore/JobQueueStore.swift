import UnderstudyCore

/// A store that keeps work queues: jobs that survive every worker, claimed under leases on the store's clock.
///
/// Every backend implements the semantics of ``JobQueueLedger`` exactly and passes the queue suite of the
/// conformance kit (`JobQueueConformance`). Each call is one round trip (one transaction), whatever the number of
/// jobs it carries.
public protocol JobQueueStore: Sendable {
    /// Enqueues jobs atomically, in order; for each, its id and whether it was deduplicated by its idempotency key.
    func enqueue(_ jobs: [JobSpec]) async throws -> [Enqueued]

    /// Claims up to `limit` claimable jobs of `queue` for `worker`, each under a claim lease of `lease` on the
    /// store's clock (see ``JobQueueLedger/claim(queue:worker:limit:lease:at:)``).
    func claim(queue: QueueName, worker: WorkerID, limit: Int, lease: Duration) async throws -> [JobClaim]

    /// Renews claims for `lease` from now; for each, whether it was still valid (`false`: the job is lost).
    func renew(_ claims: [ClaimReference], lease: Duration) async throws -> [Bool]

    /// Records how attempts ended; an outcome whose claim is no longer valid is ``OutcomeReply/stale``.
    func record(_ outcomes: [JobOutcome]) async throws -> [OutcomeReply]

    /// Gives claims back: each still valid is claimable again at once, and the attempt does not count.
    func release(_ claims: [ClaimReference]) async throws

    /// Cancels a job that is not done; its state afterwards, or `nil` if the store has no such job.
    func cancel(_ job: JobID) async throws -> JobState?

    /// Makes dead jobs of `queue` (only `ids`, if given) pending again with their attempts reset; how many.
    func redrive(queue: QueueName, ids: [JobID]?) async throws -> Int

    /// Deletes at most `limit` jobs done or cancelled at least `retention` ago; how many.
    func prune(retention: Duration, limit: Int) async throws -> Int

    /// The counts by state of every queue with jobs, or only `queue`'s, in name order.
    func stats(queue: QueueName?) async throws -> [QueueStats]

    /// At most `limit` jobs in `state` (of `queue`, if given), in id order after `cursor`.
    func jobs(queue: QueueName?, state: JobState, after cursor: JobID?, limit: Int) async throws -> [JobRecord]

    /// One job, or `nil` if the store has none with `id` (never enqueued, or deleted after its retention).
    func job(_ id: JobID) async throws -> JobRecord?

    /// An element soon after jobs were enqueued on `queue`, or claims given back, so idle workers claim at once.
    /// At most one announcement per call of ``enqueue(_:)``; workers still poll, so a lost one delays only.
    func enqueued(on queue: QueueName) -> AsyncStream<Void>
}
