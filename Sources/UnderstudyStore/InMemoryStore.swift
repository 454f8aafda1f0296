import Synchronization
import UnderstudyCore

/// A store in this process's memory: for tests, examples and groups whose members all live in one process.
///
/// Time is judged on `clock`, by default the process's monotonic clock; tests inject their own.
public final class InMemoryStore: LeaseStore, ChangeAnnouncing, GroupDirectory, CustomStringConvertible {
    private struct State {
        var ledgers: [GroupName: GroupLedger] = [:]
        var closed = false
    }

    private let state = Mutex(State())
    private let clock: @Sendable () -> Instant
    private let wallMicroseconds: @Sendable () -> UInt64
    private let subscribers = ChangeSubscribers()

    public var description: String { "memory" }

    /// - Parameters:
    ///   - clock: the store's clock. Defaults to the host's monotonic clock.
    ///   - wallMicroseconds: the floor of every token granted (``StoreMoment/tokenFloor``), so a new store in a
    ///     restarted process never grants a token the last one did.
    public init(
        clock: @escaping @Sendable () -> Instant = MonotonicClock.now,
        wallMicroseconds: @escaping @Sendable () -> UInt64 = MonotonicClock.wallMicroseconds
    ) {
        self.clock = clock
        self.wallMicroseconds = wallMicroseconds
    }

    public func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
        let now = clock()
        let (reply, released) = try state.withLock { state in
            guard !state.closed else { throw StoreError(.closed, "the in-memory store is closed") }
            let before = state.ledgers[heartbeat.group] ?? GroupLedger(group: heartbeat.group, activeGoal: heartbeat.activeGoal)
            var ledger = before
            let floor = FencingToken(rawValue: min(wallMicroseconds(), FencingToken.maximum.rawValue))
            let reply = try ledger.apply(heartbeat, at: StoreMoment(now: now, tokenFloor: floor))
            state.ledgers[heartbeat.group] = ledger
            return (reply, ledger.shouldAnnounce(heartbeat, from: before))
        }
        if released { subscribers.announce(heartbeat.group) }
        return reply
    }

    public func changes(of group: GroupName) -> AsyncStream<Void> {
        subscribers.subscribe(to: group)
    }

    public func groupNames(after cursor: GroupName?, limit: Int) async throws -> [GroupName] {
        try state.withLock { state in
            guard !state.closed else { throw StoreError(.closed, "the in-memory store is closed") }
            return Array(state.ledgers.keys.filter { name in cursor.map { name > $0 } ?? true }.sorted().prefix(max(0, limit)))
        }
    }

    public func group(named name: GroupName) async throws -> GroupView? {
        let now = clock()
        return try state.withLock { state in
            guard !state.closed else { throw StoreError(.closed, "the in-memory store is closed") }
            return state.ledgers[name]?.view(now: now)
        }
    }

    public func close() async throws {
        state.withLock { $0.closed = true }
        subscribers.finishAll()
    }
}
