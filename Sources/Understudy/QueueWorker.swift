import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import UnderstudyCore
import UnderstudyStore

/// One claimed job as its handler sees it.
public struct RunningJob: Sendable {
    public let claim: JobClaim
    /// Each new work deadline, starting with the first: the job MUST have stopped by the newest (a claim not
    /// renewed in time is stopped by cancelling the handler before that). A handler that runs a command under a
    /// watchdog passes each one on; others can ignore them.
    public let deadlines: AsyncStream<Instant>
}

/// A worker of a work queue: claims jobs, runs a handler for each with bounded concurrency, renews all its claims
/// in one round trip per renew interval, and records each job's outcome with its claim's token.
///
/// It drives a ``QueueWorkerStateMachine``: a job whose claim cannot be renewed is cancelled at T − I, before
/// the store can hand it to another worker; an outcome the store finds stale is not recorded and the job is
/// logged as lost. A handler that returns completes its job; one that throws fails it (retried after a backoff,
/// until its last attempt sends it to the dead letter). As a swift-service-lifecycle `Service`, a graceful
/// shutdown stops claiming, lets running jobs finish within the stop grace, then cancels them and gives their
/// claims back at once; cancelling ``run()`` does the same.
public actor QueueWorker: Service {
    public typealias Handler = @Sendable (RunningJob) async throws -> Void

    public nonisolated let configuration: QueueWorkerConfiguration
    private let store: any JobQueueStore
    private let handler: Handler
    private let logger: Logger
    private let metrics: QueueMetrics
    private var machine: QueueWorkerStateMachine
    private var running = false
    private var ticks: TickScheduler.Registration?
    private var jobs: [JobID: RunningHandler] = [:]
    private var storeFailures = 0
    /// How long done and cancelled jobs are kept, and how often this worker deletes older ones.
    private let retention: Duration
    private let pruneInterval: Duration

    private nonisolated let inputs: AsyncStream<Input>.Continuation
    private let inputStream: AsyncStream<Input>

    private enum Input: Sendable {
        case tick
        case claimed(Result<[JobClaim], any Error>, sentAt: Instant)
        case renewed([ClaimReference], Result<[Bool], any Error>, sentAt: Instant)
        case recorded([JobOutcome], Result<[OutcomeReply], any Error>)
        case jobEnded(JobID, QueueWorkerStateMachine.JobResult)
        case announced
        case shutdown
    }

    private struct RunningHandler {
        var deadlines: AsyncStream<Instant>.Continuation
        var stop: AsyncStream<Void>.Continuation
    }

    /// - Parameters:
    ///   - retention: how long done and cancelled jobs are kept before this worker deletes them (at most 1,000 at
    ///     a time, every `pruneInterval`), so the store does not grow under steady load.
    ///   - pruneInterval: also how often the worker reads the queue's counts for the `understudy_queue_jobs` gauges.
    public init(
        configuration: QueueWorkerConfiguration,
        store: any JobQueueStore,
        retention: Duration = .seconds(3_600),
        pruneInterval: Duration = .seconds(30),
        logger: Logger = Logger(label: "understudy.queue"),
        handler: @escaping Handler
    ) {
        self.configuration = configuration
        self.store = store
        self.handler = handler
        self.retention = retention
        self.pruneInterval = pruneInterval
        var logger = logger
        logger[metadataKey: "queue"] = "\(configuration.queue)"
        logger[metadataKey: "worker"] = "\(configuration.worker.id)"
        self.logger = logger
        self.machine = QueueWorkerStateMachine(configuration: configuration)
        self.metrics = QueueMetrics(queue: configuration.queue)
        (inputStream, inputs) = AsyncStream.makeStream()
    }

    /// Works until shutdown: a graceful shutdown of the service group, cancellation, or ``shutdown()``.
    public func run() async throws {
        guard !running else { throw MemberError.alreadyRunning }
        running = true
        let inputs = self.inputs
        // As for `Member`: cancelling the caller must drain in order (give the claims back), so the loop is the
        // one task that is not a child of the caller's; every other task of the worker is a child of the loop.
        let loop = Task { await self.loop() }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await loop.value
            } onGracefulShutdown: {
                inputs.yield(.shutdown)
            }
        } onCancel: {
            inputs.yield(.shutdown)
        }
    }

    /// Asks the worker to drain; ``run()`` returns once every claim is recorded or given back.
    public nonisolated func shutdown() {
        inputs.yield(.shutdown)
    }

    /// How many claims the worker holds now.
    public var heldCount: Int { machine.heldCount }

    private func loop() async {
        let ticks = TickScheduler.shared.register { [inputs] in inputs.yield(.tick) }
        self.ticks = ticks
        defer { TickScheduler.shared.unregister(ticks) }
        await withDiscardingTaskGroup { group in
            let announcements = store.enqueued(on: configuration.queue)
            group.addTask { [inputs] in
                for await _ in announcements { inputs.yield(.announced) }
            }
            group.addTask { [store, retention, pruneInterval, logger, metrics, queue = configuration.queue] in
                await Self.maintain(store, queue: queue, retention: retention, every: pruneInterval, metrics: metrics, logger: logger)
            }
            defer { group.cancelAll() }
            logger.notice("working", metadata: ["store": "\(store)", "concurrency": "\(configuration.concurrency)"])
            guard await execute(machine.start(now: MonotonicClock.now()), in: &group) else { return }
            for await input in inputStream {
                let now = MonotonicClock.now()
                let actions: [QueueWorkerStateMachine.Action]
                switch input {
                case .tick:
                    actions = machine.tick(now: now)
                case .claimed(.success(let claims), let sentAt):
                    storeReached()
                    for claim in claims { metrics.claimed(claim) }
                    actions = machine.claimed(claims, sentAt: sentAt, now: now)
                case .claimed(.failure(let error), _):
                    storeFailed("claim", error)
                    actions = machine.claimFailed(now: now)
                case .renewed(let references, .success(let valid), let sentAt):
                    storeReached()
                    actions = machine.renewed(Array(zip(references, valid)), sentAt: sentAt, now: now)
                case .renewed(_, .failure(let error), _):
                    storeFailed("renewal", error)
                    actions = machine.renewFailed(now: now)
                case .recorded(let outcomes, .success(let replies)):
                    storeReached()
                    for (outcome, reply) in zip(outcomes, replies) { metrics.recorded(outcome, reply) }
                    actions = machine.recorded(outcomes, replies: replies, now: now)
                case .recorded(let outcomes, .failure(let error)):
                    storeFailed("record", error)
                    actions = machine.recordFailed(outcomes, now: now)
                case .jobEnded(let id, let result):
                    if let running = jobs.removeValue(forKey: id) { running.deadlines.finish() }
                    actions = machine.jobEnded(id, result, jitter: Double.random(in: 0..<1), now: now)
                case .announced:
                    actions = machine.jobsAnnounced(now: now)
                case .shutdown:
                    logger.notice("draining", metadata: ["held": "\(machine.heldCount)"])
                    actions = machine.shutdown(now: now)
                }
                guard await execute(actions, in: &group) else { return }
            }
        }
        logger.notice("stopped")
    }

    /// Carries out the actions, then gives back the claims they release; returns `false` once the machine has
    /// finished. Claims are given back here, awaited, not in a child task: the last ones come with the machine's
    /// finish, when the worker's child tasks are cancelled, and a cancelled give-back would leave them to expire.
    private func execute(_ actions: [QueueWorkerStateMachine.Action], in group: inout DiscardingTaskGroup) async -> Bool {
        var releases: [[ClaimReference]] = []
        let running = perform(actions, releasing: &releases, in: &group)
        for references in releases {
            logger.info("giving back claims", metadata: ["jobs": "\(references.map(\.id))"])
            do { try await store.release(references) } catch {
                logger.warning("could not give claims back; they expire instead", metadata: ["error": "\(error)"])
            }
        }
        return running
    }

    /// Carries out every action but the give-backs, which it collects in `releases`; `false` once finished.
    private func perform(
        _ actions: [QueueWorkerStateMachine.Action], releasing releases: inout [[ClaimReference]], in group: inout DiscardingTaskGroup
    ) -> Bool {
        let (store, inputs, configuration) = (self.store, self.inputs, self.configuration)
        for action in actions {
            switch action {
            case .claim(let limit):
                group.addTask {
                    let sentAt = MonotonicClock.now()
                    let result = await Result(catching: { try await store.claim(queue: configuration.queue, worker: configuration.worker, limit: limit, lease: configuration.claimLease) })
                    inputs.yield(.claimed(result, sentAt: sentAt))
                }
            case .renew(let references):
                group.addTask {
                    let sentAt = MonotonicClock.now()
                    let result = await Result(catching: { try await store.renew(references, lease: configuration.claimLease) })
                    inputs.yield(.renewed(references, result, sentAt: sentAt))
                }
            case .record(let outcomes):
                group.addTask {
                    let result = await Result(catching: { try await store.record(outcomes) })
                    inputs.yield(.recorded(outcomes, result))
                }
            case .release(let references):
                releases.append(references)
            case .startJob(let claim, let stopBy):
                start(claim, stopBy: stopBy, in: &group)
            case .extendJob(let id, let until):
                jobs[id]?.deadlines.yield(until)
            case .stopJob(let id, let reason):
                logger.warning("stopping job", metadata: ["job": "\(id)", "reason": "\(reason)"])
                jobs[id]?.stop.yield()
            case .abandon(let id, let reason):
                metrics.lost()
                logger.warning("job lost; its outcome is not recorded", metadata: ["job": "\(id)", "reason": "\(reason)"])
            case .scheduleTick(let instant):
                if let ticks { TickScheduler.shared.schedule(ticks, at: instant) }
            case .finish:
                return false
            }
        }
        return true
    }

    /// Runs the handler as a child of `group`; it is cancelled when the job is stopped, and reports its end once
    /// it has returned.
    private func start(_ claim: JobClaim, stopBy: Instant, in group: inout DiscardingTaskGroup) {
        let (deadlines, deadlineSink) = AsyncStream<Instant>.makeStream(bufferingPolicy: .bufferingNewest(1))
        deadlineSink.yield(stopBy)
        let (stopped, stop) = AsyncStream<Void>.makeStream()
        jobs[claim.id] = RunningHandler(deadlines: deadlineSink, stop: stop)
        let (handler, inputs, logger) = (self.handler, self.inputs, self.logger)
        group.addTask {
            let result = await withTaskGroup(of: QueueWorkerStateMachine.JobResult?.self) { race in
                race.addTask {
                    do {
                        try await handler(RunningJob(claim: claim, deadlines: deadlines))
                        return .succeeded
                    } catch {
                        return .failed(String(describing: error))
                    }
                }
                race.addTask {
                    for await _ in stopped { return nil }
                    return nil
                }
                // The stop cancels the handler, which is still awaited.
                var outcome: QueueWorkerStateMachine.JobResult?
                if let first = await race.next() { outcome = first }
                race.cancelAll()
                if outcome == nil { outcome = await race.next() ?? nil }
                return outcome ?? .failed("stopped")
            }
            if case .failed(let error) = result { logger.info("job failed", metadata: ["job": "\(claim.id)", "error": "\(error)"]) }
            inputs.yield(.jobEnded(claim.id, result))
        }
    }

    private func storeReached() {
        guard storeFailures > 0 else { return }
        logger.info("store reachable again", metadata: ["failures": "\(storeFailures)"])
        storeFailures = 0
    }

    private func storeFailed(_ what: String, _ error: any Error) {
        storeFailures += 1
        metrics.storeFailed()
        if storeFailures == 1 || storeFailures.isMultiple(of: 50) {
            logger.warning("\(what) failed, retrying", metadata: ["error": "\(error)", "failures": "\(storeFailures)"])
        }
    }

    /// Every `interval`, until cancelled: deletes done and cancelled jobs older than the retention, and reads the
    /// queue's counts for the depth gauges.
    private static func maintain(
        _ store: any JobQueueStore, queue: QueueName, retention: Duration, every interval: Duration, metrics: QueueMetrics, logger: Logger
    ) async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
                while try await store.prune(retention: retention, limit: 1_000) == 1_000 {}
                metrics.counted(try await store.stats(queue: queue).first)
            } catch is CancellationError {
                return
            } catch {
                logger.debug("pruning finished jobs failed", metadata: ["error": "\(error)"])
            }
        }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
