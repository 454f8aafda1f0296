import Synchronization
import UnderstudyCore

/// The subscribers to a store's announced changes, by topic (a group, a queue), so an announcement wakes only
/// those of its own topic (see ``ChangeAnnouncing/changes(of:)`` and ``JobQueueStore/enqueued(on:)``).
package final class ChangeSubscribers<Topic: Hashable & Sendable>: Sendable {
    private struct State {
        var byGroup: [Topic: [Int: AsyncStream<Void>.Continuation]] = [:]
        var nextID = 0
        var finished = false
    }

    private let state = Mutex(State())

    public init() {}

    /// A stream with an element for each announcement of `group`, until ``finishAll()``.
    public func subscribe(to group: Topic) -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id: Int? = state.withLock { state in
            guard !state.finished else { return nil }
            state.nextID += 1
            state.byGroup[group, default: [:]][state.nextID] = continuation
            return state.nextID
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { state in
                state.byGroup[group]?.removeValue(forKey: id)
                if state.byGroup[group]?.isEmpty == true { state.byGroup[group] = nil }
            }
        }
        return stream
    }

    public func announce(_ group: Topic) {
        for continuation in state.withLock({ Array($0.byGroup[group]?.values ?? [:].values) }) { continuation.yield() }
    }

    /// Ends every stream; later subscriptions end at once.
    public func finishAll() {
        // Finished outside the lock: finishing runs `onTermination`, which takes the lock.
        let subscribed = state.withLock { state in
            state.finished = true
            defer { state.byGroup = [:] }
            return state.byGroup.values.flatMap(\.values)
        }
        for continuation in subscribed { continuation.finish() }
    }
}
