import UnderstudyCore
import UnderstudyStore

/// What producers use: enqueue jobs on a store's work queues, cancel them, and read their counts.
public struct WorkQueue: Sendable {
    /// The most jobs one round trip carries; a larger batch is enqueued in several (each atomic on its own).
    public static let maximumBatch = 1_000

    public let store: any JobQueueStore

    public init(store: any JobQueueStore) {
        self.store = store
    }

    /// Enqueues one job; its id, or the id of the job that already holds its idempotency key.
    public func enqueue(_ job: JobSpec) async throws -> Enqueued {
        try await store.enqueue([job])[0]
    }

    /// Enqueues jobs in order, in round trips of at most ``maximumBatch``.
    public func enqueue(_ jobs: [JobSpec]) async throws -> [Enqueued] {
        var enqueued: [Enqueued] = []
        enqueued.reserveCapacity(jobs.count)
        for start in stride(from: 0, to: jobs.count, by: Self.maximumBatch) {
            enqueued += try await store.enqueue(Array(jobs[start..<min(start + Self.maximumBatch, jobs.count)]))
        }
        return enqueued
    }

    /// Cancels a job that is not done; its state afterwards, or `nil` if there is no such job.
    public func cancel(_ job: JobID) async throws -> JobState? {
        try await store.cancel(job)
    }

    /// The counts by state of every queue, or of one.
    public func stats(queue: QueueName? = nil) async throws -> [QueueStats] {
        try await store.stats(queue: queue)
    }
}
