import Foundation
import Logging
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyStore

/// The shell of `understudy run --partitions P`: a ``PartitionedMember`` whose work is one command per partition
/// it owns, each under a watchdog of its own and bound to that partition's lease exactly as ``Supervisor`` binds
/// its command to a slot's: SIGTERM on revocation and SIGKILL after the stop grace (at the lease's kill deadline
/// at the latest), the partition released only once the command's tree is proven gone, and released by the
/// watchdog itself (leaving the group) if this supervisor dies or freezes.
///
/// Each command gets `UNDERSTUDY_PARTITION` (0-based), `UNDERSTUDY_PARTITIONS` (P) and that partition's
/// `UNDERSTUDY_FENCING_TOKEN`; hooks run per partition with the same variables. Like ``Supervisor`` it touches
/// nothing process-wide, so one process can run many.
public final class PartitionedSupervisor: Sendable {
    public let settings: Supervisor.Settings
    public let partitions: PartitionedGroupConfiguration
    private let store: any PartitionLeaseStore & GroupDirectory

    private struct State {
        var member: PartitionedMember?
        var shuttingDown = false
        var drained = false
        /// The newest transitions, oldest first.
        var history: [Supervisor.Transition] = []
        var stoppedAtOnce = false
        var children: [Int: WatchedProcess] = [:]
        var tokens: [Int: FencingToken] = [:]
        var reasons: [Int: DeactivationReason] = [:]
    }

    private let state = Mutex(State())
    private let logger: Logger

    /// - Throws: ``SupervisorError`` when the settings' store holds no partitioned groups.
    public init(settings: Supervisor.Settings, partitions: PartitionedGroupConfiguration) throws(SupervisorError) {
        guard let store = settings.store as? any PartitionLeaseStore & GroupDirectory else {
            throw SupervisorError(.storeUnavailable, "\(settings.store) does not hold partitioned groups")
        }
        self.settings = settings
        self.partitions = partitions
        self.store = store
        logger = settings.supervisorLogger()
    }

    /// SIGKILL goes out this long before a partition's work deadline (see ``Supervisor/killMargin``).
    public var killMargin: Duration { settings.configuration.heartbeatInterval / 4 }

