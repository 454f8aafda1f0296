import Foundation
import Logging
import ServiceLifecycle
import UnderstudyCore
import UnderstudyStore

/// One member of a fault-tolerance group: joins the group through a store, and is told when to prepare,
/// activate and deactivate.
///
/// `Member` drives the sans-IO ``MemberStateMachine`` with the host's monotonic clock and a
/// ``LeaseStore``. It is a swift-service-lifecycle `Service`: on graceful shutdown (or cancellation of
/// ``run()``) an active member stops its work and releases its slot at once, so a standby takes over without
/// waiting for the lease to expire.
///
/// ```swift
/// let member = try Member(group: GroupConfiguration(name: GroupName("billing")), store: SQLiteStore())
/// try await member.whileActive { token in
///     try await runScheduler(fencingToken: token) // cancelled on deactivation
/// }
/// ```
public actor Member: Service {
    /// The member's id in its group.
    public nonisolated let id: MemberID
    public nonisolated let configuration: GroupConfiguration
    public nonisolated let info: MemberInfo
    /// Prepare, activate and deactivate events, in order. Single consumer; the newest 1,024 are buffered.
    public nonisolated let events: AsyncStream<MemberEvent>

    private let store: any LeaseStore
    private var logger: Logger
    private var machine: MemberStateMachine
    private var work: (@Sendable (Activation) async throws -> Void)?

    private nonisolated let inputs: AsyncStream<Input>.Continuation
    private let inputStream: AsyncStream<Input>
    private let eventSink: AsyncStream<MemberEvent>.Continuation
    private var ticks: TickScheduler.Registration?
    private var running = false
    private var activity: StoppableWork?
    private var activations = 0
    private var storeFailures = 0
    /// The group as of the newest store answer.
    private var newestView: GroupView?
    private let metrics: MemberMetrics

    /// Every member of this process puts its heartbeats on the same grid (see
    /// ``MemberStateMachine/heartbeatPhase``), so the store batches them; other processes draw other phases, so
    /// the store does not see every host at once.
    private static let heartbeatPhase = Duration.nanoseconds(Int64.random(in: 0..<1_000_000_000_000))

    private enum Input: Sendable {
        case tick
        case reply(MemberStateMachine.RequestID, Result<HeartbeatReply, any Error>)
        case workFinished(activation: Int, cancelledByUs: Bool)
        case changeAnnounced
        case shutdown
        case drain
        case resume
    }

    /// Creates a member; it joins the group when ``run()`` or ``whileActive(_:)`` is called.
    ///
    /// - Parameters:
    ///   - id: the member's id; a fresh UUID when `nil`. Two live processes MUST NOT share an id.
    ///   - weight: higher weights rank first and, with preemption, take over from lower ones (0...1,000,000).
    ///   - restAfterResigning: how long a member whose work ended by itself waits before competing again.
    public init(
        group configuration: GroupConfiguration,
        id: MemberID? = nil,
        weight: Int = 50,
        store: any LeaseStore,
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
        self.machine = MemberStateMachine(
            configuration: configuration,
            member: info,
            restAfterResigning: restAfterResigning,
            heartbeatPhase: Self.heartbeatPhase
        )
        var logger = logger
        logger[metadataKey: "group"] = "\(configuration.name)"
        logger[metadataKey: "member"] = "\(id)"
        self.logger = logger
        self.metrics = MemberMetrics(group: configuration.name, member: id)
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1_024))
        (inputStream, inputs) = AsyncStream.makeStream()
    }

    /// Joins the group and takes part until graceful shutdown, cancellation of the calling task, or
    /// ``leave()``; then stops any work, releases the slot and leaves.
    ///
    /// - Throws: ``MemberError`` when the store refuses the member for good (its id is alive elsewhere, the
    ///   group runs with another active goal) or when the member is already running.
    public func run() async throws {
        guard !running else { throw MemberError.alreadyRunning }
        running = true
        let inputs = self.inputs
        try await MemberShell.run({ try await self.loop() }, leave: { inputs.yield(.shutdown) })
    }

    /// Runs `body` each time this member activates and cancels it on deactivation, while taking part in the
    /// group as ``run()`` does.
    ///
    /// The member gives its slot back only after `body` has returned, so the bodies of two members never
    /// overlap while leases are held. If `body` returns (or throws) by itself while active, the member gives
    /// its slot up and rests before competing again, since another member may be healthier.
    ///
    /// `body` MUST return promptly when cancelled: if the lease cannot be renewed, another member may be
    /// granted the slot once it expires, whether or not `body` has returned.
    public func whileActive(_ body: @escaping @Sendable (FencingToken) async throws -> Void) async throws {
        try await whileActiveSupervised { activation in try await body(activation.token) }
    }

    /// Like ``whileActive(_:)``, with the lease's deadlines for work that must be stopped from outside the
    /// process when this one cannot (see ``Activation``).
    public func whileActiveSupervised(_ body: @escaping @Sendable (Activation) async throws -> Void) async throws {
        work = body
        try await run()
    }

    /// Asks the member to leave its group; ``run()`` returns once it has.
    public nonisolated func leave() {
        inputs.yield(.shutdown)
    }

    /// Asks the member to step down and stay standby: an active member stops its work and hands its slot over
    /// at once; until ``resume()`` it reports itself `resting` and never acquires.
    public nonisolated func drain() {
        inputs.yield(.drain)
    }

    /// Ends a ``drain()``: the member competes for a slot again.
    public nonisolated func resume() {
        inputs.yield(.resume)
    }

    /// How long the member rests when its work next ends by itself before it competes again (a restart backoff).
    /// Set it before the work returns for it to apply to that return.
    public func setRestAfterResigning(_ rest: Duration) {
        machine.restAfterResigning = rest
    }

    /// The group as the store showed it in its newest answer to this member (at most about one heartbeat
    /// interval old). It asks the store nothing, so serving it, however often, never delays a heartbeat.
    ///
    /// - Throws: ``StoreError`` when the store has not answered this member yet.
    public func status() throws -> GroupStatus {
        guard let newestView else {
            throw StoreError(.unavailable, "group \"\(configuration.name)\": the store has not answered this member yet")
        }
        return GroupStatus(view: newestView)
    }

    /// This member's state as its state machine sees it.
    public var state: MemberState { machine.status }

    /// The fencing token this member acts with while its ``state`` is ``MemberState/active``; `nil` otherwise.
    public var activeToken: FencingToken? { machine.activeToken }

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

    /// Drives the machine with the member's inputs until it finishes; heartbeats and the work run as children of
    /// `group`. Returns the rejection it finished with, if any.
    private func takePart(in group: inout DiscardingTaskGroup) async -> HeartbeatRejection? {
        logger.notice("joining", metadata: ["store": "\(store)", "weight": "\(info.weight)"])
        if case .finished(let rejection) = execute(machine.start(now: MonotonicClock.now()), in: &group) { return rejection }
        for await input in inputStream {
            let now = MonotonicClock.now()
            let actions: [MemberStateMachine.Action]
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
                metrics.storeFailed()
                if storeFailures == 1 || storeFailures.isMultiple(of: 50) {
                    logger.warning("heartbeat failed, retrying", metadata: ["error": "\(error)", "failures": "\(storeFailures)"])
                }
                actions = machine.heartbeatFailed(id, now: now)
            case .workFinished(let number, let cancelledByUs):
                guard activity?.number == number else { continue }
                activity?.updates.finish()
                activity = nil
                actions = cancelledByUs ? machine.workStopped(now: now) : machine.workEnded(now: now)
            case .changeAnnounced:
                actions = machine.changeAnnounced(now: now)
            case .shutdown:
                actions = machine.shutdownRequested(now: now)
            case .drain:
                actions = machine.drainRequested(now: now)
            case .resume:
                actions = machine.resumeRequested(now: now)
            }
            if case .finished(let rejection) = execute(actions, in: &group) { return rejection }
        }
        return nil
    }

    /// Whether the machine still drives the member after a batch of actions.
    private enum Progress {
        case running
        /// The member has left its group (rejection `nil`) or was refused for good.
        case finished(HeartbeatRejection?)
    }

    /// Carries out the actions, in order; heartbeats and the work start as children of `group`.
    private func execute(_ actions: [MemberStateMachine.Action], in group: inout DiscardingTaskGroup) -> Progress {
        for action in actions {
            switch action {
            case .sendHeartbeat(let heartbeat, let id):
                let store = self.store
                let inputs = self.inputs
                let roundTrip = metrics.heartbeatRoundTrip
                group.addTask {
                    let result: Result<HeartbeatReply, any Error>
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
                switch event {
                case .activate(let token): metrics.activated(token)
                case .deactivate(let reason): metrics.deactivated(reason)
                case .prepareToActivate, .prepareWithdrawn: break
                }
            case .startWork(let token):
                startWork(token: token, in: &group)
            case .stopWork:
                stopWork()
            case .leaseValid(let until):
                activity?.updates.yield(.validUntil(until))
            case .stopWorkBy(let deadline):
                activity?.updates.yield(.stopBy(deadline))
                if activity != nil {
                    logger.warning("lease at risk: work must stop", metadata: ["within": "\((deadline - MonotonicClock.now()).formatted)"])
                }
            case .scheduleTick(let instant):
                logger.trace("next tick", metadata: ["in": "\((instant - MonotonicClock.now()).formatted)", "state": "\(machine.status)"])
                if let ticks { TickScheduler.shared.schedule(ticks, at: instant) }
            case .finish(let rejection):
                return .finished(rejection)
            }
        }
        return .running
    }

    /// Starts the work as a child of `group`, which reports ``Input/workFinished(activation:cancelledByUs:)`` only
    /// once the body has returned.
    private func startWork(token: FencingToken, in group: inout DiscardingTaskGroup) {
        let inputs = self.inputs
        activations += 1
        let number = activations
        let (updates, continuation) = AsyncStream<Activation.LeaseUpdate>.makeStream()
        let activation = Activation(token: token, leaseUpdates: updates)
        guard let work else {
            activity = StoppableWork(number: number, stop: nil, updates: continuation)
            return
        }
        let (stopped, stop) = AsyncStream<Void>.makeStream()
        let logger = self.logger
        group.addTask {
            let cancelledByUs = await StoppableWork.race({ try await work(activation) }, until: stopped, logger: logger)
            inputs.yield(.workFinished(activation: number, cancelledByUs: cancelledByUs))
        }
        activity = StoppableWork(number: number, stop: stop, updates: continuation)
    }

    private func stopWork() {
        // Without an activity the work ended by itself just before; its `workFinished` is already queued.
        guard var activity else { return }
        let reportNow = activity.requestStop()
        self.activity = activity
        if reportNow { inputs.yield(.workFinished(activation: activity.number, cancelledByUs: true)) }
    }

    private func log(_ event: MemberEvent) {
        switch event {
        case .activate(let token):
            logger.notice("activated", metadata: ["token": "\(token)"])
        case .deactivate(let reason):
            logger.notice("deactivated", metadata: ["reason": "\(reason)"])
        case .prepareToActivate:
            logger.info("preparing to activate")
        case .prepareWithdrawn:
            logger.info("preparation withdrawn")
        }
    }
}

/// One activation of a member, handed to the body of ``Member/whileActiveSupervised(_:)``.
public struct Activation: Sendable {
    /// What the member learns about its lease while active.
    public enum LeaseUpdate: Sendable, Hashable {
        /// The lease is vouched for until this instant of ``MonotonicClock`` (shared by all processes on the
        /// host): a watchdog in another process may let the work run until then even if this one freezes.
        case validUntil(Instant)
        /// The lease can no longer be renewed: the work MUST have stopped by this instant of ``MonotonicClock``.
        case stopBy(Instant)
    }

    /// The fencing token of this activation; stamp work with it.
    public let token: FencingToken
    /// Lease deadlines, in order, until the activation ends.
    public let leaseUpdates: AsyncStream<LeaseUpdate>
}

/// Why a member stopped for good.
public enum MemberError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The store refused the member (see ``HeartbeatRejection``).
    case rejected(HeartbeatRejection)
    /// ``Member/run()`` was called on a member that is already running.
    case alreadyRunning

    public var description: String {
        switch self {
        case .rejected(let rejection): rejection.description
        case .alreadyRunning: "the member is already running: call run() once"
        }
    }
}
