import CoreMetrics
import UnderstudyCore

/// The metrics a ``QueueWorker`` reports through swift-metrics, each with the dimension `queue`.
///
/// | label | type | meaning |
/// |---|---|---|
/// | `understudy_queue_claims_total` | counter | jobs claimed by this worker |
/// | `understudy_queue_outcomes_total` | counter, dimension `outcome` | `completed`, `failed` (retried), `dead`, `stale` |
/// | `understudy_queue_lost_total` | counter | jobs whose claim was lost while they ran, so their end was not recorded |
/// | `understudy_queue_start_latency_seconds` | timer | from a job becoming claimable to its first claim |
/// | `understudy_queue_store_errors_total` | counter | round trips that failed for want of a store |
/// | `understudy_queue_jobs` | gauge, dimension `state` | the queue's jobs in each state, read every prune interval |
public enum QueueMetricLabel {
    public static let claims = "understudy_queue_claims_total"
    public static let outcomes = "understudy_queue_outcomes_total"
    public static let lost = "understudy_queue_lost_total"
    public static let startLatency = "understudy_queue_start_latency_seconds"
    public static let storeErrors = "understudy_queue_store_errors_total"
    public static let depth = "understudy_queue_jobs"
}

/// The metric handles of one worker, made once so that every series exists from the start.
struct QueueMetrics: Sendable {
    private let claims: Counter
    private let outcomes: [String: Counter]
    private let lostJobs: Counter
    private let startLatency: Timer
    private let storeErrors: Counter
    private let depth: [JobState: Gauge]

    init(queue: QueueName) {
        let dimensions = [("queue", queue.rawValue)]
        claims = Counter(label: QueueMetricLabel.claims, dimensions: dimensions)
        outcomes = Dictionary(uniqueKeysWithValues: ["completed", "failed", "dead", "stale"].map { outcome in
            (outcome, Counter(label: QueueMetricLabel.outcomes, dimensions: dimensions + [("outcome", outcome)]))
        })
        lostJobs = Counter(label: QueueMetricLabel.lost, dimensions: dimensions)
        startLatency = Timer(label: QueueMetricLabel.startLatency, dimensions: dimensions)
        storeErrors = Counter(label: QueueMetricLabel.storeErrors, dimensions: dimensions)
        depth = Dictionary(uniqueKeysWithValues: JobState.allCases.map { state in
            (state, Gauge(label: QueueMetricLabel.depth, dimensions: dimensions + [("state", state.rawValue)]))
        })
    }

    func counted(_ stats: QueueStats?) {
        for (state, gauge) in depth { gauge.record(Double(stats?.count(state) ?? 0)) }
    }

    func claimed(_ claim: JobClaim) {
        claims.increment()
        if claim.attempt == 1 { startLatency.recordNanoseconds(claim.waited.nanoseconds) }
    }

    func recorded(_ outcome: JobOutcome, _ reply: OutcomeReply) {
        let name = switch (outcome, reply) {
        case (_, .stale): "stale"
        case (.completed, _): "completed"
        case (.failed, .recorded(.dead)): "dead"
        case (.failed, _): "failed"
        }
        outcomes[name]?.increment()
    }

    func lost() { lostJobs.increment() }
    func storeFailed() { storeErrors.increment() }
}
