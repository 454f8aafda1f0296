import UnderstudyCore

/// Collects heartbeats that are due together into round trips (or transactions) of at most ``maximumBatch``
/// heartbeats, sent side by side. Each batch is in group-name order, so a store that locks groups as it goes
/// locks them in one global order and concurrent batches cannot deadlock.
///
/// With a `window` of zero nothing waits: the first heartbeat goes at once, and those that arrive while it is in
/// flight travel together next.
public actor HeartbeatBatcher {
    private typealias Pending = (heartbeat: Heartbeat, continuation: CheckedContinuation<HeartbeatReply, any Error>)
    /// A larger batch holds its group locks longer and risks the round-trip timeout (10,000 did, 500 does not).
    public static let maximumBatch = 500
    private let window: Duration
    private var pending: [Pending] = []
    private var flushing = false

    public init(window: Duration) {
        self.window = window
    }

    public func submit(
        _ heartbeat: Heartbeat,
        send: @escaping @Sendable ([Heartbeat]) async throws -> [Result<HeartbeatReply, any Error>]
    ) async throws -> HeartbeatReply {
        try await withCheckedThrowingContinuation { continuation in
            pending.append((heartbeat, continuation))
            guard !flushing else { return }
            flushing = true
            Task { await self.flush(send) }
        }
    }

    private func flush(_ send: @escaping @Sendable ([Heartbeat]) async throws -> [Result<HeartbeatReply, any Error>]) async {
        if window > .zero { try? await Task.sleep(for: window) }
        while !pending.isEmpty {
            let due = pending.sorted { $0.heartbeat.group < $1.heartbeat.group }
            pending = []
            await withTaskGroup(of: Void.self) { group in
                for start in stride(from: 0, to: due.count, by: Self.maximumBatch) {
                    let batch = Array(due[start..<min(start + Self.maximumBatch, due.count)])
                    group.addTask {
                        do {
                            let results = try await send(batch.map(\.heartbeat))
                            for (index, entry) in batch.enumerated() {
                                // A heartbeat the store left unanswered must not wait for ever.
                                entry.continuation.resume(
                                    with: results.indices.contains(index)
                                        ? results[index] : .failure(StoreError(.corrupt, "the store left a heartbeat unanswered"))
                                )
                            }
                        } catch {
                            for entry in batch { entry.continuation.resume(throwing: error) }
                        }
                    }
                }
            }
        }
        flushing = false
    }
}