    /// Takes part in the group until ``shutdown(reason:)``. The store is the owner's to close.
    ///
    /// - Throws: ``SupervisorError`` when the store refuses the member.
    public func run() async throws(SupervisorError) -> Supervisor.Outcome {
        let memberLogger = settings.memberLogger()
        let member: PartitionedMember
        do {
            member = try PartitionedMember(
                group: partitions,
                id: settings.memberID,
                weight: settings.weight,
                store: store,
                restAfterResigning: settings.restart.backoff,
                logger: memberLogger
            )
        } catch {
            throw SupervisorError(.invalidConfiguration, error.description)
        }
        try await checkMembership()
        // A shutdown or drain asked for before the member existed takes effect now.
        let (shuttingDown, drained) = state.withLock { state in
            state.member = member
            return (state.shuttingDown, state.drained)
        }
        if drained { member.drain() }
        if shuttingDown { member.leave() }
        logger.notice("joined", metadata: [
            "store": "\(settings.store)", "weight": "\(settings.weight)", "pid": "\(getpid())",
            "partitions": "\(partitions.partitions)", "containment": "\(settings.containment)",
        ])
        let transitions = Task { await logTransitions(member.events) }
        let outcome: Result<Void, any Error>
        do {
            try await member.forEachPartition { activation in await self.run(activation, member: member) }
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        try SupervisorError.check(outcome)
        await transitions.value
        logger.notice("left")
        return state.withLock { $0.stoppedAtOnce } ? .stoppedAtOnce : .left
    }

    /// Leaves the group gracefully: stops every partition's command, releases each once its tree is proven gone,
    /// and lets ``run()`` return. Returns whether this was the first request.
    @discardableResult
    public func shutdown(reason: String) -> Bool {
        let (first, member) = state.withLock { state in
            defer { state.shuttingDown = true }
            return (!state.shuttingDown, state.member)
        }
        guard first else { return false }
        logger.notice("shutting down", metadata: ["signal": "\(reason)"])
        member?.leave()
        return true
    }

    /// Gives every partition back (each command is stopped as on a rebalance, and its partition released once it
    /// is proven gone) and stays a member that takes no partition, reporting itself `resting`, until ``resume()``.
    public func drain() {
        setDrained(true)?.drain()
    }

    /// Ends a ``drain()``: the member takes its share of the partitions again.
    public func resume() {
        setDrained(false)?.resume()
    }

    /// Records the operator's wish (for a member not created yet) and returns the member to tell, if any.
    private func setDrained(_ drained: Bool) -> PartitionedMember? {
        logger.notice(drained ? "draining" : "resuming")
        return state.withLock { state in
            state.drained = drained
            return state.member
        }
    }

    /// Whether ``drain()`` holds.
    public var isDrained: Bool { state.withLock { $0.drained } }

    /// The member, once ``run()`` has created it.
    public var member: PartitionedMember? { state.withLock { $0.member } }

    /// The newest assignments and revocations of partitions, oldest first (at most ``Supervisor/historyLength``).
    public var history: [Supervisor.Transition] { state.withLock { $0.history } }

    /// Stops at once: kills every command's tree, and once they are proven gone releases their partitions and
    /// leaves (waiting at most T: the leases expire anyway).
    public func stopAtOnce(reason: String) async {
        let (children, tokens, member) = state.withLock { state in
            state.shuttingDown = true
            state.stoppedAtOnce = true
            return (state.children, state.tokens, state.member)
        }
        logger.warning("stopping at once", metadata: ["reason": "\(reason)"])
        for child in children.values { child.kill() }
        for child in children.values { _ = await child.waitForExit() }
        guard let member, !tokens.isEmpty else { return }
        let heartbeat = PartitionHeartbeat(
            group: partitions.name, partitions: partitions.partitions,
            activationInterval: settings.configuration.activationInterval, member: member.info, phase: .stopping,
            operations: tokens.sorted { $0.key < $1.key }.map { .release($0.key, $0.value) }, leaving: true,
            sentAt: MonotonicClock.now()
        )
        let store = self.store
        let activation = settings.configuration.activationInterval
        let released = await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await store.heartbeat(heartbeat)) != nil }
            group.addTask {
                try? await Task.sleep(for: activation)
                return false
            }
            defer { group.cancelAll() }
            return await group.next() ?? false
        }
        if released { logger.notice("released the partitions", metadata: ["count": "\(tokens.count)", "reason": "interrupted"]) }
    }

    /// Refuses to start when the id belongs to a process alive on this host, or the group has another shape.
    private func checkMembership() async throws(SupervisorError) {
        guard let view = try? await store.group(named: partitions.name) else { return }
        if let other = view.members.first(where: { $0.info.id == settings.memberID }),
           other.info.host == ProcessInfo.processInfo.hostName, kill(other.info.pid, 0) == 0 || errno == EPERM {
            throw SupervisorError(.memberIDInUse, HeartbeatRejection.memberIDInUse(settings.memberID, host: other.info.host, pid: other.info.pid).description)
        }
        let shapeDiffers = !view.partitioned || view.activeGoal != partitions.partitions
        if shapeDiffers, !view.members.isEmpty || !view.leases.isEmpty {
            throw SupervisorError(
                .activeGoalMismatch,
                HeartbeatRejection.partitionsMismatch(
                    group: partitions.name, stored: view.partitioned ? view.activeGoal : nil, requested: partitions.partitions
                ).description
            )
        }
    }

    // MARK: Partitions

    private func run(_ activation: PartitionActivation, member: PartitionedMember) async {
        guard case .validUntil(let validUntil)? = await activation.leaseUpdates.first(where: { _ in true }) else { return }
        let partition = activation.partition, token = activation.token
        state.withLock { $0.tokens[partition] = token }
        defer { state.withLock { $0.tokens[partition] = nil } }
        let configuration = settings.configuration
        var release = SlotRelease(
            store: settings.releaseStoreURL,
            group: configuration.name.rawValue,
            activeGoal: partitions.partitions,
            activationNanoseconds: configuration.activationInterval.nanoseconds,
            member: member.info.id.rawValue,
            incarnation: member.info.incarnation,
            weight: member.info.weight,
            host: member.info.host,
            pid: member.info.pid,
            token: token.rawValue,
            logFormat: settings.logFormat.rawValue
        )
        release.partition = partition
        var environment = settings.environment
        environment["UNDERSTUDY_GROUP"] = configuration.name.rawValue
        environment["UNDERSTUDY_MEMBER_ID"] = settings.memberID.rawValue
        environment["UNDERSTUDY_PARTITION"] = "\(partition)"
        environment["UNDERSTUDY_PARTITIONS"] = "\(partitions.partitions)"
        environment["UNDERSTUDY_FENCING_TOKEN"] = "\(token)"
        var logger = self.logger
        logger[metadataKey: "partition"] = "\(partition)"
        let lease = WatchedLease(
            token: token, validUntil: validUntil, margin: killMargin, containment: settings.containment,
            stopGrace: settings.stopGrace, release: release.bytes, workingDirectory: settings.workingDirectory, logger: logger
        )
        let forwarder = Task { await lease.follow(activation.leaseUpdates) }
        defer { forwarder.cancel() }
        func run(_ command: [String], _ name: String, timeout: Duration?, stopOnCancel: Bool) async {
            _ = await lease.run(command, name: name, environment: environment, timeout: timeout, stopOnCancel: stopOnCancel) { child in
                self.state.withLock { $0.children[partition] = child }
            }
        }
        if let hook = settings.onActivate {
            await run(["/bin/sh", "-c", hook], "on-activate", timeout: settings.hookTimeout, stopOnCancel: true)
        }
        if !Task.isCancelled { await run(settings.command, "command", timeout: nil, stopOnCancel: true) }
        if let hook = settings.onDeactivate {
            let reason = Task.isCancelled ? state.withLock { $0.reasons[partition]?.rawValue } ?? "stopped" : DeactivationReason.resigned.rawValue
            environment["UNDERSTUDY_REASON"] = reason
            await run(["/bin/sh", "-c", hook], "on-deactivate", timeout: settings.hookTimeout, stopOnCancel: false)
        }
    }

    private func logTransitions(_ events: AsyncStream<PartitionEvent>) async {
        var tokens: [Int: FencingToken] = [:]
        var activeSince: [Int: Instant] = [:]
        func record(_ transition: Supervisor.Transition) {
            state.withLock { state in
                state.history = (state.history + [transition]).suffix(Supervisor.historyLength)
            }
        }
        for await event in events {
            switch event {
            case .assigned(let partition, let token):
                tokens[partition] = token
                activeSince[partition] = MonotonicClock.now()
                record(Supervisor.Transition(at: Date(), event: "activated", token: token, reason: "elected", partition: partition))
                logger.notice("partition assigned", metadata: ["partition": "\(partition)", "token": "\(token)"])
            case .revoked(let partition, let reason):
                state.withLock { $0.reasons[partition] = reason }
                record(Supervisor.Transition(
                    at: Date(), event: "deactivated", token: tokens[partition], reason: reason.rawValue,
                    activeFor: activeSince.removeValue(forKey: partition).map { MonotonicClock.now() - $0 }, partition: partition
                ))
                logger.notice("partition revoked", metadata: [
                    "partition": "\(partition)", "token": "\(tokens[partition].map { "\($0)" } ?? "-")", "reason": "\(reason)",
                ])
            case .prepare(let partition):
                logger.info("preparing for a partition", metadata: ["partition": "\(partition)"])
            case .preparationWithdrawn(let partition):
                logger.info("preparation withdrawn", metadata: ["partition": "\(partition)"])
            }
        }
    }
}
