import Synchronization
import UnderstudyCore

/// A store in this process's memory: for tests, examples, and groups and queues whose members all live in one
/// process.
///
/// Time is judged on `clock`, by default the process's monotonic clock; tests inject their own.
public final class InMemoryStore: LeaseStore, PartitionLeaseStore, ChangeAnnouncing, GroupDirectory, JobQueueStore, CheckpointStore,
    CustomStringConvertible
{
    private struct State {
        var ledgers: [GroupName: GroupLedger] = [:]
        var queues = JobQueueLedger()
        var checkpoints: [GroupName: [CheckpointName: Checkpoint]] = [:]
        var closed = false
    }

    private let state = Mutex(State())
    private let clock: @Sendable () -> Instant
    private let wallMicroseconds: @Sendable () -> UInt64
    private let subscribers = ChangeSubscribers<GroupName>()
    private let queueSubscribers = ChangeSubscribers<QueueName>()

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
        try apply(to: heartbeat.group, size: heartbeat.activeGoal) { ledger, moment in
            let before = ledger
            let reply = try ledger.apply(heartbeat, at: moment)
            return (reply, ledger.shouldAnnounce(heartbeat, from: before))
        }
    }

    public func heartbeat(_ heartbeat: PartitionHeartbeat) async throws -> PartitionHeartbeatReply {
        try apply(to: heartbeat.group, size: heartbeat.partitions) { ledger, moment in
            let before = ledger
            let reply = try ledger.apply(heartbeat, at: moment)
            return (reply, ledger.shouldAnnounce(heartbeat, from: before))
        }
    }

    /// Runs `body` on `group`'s ledger at the store's current moment, and announces a change if it says so.
    private func apply<Reply>(
        to group: GroupName,
        size: Int,
        _ body: (inout GroupLedger, StoreMoment) throws -> (Reply, announce: Bool)
    ) throws -> Reply {
        let now = clock()
        let (reply, announce) = try state.withLock { state in
            guard !state.closed else { throw StoreError(.closed, "the in-memory store is closed") }
            var ledger = state.ledgers[group] ?? GroupLedger(group: group, activeGoal: size)
            let floor = FencingToken(rawValue: min(wallMicroseconds(), FencingToken.maximum.rawValue))
            let result = try body(&ledger, StoreMoment(now: now, tokenFloor: floor))
            state.ledgers[group] = ledger
            return result
        }
        if announce { subscribers.announce(group) }
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
        queueSubscribers.finishAll()
    }

    /// Runs `body` on the queues at the store's current instant, unless the store is closed.
    private func withQueues<Value>(_ body: (inout JobQueueLedger, Instant) -> Value) throws -> Value {
        let now = clock()
        return try state.withLock { state in
            guard !state.closed else { throw StoreError(.closed, "the in-memory store is closed") }
            return body(&state.queues, now)
        }
    }

    public func enqueue(_ jobs: [JobSpec]) async throws -> [Enqueued] {
        let enqueued = try withQueues { queues, now in queues.enqueue(jobs, at: now) }
        for queue in Set(jobs.map(\.queue)) { queueSubscribers.announce(queue) }
        return enqueued
    }

    public func claim(queue: QueueName, worker: WorkerID, limit: Int, lease: Duration) async throws -> [JobClaim] {
        let floor = FencingToken(rawValue: min(wallMicroseconds(), FencingToken.maximum.rawValue))
        return try withQueues { queues, now in
            queues.claim(queue: queue, worker: worker, limit: limit, lease: lease, at: StoreMoment(now: now, tokenFloor: floor))
        }
    }

    public func renew(_ claims: [ClaimReference], lease: Duration) async throws -> [Bool] {
        try withQueues { queues, now in queues.renew(claims, lease: lease, at: now) }
    }

    public func record(_ outcomes: [JobOutcome]) async throws -> [OutcomeReply] {
        try withQueues { queues, now in queues.record(outcomes, at: now) }
    }

    public func release(_ claims: [ClaimReference]) async throws {
        let queues = try withQueues { ledger, now in
            let released = Set(claims.compactMap { ledger.jobs[$0.id]?.spec.queue })
            ledger.release(claims, at: now)
            return released
        }
        for queue in queues { queueSubscribers.announce(queue) }
    }

    public func cancel(_ job: JobID) async throws -> JobState? {
        try withQueues { queues, now in queues.cancel(job, at: now) }
    }

    public func redrive(queue: QueueName, ids: [JobID]?) async throws -> Int {
        let count = try withQueues { queues, now in queues.redrive(queue: queue, ids: ids, at: now) }
        if count > 0 { queueSubscribers.announce(queue) }
        return count
    }

    public func prune(retention: Duration, limit: Int) async throws -> Int {
        try withQueues { queues, now in queues.prune(retention: retention, limit: limit, at: now) }
    }

    public func stats(queue: QueueName?) async throws -> [QueueStats] {
        try withQueues { queues, now in queues.stats(queue: queue, at: now) }
    }

    public func jobs(queue: QueueName?, state: JobState, after cursor: JobID?, limit: Int) async throws -> [JobRecord] {
        try withQueues { queues, now in queues.jobs(queue: queue, state: state, after: cursor, limit: limit, at: now) }
    }

    public func job(_ id: JobID) async throws -> JobRecord? {
        try withQueues { queues, now in queues.job(id, at: now) }
    }

    public func checkpoint(of group: GroupName, named name: CheckpointName) async throws -> Checkpoint? {
        try state.withLock { state in
            guard !state.closed else { throw StoreError(.closed, "the in-memory store is closed") }
            return state.checkpoints[group]?[name]
        }
    }

    public func writeCheckpoint(of group: GroupName, named name: CheckpointName, value: [UInt8], token: FencingToken) async throws -> CheckpointWrite {
        guard value.count <= Checkpoint.maximumSize else { throw CheckpointError.valueTooLarge(value.count) }
        let now = clock()
        return try state.withLock { state in
            guard !state.closed else { throw StoreError(.closed, "the in-memory store is closed") }
            let write = CheckpointRule.write(value, token: token, over: state.checkpoints[group]?[name], group: state.ledgers[group], now: now)
            if case .accepted(let checkpoint) = write { state.checkpoints[group, default: [:]][name] = checkpoint }
            return write
        }
    }

    public func enqueued(on queue: QueueName) -> AsyncStream<Void> {
        queueSubscribers.subscribe(to: queue)
    }
}
