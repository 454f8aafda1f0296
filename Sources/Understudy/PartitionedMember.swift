import Foundation
import Logging
import ServiceLifecycle
import UnderstudyCore
import UnderstudyStore

/// One member of a partitioned group: active for its share of the group's P partitions, each a lease with its
/// own fencing token, and told in order when a partition is assigned to it and when it is revoked.
///
/// `PartitionedMember` drives the sans-IO ``PartitionedMemberStateMachine`` with the host's monotonic clock and a
/// ``PartitionLeaseStore``: one round trip per heartbeat interval for all its partitions. It is a
/// swift-service-lifecycle `Service`: on graceful shutdown (or cancellation of ``run()``) it stops the work of
/// every partition and releases them at once, so the other members take over without waiting for expiry.
///
/// ```swift
/// let configuration = try PartitionedGroupConfiguration(group: GroupConfiguration(name: GroupName("orders")), partitions: 64)
/// let member = try PartitionedMember(group: configuration, store: store)
/// try await member.forEachPartition { activation in
///     try await consume(partition: activation.partition, fencingToken: activation.token) // cancelled on revocation
/// }
/// ```
public actor PartitionedMember: Service {
    public nonisolated let id: MemberID
    public nonisolated let configuration: PartitionedGroupConfiguration
    public nonisolated let info: MemberInfo
    /// Assignments, revocations and preparation hints, in order. Single consumer; the newest 65,536 are buffered.
    public nonisolated let events: AsyncStream<PartitionEvent>

    private let store: any PartitionLeaseStore
    private let logger: Logger
    private var machine: PartitionedMemberStateMachine
    private var work: (@Sendable (PartitionActivation) async throws -> Void)?
    private nonisolated let inputs: AsyncStream<Input>.Continuation
    private let inputStream: AsyncStream<Input>
    private let eventSink: AsyncStream<PartitionEvent>.Continuation
    private var ticks: TickScheduler.Registration?
    private var running = false
    /// The work of each partition under way.
    private var activities: [Int: StoppableWork] = [:]
    private var activations = 0
    private var storeFailures = 0
    private var newestView: GroupView?
    private let metrics: PartitionMetrics

    private enum Input: Sendable {
        case tick
        case reply(PartitionedMemberStateMachine.RequestID, Result<PartitionHeartbeatReply, any Error>)
        case workFinished(partition: Int, activation: Int, cancelledByUs: Bool)
        case changeAnnounced
        case drain
        case resume
        case shutdown
    }

    /// Creates a member; it joins the group when ``run()`` or ``forEachPartition(_:)`` is called.
    ///
    /// - Parameters:
    ///   - id: the member's id; a fresh UUID when `nil`. Two live processes MUST NOT share an id.
    ///   - weight: a member's share of the partitions is its weight over the sum of the weights (0...1,000,000).
    ///   - restAfterResigning: how long a partition whose work ended by itself waits before it is taken again.
    public init(
        group configuration: PartitionedGroupConfiguration,
        id: MemberID? = nil,
        weight: Int = 50,
        store: any PartitionLeaseStore,
        restAfterResigning: Duration? = nil,
        logger: Logger = Logger(label: "understudy")
    ) throws(ConfigurationError) {
        let id = if let id { id } else { try MemberID(UUID().uuidString.lowercased()) }
        let info = try MemberInfo(
            id: id,
            incarnation: UUID().uuidString.lowercased(),
            weight: weight,
            host: ProcessInfo.processInfo.hostName,
            pid: ProcessInfo.processInfo.processIdentifier
        )
        self.id = id
        self.configuration = configuration
        self.info = info
        self.store = store
        machine = PartitionedMemberStateMachine(configuration: configuration, member: info, restAfterResigning: restAfterResigning)
        var logger = logger
        logger[metadataKey: "group"] = "\(configuration.name)"
        logger[metadataKey: "member"] = "\(id)"
        self.logger = logger
        metrics = PartitionMetrics(group: configuration.name, member: id)
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(65_536))
        (inputStream, inputs) = AsyncStream.makeStream()
    }

    /// Joins the group and takes part until graceful shutdown, cancellation of the calling task, or ``leave()``;
    /// then stops the work of every partition, releases them and leaves.
    ///
    /// - Throws: ``MemberError`` when the store refuses the member for good (its id is alive elsewhere, the group
    ///   is partitioned otherwise) or when the member is already running.
    public func run() async throws {
        guard !running else { throw MemberError.alreadyRunning }
        running = true
        let inputs = self.inputs
        try await MemberShell.run({ try await self.loop() }, leave: { inputs.yield(.shutdown) })
    }

    /// Runs `body` for each partition assigned to this member, while it is, and cancels it on revocation, while
    /// taking part in the group as ``run()`` does.
    ///
    /// A partition is given back only after its `body` has returned, so the bodies of two members never overlap on
    /// one partition while leases are held. If `body` returns (or throws) by itself, the partition is given back
    /// and taken again after a rest. `body` MUST return promptly when cancelled: a partition whose lease cannot be
    /// renewed may be granted to another member once it expires, whether or not `body` has returned.
    public func forEachPartition(_ body: @escaping @Sendable (PartitionActivation) async throws -> Void) async throws {
        work = body
        try await run()
    }

    /// Asks the member to leave its group; ``run()`` returns once it has.
    public nonisolated func leave() {
        inputs.yield(.shutdown)
    }

    /// Gives every partition back (each revoked with reason `drained`, released once its work has stopped) and
    /// stays in the group, reporting itself `resting` and taking no partition, until ``resume()``.
    public nonisolated func drain() {
        inputs.yield(.drain)
    }

    /// Ends a ``drain()``: the member takes its share of the partitions again.
    public nonisolated func resume() {
        inputs.yield(.resume)
    }

    /// The partitions this member acts on, with their tokens.
    public var ownedPartitions: [Int: FencingToken] { machine.activePartitions }

    /// The member that owns `key`'s partition (``PartitionRouting``) as of the newest store answer, `nil` while
    /// the partition is between owners or before the store has answered.
    public func owner(of key: String) -> MemberID? {
        let partition = PartitionRouting.partition(of: key, count: configuration.partitions)
        return newestView?.leases.first { $0.slot == partition }?.holder
    }

    /// The group as of the newest store answer to this member, at most about one heartbeat interval old.
    ///
    /// - Throws: ``StoreError`` when the store has not answered this member yet.
    public func status() throws -> GroupStatus {
        guard let newestView else {
            throw StoreError(.unavailable, "group \"\(configuration.name)\": the store has not answered this member yet")
        }
        return GroupStatus(view: newestView)
    }

    /// This member's state: `active` while it owns a partition.
    public var state: MemberState { machine.status }

    // MARK: Loop

    private func loop() async throws {
        let ticks = TickScheduler.shared.register { [inputs] in inputs.yield(.tick) }
        self.ticks = ticks
        defer { TickScheduler.shared.unregister(ticks) }
        let rejection = await withDiscardingTaskGroup { group in
            if let changes = (store as? any ChangeAnnouncing)?.changes(of: configuration.name) {
                group.addTask { [inputs] in
                    for await _ in changes { inputs.yield(.changeAnnounced) }
                }
            }
            defer { group.cancelAll() }
            return await takePart(in: &group)
        }
        eventSink.finish()
        if let rejection { throw MemberError.rejected(rejection) }
    }

    private func takePart(in group: inout DiscardingTaskGroup) async -> HeartbeatRejection? {
        logger.notice("joining", metadata: ["partitions": "\(configuration.partitions)", "weight": "\(info.weight)"])
        if case .finished(let rejection) = execute(machine.start(now: MonotonicClock.now()), in: &group) { return rejection }
        for await input in inputStream {
            let now = MonotonicClock.now()
            let actions: [PartitionedMemberStateMachine.Action]
            switch input {
            case .tick:
                actions = machine.tick(now: now)
            case .reply(let id, .success(let reply)):
                if storeFailures > 0 {
                    logger.info("store reachable again", metadata: ["failures": "\(storeFailures)"])
                    storeFailures = 0
                }
                newestView = reply.view
                actions = machine.heartbeatReplied(reply, to: id, now: now)
            case .reply(let id, .failure(let rejection as HeartbeatRejection)):
                logger.error("\(rejection)")
                actions = machine.heartbeatRejected(id, rejection, now: now)
            case .reply(let id, .failure(let error)):
                storeFailures += 1
                metrics.storeErrors.increment()
                if storeFailures == 1 || storeFailures.isMultiple(of: 50) {
                    logger.warning("heartbeat failed, retrying", metadata: ["error": "\(error)", "failures": "\(storeFailures)"])
                }
                actions = machine.heartbeatFailed(id, now: now)
            case .workFinished(let partition, let number, let cancelledByUs):
                guard activities[partition]?.number == number else { continue }
                activities[partition]?.updates.finish()
                activities[partition] = nil
                metrics.owned.record(Double(activities.count))
                actions = cancelledByUs
                    ? machine.workStopped(partition: partition, now: now)
                    : machine.workEnded(partition: partition, now: now)
            case .changeAnnounced:
                actions = machine.changeAnnounced(now: now)
            case .drain:
                actions = machine.drainRequested(now: now)
            case .resume:
                actions = machine.resumeRequested(now: now)
            case .shutdown:
                actions = machine.shutdownRequested(now: now)
            }
            if case .finished(let rejection) = execute(actions, in: &group) { return rejection }
        }
        return nil
    }

    private enum Progress {
        case running
        case finished(HeartbeatRejection?)
    }

    /// Carries out the actions, in order; heartbeats and the partitions' work start as children of `group`.
    private func execute(_ actions: [PartitionedMemberStateMachine.Action], in group: inout DiscardingTaskGroup) -> Progress {
        for action in actions {
            switch action {
            case .sendHeartbeat(let heartbeat, let id):
                let store = self.store
                let inputs = self.inputs
                let roundTrip = metrics.heartbeatRoundTrip
                group.addTask {
                    let result: Result<PartitionHeartbeatReply, any Error>
                    let sent = MonotonicClock.now()
                    do {
                        result = .success(try await store.heartbeat(heartbeat))
                        roundTrip.recordNanoseconds(MonotonicClock.now().nanoseconds - sent.nanoseconds)
                    } catch {
                        result = .failure(error)
                    }
                    inputs.yield(.reply(id, result))
                }
            case .emit(let event):
                log(event)
                eventSink.yield(event)
            case .startWork(let partition, let token):
                startWork(partition: partition, token: token, in: &group)
                metrics.owned.record(Double(activities.count))
            case .stopWork(let partition, _):
                stopWork(partition: partition)
            case .leaseValid(let partitions, let until):
                for partition in partitions { activities[partition]?.updates.yield(.validUntil(until)) }
            case .stopWorkBy(let partitions, let deadline):
                for partition in partitions { activities[partition]?.updates.yield(.stopBy(deadline)) }
            case .scheduleTick(let instant):
                if let ticks { TickScheduler.shared.schedule(ticks, at: instant) }
            case .finish(let rejection):
                metrics.owned.record(0)
                return .finished(rejection)
            }
        }
        return .running
    }

    private func startWork(partition: Int, token: FencingToken, in group: inout DiscardingTaskGroup) {
        let inputs = self.inputs
        activations += 1
        let number = activations
        let (updates, continuation) = AsyncStream<Activation.LeaseUpdate>.makeStream()
        let activation = PartitionActivation(
            partition: partition,
            partitions: configuration.partitions,
            token: token,
            leaseUpdates: updates
        )
        guard let work else {
            activities[partition] = StoppableWork(number: number, stop: nil, updates: continuation)
            return
        }
        let (stopped, stop) = AsyncStream<Void>.makeStream()
        let logger = self.logger
        group.addTask {
            let cancelledByUs = await StoppableWork.race(
                { try await work(activation) }, until: stopped, logger: logger, metadata: ["partition": "\(partition)"]
            )
            inputs.yield(.workFinished(partition: partition, activation: number, cancelledByUs: cancelledByUs))
        }
        activities[partition] = StoppableWork(number: number, stop: stop, updates: continuation)
    }

    private func stopWork(partition: Int) {
        guard var activity = activities[partition] else { return }
        let reportNow = activity.requestStop()
        activities[partition] = activity
        if reportNow { inputs.yield(.workFinished(partition: partition, activation: activity.number, cancelledByUs: true)) }
    }

    private func log(_ event: PartitionEvent) {
        switch event {
        case .assigned(let partition, let token):
            metrics.transitions(MemberMetricLabel.elected).increment()
            logger.info("partition assigned", metadata: ["partition": "\(partition)", "token": "\(token)"])
        case .revoked(let partition, let reason):
            metrics.transitions(reason.rawValue).increment()
            logger.info("partition revoked", metadata: ["partition": "\(partition)", "reason": "\(reason)"])
        case .prepare(let partition):
            logger.debug("preparing for a partition", metadata: ["partition": "\(partition)"])
        case .preparationWithdrawn(let partition):
            logger.debug("preparation withdrawn", metadata: ["partition": "\(partition)"])
        }
    }
}

/// One assignment of one partition to a member, handed to the body of ``PartitionedMember/forEachPartition(_:)``.
public struct PartitionActivation: Sendable {
    /// The partition, 0 ..< ``partitions``.
    public let partition: Int
    /// P, the group's number of partitions.
    public let partitions: Int
    /// The partition's fencing token for this assignment; stamp work with it.
    public let token: FencingToken
    /// The partition's lease deadlines, in order, until the assignment ends (see ``Activation/LeaseUpdate``).
    public let leaseUpdates: AsyncStream<Activation.LeaseUpdate>
}
