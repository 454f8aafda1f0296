import UnderstudyCore

/// Collects heartbeats that are due together into round trips (or transactions) of at most ``maximumBatch``
/// heartbeats, sent side by side. Each batch is in group-name order, so a store that locks groups as it goes
/// locks them in one global order and concurrent batches cannot deadlock.
///
/// With a `window` of zero nothing waits: the first heartbeat goes at once, and those that arrive while it is in
/// flight travel together next. A caller that is cancelled gets `CancellationError` at once; its heartbeat is
/// still applied if it was already on its way.
///
/// The batcher is given its send function once, at init. The store that owns a batcher keeps what the function
/// needs (its database or connection) in an object of its own, which the function captures, so the function does
/// not hold the store.
public actor HeartbeatBatcher {
    public typealias Send = @Sendable ([Heartbeat]) async throws -> [Result<HeartbeatReply, any Error>]

    private typealias Waiter = CheckedContinuation<HeartbeatReply, any Error>
    /// A larger batch holds its group locks longer and risks the round-trip timeout (10,000 did, 500 does not).
    public static let maximumBatch = 500
    /// The window of a store that many members of one process share (an agent's): their heartbeats fall due on one
    /// grid, and arrive within this of each other, so each interval's travel in one round trip; short against any
    /// heartbeat interval, it delays a heartbeat by at most this.
    public static let sharedWindow = Duration.milliseconds(5)
    private let window: Duration
    private let send: Send
    private var pending: [(id: Int, heartbeat: Heartbeat)] = []
    /// Who waits for each heartbeat not answered yet, by id; a cancelled caller is removed at once.
    private var waiters: [Int: Waiter] = [:]
    private var nextID = 0
    private var flushing = false

    /// - Parameters:
    ///   - window: how long the first heartbeat of a batch waits for others.
    ///   - send: applies one batch, answering each heartbeat in order; an error it throws fails the whole batch.
    public init(window: Duration, send: @escaping Send) {
        self.window = window
        self.send = send
    }

    /// Sends `heartbeat` with the next batch, and returns its reply.
    public func submit(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
        nextID += 1
        let id = nextID
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: Waiter) in
                guard !Task.isCancelled else { return waiter.resume(throwing: CancellationError()) }
                waiters[id] = waiter
                pending.append((id, heartbeat))
                guard !flushing else { return }
                flushing = true
                Task { await self.flush() }
            }
        } onCancel: {
            Task { await self.cancel(id) }
        }
    }

    private func cancel(_ id: Int) {
        pending.removeAll { $0.id == id }
        waiters.removeValue(forKey: id)?.resume(throwing: CancellationError())
    }

    private func answer(_ id: Int, with result: Result<HeartbeatReply, any Error>) {
        waiters.removeValue(forKey: id)?.resume(with: result)
    }

    private func flush() async {
        let send = send
        if window > .zero { try? await Task.sleep(for: window) }
        while !pending.isEmpty {
            let due = pending.sorted { $0.heartbeat.group < $1.heartbeat.group }
            pending = []
            await withTaskGroup(of: Void.self) { group in
                for start in stride(from: 0, to: due.count, by: Self.maximumBatch) {
                    let batch = Array(due[start..<min(start + Self.maximumBatch, due.count)])
                    group.addTask {
                        let results: [Result<HeartbeatReply, any Error>]
                        do {
                            results = try await send(batch.map(\.heartbeat))
                        } catch {
                            results = batch.map { _ in .failure(error) }
                        }
                        for (index, entry) in batch.enumerated() {
                            // A heartbeat the store left unanswered must not wait for ever.
                            await self.answer(
                                entry.id,
                                with: results.indices.contains(index)
                                    ? results[index] : .failure(StoreError(.corrupt, "the store left a heartbeat unanswered"))
                            )
                        }
                    }
                }
            }
        }
        flushing = false
    }
}
