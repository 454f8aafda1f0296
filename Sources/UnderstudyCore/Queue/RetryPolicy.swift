/// How long a failed job waits before its next attempt: exponential backoff with jitter.
///
/// Attempt *n* waits `base · 2^(n−1)`, capped at `maximum`, times a jitter factor between ½ and 1, so that jobs
/// that failed together do not all come back together.
public struct RetryPolicy: Hashable, Sendable {
    public var base: Duration
    public var maximum: Duration

    public init(base: Duration = .seconds(1), maximum: Duration = .seconds(600)) {
        self.base = base
        self.maximum = max(base, maximum)
    }

    /// The wait after failed attempt `attempt` (1 for the first), with `jitter` drawn uniformly from 0..<1.
    public func delay(afterAttempt attempt: Int, jitter: Double) -> Duration {
        let exponent = min(max(attempt - 1, 0), 40)
        let nominal = min(base * (1 << exponent), maximum)
        return nominal * (0.5 + 0.5 * min(max(jitter, 0), 1))
    }
}
