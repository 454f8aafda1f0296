import Foundation
import Logging
import ServiceLifecycle
import UnderstudyCore
import UnderstudyStore

/// A job enqueued on a schedule: its name is its payload unless one is given.
public struct PeriodicJob: Hashable, Sendable {
    public let name: String
    public let schedule: PeriodicSchedule
    public let queue: QueueName
    public let payload: [UInt8]
    public let maxAttempts: Int

    /// Validates the name (it goes into each tick's idempotency key) and the job.
    public init(name: String, schedule: PeriodicSchedule, queue: QueueName, payload: [UInt8]? = nil, maxAttempts: Int = 5) throws(JobError) {
        _ = try JobSpec(queue: queue, payload: payload ?? Array(name.utf8), maxAttempts: maxAttempts, idempotencyKey: Self.key(name, tick: 0))
        self.name = name
        self.schedule = schedule
        self.queue = queue
        self.payload = payload ?? Array(name.utf8)
        self.maxAttempts = maxAttempts
    }

    /// The idempotency key of the tick at `tick` seconds since 1970: one job per tick, whoever enqueues it.
    public static func key(_ name: String, tick: Int64) -> String { "periodic:\(name):\(tick)" }

    func spec(tick: Int64) throws(JobError) -> JobSpec {
        try JobSpec(queue: queue, payload: payload, maxAttempts: maxAttempts, idempotencyKey: Self.key(name, tick: tick))
    }
}

/// Enqueues periodic jobs exactly once per tick: the workers of a queue form a singleton group,
/// `<queue>.periodic`, and only its active member enqueues, each tick's job with the idempotency key of its tick,
/// so even two enqueuers that overlapped could not enqueue a tick twice.
///
/// A member that becomes active first enqueues every tick of the last two activation intervals (at most 1,000 per
/// job), so that ticks due during a failover, which takes at most about T, are not lost; the keys make that a
/// no-op for ticks the previous enqueuer did enqueue. Done jobs MUST be kept (the queue's retention) longer than
/// that, or a catch-up could enqueue a tick again.
public actor PeriodicEnqueuer: Service {
    public nonisolated let jobs: [PeriodicJob]
    private let member: Member
    private let queues: WorkQueue
    private let logger: Logger
    private let wallSeconds: @Sendable () -> Int64
    /// How far back, in seconds, an enqueuer that just became active enqueues ticks it may have missed.
    public nonisolated let catchUp: Int64

    /// The enqueuers' lease length T unless one is given.
    public static let defaultActivationInterval: Duration = .seconds(5)

    /// The group whose active member enqueues `queue`'s periodic jobs.
    public static func groupName(of queue: QueueName) -> String { "\(queue).periodic" }

    /// How far back an enqueuer with lease length `activationInterval` enqueues ticks when it becomes active
    /// (two intervals, at least a second): done jobs MUST be kept at least this long.
    public static func catchUp(activationInterval: Duration) -> Duration {
        .seconds(max(1, (activationInterval * 2).components.seconds))
    }

    /// - Throws: ``ConfigurationError`` when the queue's name is too long to name its group.
    public init(
        jobs: [PeriodicJob],
        queue: QueueName,
        store: any LeaseStore & JobQueueStore,
        memberID: MemberID? = nil,
        heartbeatInterval: Duration = .seconds(1),
        activationInterval: Duration = PeriodicEnqueuer.defaultActivationInterval,
        logger: Logger = Logger(label: "understudy.periodic"),
        wallSeconds: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }
    ) throws(ConfigurationError) {
        let group = try GroupConfiguration(
            name: GroupName(Self.groupName(of: queue)), activeGoal: 1, heartbeatInterval: heartbeatInterval,
            activationInterval: activationInterval
        )
        self.jobs = jobs
        self.catchUp = Self.catchUp(activationInterval: activationInterval).components.seconds
        self.member = try Member(group: group, id: memberID, store: store, logger: logger)
        self.queues = WorkQueue(store: store)
        self.logger = logger
        self.wallSeconds = wallSeconds
    }

    /// Takes part in the group until shutdown; enqueues while active.
    public func run() async throws {
        let (jobs, queues, logger, wallSeconds, catchUp) = (self.jobs, self.queues, self.logger, self.wallSeconds, self.catchUp)
        try await member.whileActive { _ in
            try await Self.enqueue(jobs, on: queues, catchUp: catchUp, logger: logger, wallSeconds: wallSeconds)
        }
    }

    /// Leaves the group; ``run()`` returns once it has.
    public nonisolated func leave() {
        member.leave()
    }

    /// While active: the ticks of the catch-up window, then each tick as it falls due, until cancelled.
    private static func enqueue(
        _ jobs: [PeriodicJob], on queues: WorkQueue, catchUp: Int64, logger: Logger, wallSeconds: @Sendable () -> Int64
    ) async throws {
        let now = wallSeconds()
        var next: [(job: PeriodicJob, tick: Int64)] = []
        for job in jobs {
            var missed = job.schedule.tick(after: now - catchUp - 1)
            var count = 0
            while let tick = missed, tick <= now, count < 1_000 {
                try await enqueue(job, tick: tick, on: queues, logger: logger)
                missed = job.schedule.tick(after: tick)
                count += 1
            }
            if let tick = job.schedule.tick(after: now) { next.append((job, tick)) }
        }
        while let soonest = next.map(\.tick).min() {
            let wait = soonest - wallSeconds()
            if wait > 0 { try await Task.sleep(for: .seconds(wait)) }
            for (index, entry) in next.enumerated() where entry.tick <= wallSeconds() {
                try await enqueue(entry.job, tick: entry.tick, on: queues, logger: logger)
                next[index].tick = entry.job.schedule.tick(after: max(entry.tick, wallSeconds())) ?? .max
            }
            next.removeAll { $0.tick == .max }
        }
    }

    /// Enqueues one tick's job, trying again a few times a second apart while the store is away.
    private static func enqueue(_ job: PeriodicJob, tick: Int64, on queues: WorkQueue, logger: Logger) async throws {
        for attempt in 1...5 {
            do {
                let enqueued = try await queues.enqueue(job.spec(tick: tick))
                logger.info("periodic job enqueued", metadata: [
                    "job": "\(job.name)", "tick": "\(tick)", "id": "\(enqueued.id)", "deduplicated": "\(enqueued.deduplicated)",
                ])
                return
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                logger.warning("could not enqueue a periodic job", metadata: [
                    "job": "\(job.name)", "tick": "\(tick)", "attempt": "\(attempt)", "error": "\(error)",
                ])
                try await Task.sleep(for: .seconds(1))
            }
        }
    }
}
