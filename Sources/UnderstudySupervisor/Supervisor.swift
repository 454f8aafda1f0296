import CUnderstudyWatchdog
import Foundation
import Logging
import Prometheus
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyStore

/// The shell of `understudy run`: a ``Member`` whose work is a command run under the watchdog.
///
/// Deactivation timeline (I = heartbeat, T = activation, s = send time of the newest confirmed renewal):
/// - graceful (preemption, shutdown, the lease still renewed): SIGTERM, SIGKILL after `stopGrace`; the lease is
///   renewed meanwhile and the slot is released only after the command has exited;
/// - lease at risk (no renewal confirmed by s + T − I, or the store says the lease is lost): SIGTERM, then
///   SIGKILL at s + T − 3I/4 at the latest, whatever `stopGrace` says; the store cannot grant the slot to
///   another member before s + T;
/// - supervisor frozen or dead: the watchdog kills the command's tree at s + T − 3I/4, or at once on end-of-file,
///   proves it gone and releases the slot itself (a compare-and-set on this incarnation and token);
/// - watchdog dead: its guard kills the tree, and the supervisor proves it gone before it releases the slot.
///
/// Hooks run like the command, under a watchdog and bound to the same lease, and are killed with it.
///
/// A supervisor touches nothing process-wide (no signal handlers, no metrics bootstrap, no `exit`), so one process
/// can run many, all on one store handle (the owner opens and closes it): its owner turns signals into
/// ``shutdown(reason:)`` and ``stopAtOnce(reason:)``. The process's executable
/// must run the watchdog when started with ``WatchedProcess/watchdogArgument`` (see `understudy`'s `main.swift`).
public final class Supervisor: Sendable {
    public struct Settings: Sendable {
        public var configuration: GroupConfiguration
        public var memberID: MemberID
        public var weight: Int
        public var store: any CoordinationStore
        /// The store's URL with its credentials: a watchdog opens it to release the slot of a dead supervisor.
        public var releaseStoreURL: String
        public var containment: Containment
        /// The environment of COMMAND and hooks, without the store's credentials.
        public var environment: [String: String]
        /// The resolved program and its arguments.
        public var command: [String]
        /// Where COMMAND and hooks start (`nil`: this process's working directory).
        public var workingDirectory: String?
        public var stopGrace: Duration
        public var restart: RestartPolicy
        /// Leave the group once the command has run once.
        public var once: Bool
        public var onActivate: String?
        public var onDeactivate: String?
        /// Hooks are killed after this long, and always when the lease is at risk.
        public var hookTimeout: Duration
        public var logFormat: LogFormat
        /// Where to serve the HTTP endpoint, if anywhere.
        public var http: HTTPAddress?

        public init(
            configuration: GroupConfiguration, memberID: MemberID, weight: Int, store: any CoordinationStore,
            releaseStoreURL: String, containment: Containment, environment: [String: String], command: [String],
            workingDirectory: String? = nil, stopGrace: Duration, restart: RestartPolicy, once: Bool,
            onActivate: String?, onDeactivate: String?, hookTimeout: Duration, logFormat: LogFormat, http: HTTPAddress?
        ) {
            self.configuration = configuration
            self.memberID = memberID
            self.weight = weight
            self.store = store
            self.releaseStoreURL = releaseStoreURL
            self.containment = containment
            self.environment = environment
            self.command = command
            self.workingDirectory = workingDirectory
            self.stopGrace = stopGrace
            self.restart = restart
            self.once = once
            self.onActivate = onActivate
            self.onDeactivate = onDeactivate
            self.hookTimeout = hookTimeout
            self.logFormat = logFormat
            self.http = http
        }
    }

    /// How ``run()`` ended.
    public enum Outcome: Hashable, Sendable {
        /// The member left its group after ``shutdown()``.
        case left
        /// With ``Settings/once``: the command ran once and exited with this status.
        case ranOnce(status: Int32)
        /// ``stopAtOnce(reason:)`` stopped it.
        case stoppedAtOnce
        /// The command exited by itself ``RestartPolicy/burst`` times within ``RestartPolicy/window``: the
        /// member left its group rather than restart it again.
        case gaveUp(exits: Int)
    }

    /// How a command that exits by itself is started again: the member rests (standing by, not competing, so a
    /// healthier member may take over) for `backoff`, doubled for each earlier exit within `window`, at most
    /// `maximumBackoff`; after `burst` exits within `window` it gives up.
    public struct RestartPolicy: Sendable, Hashable {
        public var backoff: Duration
        public var maximumBackoff: Duration
        /// `nil`: never give up.
        public var burst: Int?
        public var window: Duration

        public init(backoff: Duration, maximumBackoff: Duration? = nil, burst: Int? = nil, window: Duration = .seconds(60)) {
            self.backoff = backoff
            self.maximumBackoff = max(maximumBackoff ?? backoff, backoff)
            self.burst = burst
            self.window = window
        }

        /// The rest after an exit at `now`, given the earlier exits still in the window (which it updates), or
        /// `nil` to give up.
        public func rest(afterExitAt now: Instant, earlier exits: inout [Instant]) -> Duration? {
            exits = exits.filter { now - $0 < window } + [now]
            if let burst, exits.count >= burst { return nil }
            var rest = backoff
            for _ in 1..<exits.count where rest < maximumBackoff { rest *= 2 }
            return min(rest, maximumBackoff)
        }
    }

    /// One activation or deactivation of this member, for a status page's history.
    public struct Transition: Sendable, Hashable {
        public var at: Date
        /// `activated` or `deactivated`.
        public var event: String
        public var token: FencingToken?
        /// `elected` for an activation; a ``DeactivationReason`` otherwise.
        public var reason: String
        /// For a deactivation: how long the member was active.
        public var activeFor: Duration?
        /// The partition, for a member of a partitioned group (``PartitionedSupervisor``).
        public var partition: Int?
    }

    private struct State {
        var member: Member?
        var child: WatchedProcess?
        var reason: DeactivationReason?
        var onceStatus: Int32?
        var shuttingDown = false
        var stoppedAtOnce = false
        /// The token of the activation under way, which ``stopAtOnce(reason:)`` releases.
        var token: FencingToken?
        var drained = false
        /// When the command exited by itself, within the restart window.
        var exits: [Instant] = []
        var gaveUpAfter: Int?
        /// The newest transitions, oldest first.
        var history: [Transition] = []
    }

    /// How many transitions ``history`` keeps.
    public static let historyLength = 20

    public let settings: Settings
    private let state = Mutex(State())
    private let logger: Logger
    private let registry: PrometheusCollectorRegistry?

    /// - Parameter registry: what `GET /metrics` serves when ``Settings/http`` is set; the metrics system must
    ///   report to it (the owner of the process bootstraps it, once) before the supervisor runs.
    public init(settings: Settings, metrics registry: PrometheusCollectorRegistry?) {
        self.settings = settings
        self.registry = registry
        logger = settings.supervisorLogger()
    }

    /// SIGKILL goes out this long before the core's deadline (s + T − I/2, which already leaves I/2 for clock
    /// drift), to cover the kill itself: at s + T − 3I/4, after the self-fence's SIGTERM at s + T − I.
    public var killMargin: Duration { settings.configuration.heartbeatInterval / 4 }

    /// Takes part in the group until ``shutdown()`` (or, with `once`, until the command has run once).
    ///
    /// - Throws: ``SupervisorError`` when the store refuses the member or the HTTP endpoint cannot listen.
    public func run() async throws(SupervisorError) -> Outcome {
        // The member's own lines about activation are replaced by ``logTransitions(_:)``, which adds the token
        // to every line; its errors (a refusal by the store) become this command's one-line error.
        let memberLogger = settings.memberLogger()
        let member: Member
        do {
            member = try Member(
                group: settings.configuration,
                id: settings.memberID,
                weight: settings.weight,
                store: settings.store,
                restAfterResigning: settings.restart.backoff,
                logger: memberLogger
            )
        } catch {
            throw SupervisorError(.invalidConfiguration, error.description)
        }
        var endpoint: HTTPEndpoint?
        if let address = settings.http {
            let started = try await HTTPEndpoint.start(on: address, member: member, containment: settings.containment, registry: registry ?? PrometheusCollectorRegistry(), logger: logger)
            logger.notice("serving HTTP", metadata: ["address": "\(started.boundAddress)"])
            endpoint = started
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
            "store": "\(settings.store)",
            "weight": "\(settings.weight)", "pid": "\(getpid())", "goal": "\(settings.configuration.activeGoal)",
            "containment": "\(settings.containment)",
        ])
        let transitions = Task { await logTransitions(member.events) }
        let outcome: Result<Void, any Error>
        do {
            try await member.whileActiveSupervised({ activation in await self.activate(activation, member: member) })
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        await endpoint?.stop()
        try SupervisorError.check(outcome)
        await transitions.value
        logger.notice("left")
        return state.withLock { state in
            if state.stoppedAtOnce { return .stoppedAtOnce }
            if let exits = state.gaveUpAfter { return .gaveUp(exits: exits) }
            if !state.shuttingDown, let status = state.onceStatus { return .ranOnce(status: status) }
            return .left
        }
    }

    /// Leaves the group gracefully: stops the command (SIGTERM, then SIGKILL after the stop grace), releases the
    /// slot once it is proven gone, and lets ``run()`` return. Returns whether this was the first request.
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

    /// Steps down (the command is stopped as on preemption and the slot handed over at once) and stays standby
    /// until ``resume()``, reporting itself `resting`.
    public func drain() {
        setDrained(true)?.drain()
    }

    /// Ends a ``drain()``: the member competes again.
    public func resume() {
        setDrained(false)?.resume()
    }

    /// Records the operator's wish (for a member not created yet) and returns the member to tell, if any.
    private func setDrained(_ drained: Bool) -> Member? {
        logger.notice(drained ? "draining" : "resuming")
        return state.withLock { state in
            state.drained = drained
            return state.member
        }
    }

    /// Whether ``drain()`` holds.
    public var isDrained: Bool { state.withLock { $0.drained } }

    /// The member, once ``run()`` has created it.
    public var member: Member? { state.withLock { $0.member } }

    /// The newest transitions (at most ``historyLength``), oldest first.
    public var history: [Transition] { state.withLock { $0.history } }

    /// Stops at once: kills the command's tree, and once it is proven gone releases the slot (waiting at most T:
    /// the lease expires anyway). ``run()`` may go on leaving; the owner is expected to end the process.
    public func stopAtOnce(reason: String) async {
        let (child, token, member) = state.withLock { state in
            state.shuttingDown = true
            state.stoppedAtOnce = true
            return (state.child, state.token, state.member)
        }
        logger.warning("stopping at once", metadata: ["reason": "\(reason)"])
        child?.kill()
        if let child { _ = await child.waitForExit() }
        guard let token, let member else { return }
        let configuration = settings.configuration
        let heartbeat = Heartbeat(
            group: configuration.name, activeGoal: configuration.activeGoal,
            activationInterval: configuration.activationInterval, member: member.info, phase: .stopping,
            intent: .leave(releasing: token), sentAt: MonotonicClock.now()
        )
        let store = settings.store
        let released = await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await store.heartbeat(heartbeat)) != nil }
            group.addTask {
                try? await Task.sleep(for: configuration.activationInterval)
                return false
            }
            defer { group.cancelAll() }
            return await group.next() ?? false
        }
        if released { logger.notice("released the slot", metadata: ["token": "\(token)", "reason": "interrupted"]) }
    }

    /// Refuses to start, before joining, when the id belongs to a process alive on this host or the goal differs.
    /// The store enforces both anyway; this only refuses a live duplicate at once. A dead process's row (a
    /// restart within T) is left to the member, which waits for it to expire.
    private func checkMembership() async throws(SupervisorError) {
        let configuration = settings.configuration
        guard let view = try? await settings.store.group(named: configuration.name) else { return }
        if let other = view.members.first(where: { $0.info.id == settings.memberID }),
           other.info.host == ProcessInfo.processInfo.hostName, kill(other.info.pid, 0) == 0 || errno == EPERM {
            throw SupervisorError(.memberIDInUse, HeartbeatRejection.memberIDInUse(settings.memberID, host: other.info.host, pid: other.info.pid).description)
        }
        if view.activeGoal != configuration.activeGoal, !view.members.isEmpty || !view.leases.isEmpty {
            throw SupervisorError(
                .activeGoalMismatch,
                HeartbeatRejection.activeGoalMismatch(group: configuration.name, stored: view.activeGoal, requested: configuration.activeGoal).description
            )
        }
    }

    // MARK: Activation

    private func activate(_ activation: Activation, member: Member) async {
        guard case .validUntil(let validUntil)? = await activation.leaseUpdates.first(where: { _ in true }) else { return }
        let token = activation.token
        state.withLock { $0.token = token }
        defer { state.withLock { $0.token = nil } }
        let release = SlotRelease(
            store: settings.releaseStoreURL,
            group: settings.configuration.name.rawValue,
            activeGoal: settings.configuration.activeGoal,
            activationNanoseconds: settings.configuration.activationInterval.nanoseconds,
            member: member.info.id.rawValue,
            incarnation: member.info.incarnation,
            weight: member.info.weight,
            host: member.info.host,
            pid: member.info.pid,
            token: token.rawValue,
            logFormat: settings.logFormat.rawValue
        ).bytes
        var environment = settings.environment
        environment["UNDERSTUDY_GROUP"] = settings.configuration.name.rawValue
        environment["UNDERSTUDY_MEMBER_ID"] = settings.memberID.rawValue
        environment["UNDERSTUDY_FENCING_TOKEN"] = "\(token)"
        let lease = WatchedLease(
            token: token, validUntil: validUntil, margin: killMargin, containment: settings.containment,
            stopGrace: settings.stopGrace, release: release, workingDirectory: settings.workingDirectory, logger: logger
        )
        let forwarder = Task { await lease.follow(activation.leaseUpdates) }
        defer { forwarder.cancel() }
        func run(_ command: [String], _ name: String, timeout: Duration?, stopOnCancel: Bool) async -> Int32? {
            await lease.run(command, name: name, environment: environment, timeout: timeout, stopOnCancel: stopOnCancel) { child in
                self.state.withLock { $0.child = child }
            }
        }
        if let hook = settings.onActivate {
            _ = await run(["/bin/sh", "-c", hook], "on-activate", timeout: settings.hookTimeout, stopOnCancel: true)
        }

        var status: Int32?
        if !Task.isCancelled {
            status = await run(settings.command, "command", timeout: nil, stopOnCancel: true)
        }
        let cancelled = Task.isCancelled
        if !cancelled, !settings.once, status != nil { await exitedByItself(member: member, token: token) }
        let reason = cancelled ? state.withLock { $0.reason?.rawValue } ?? "stopped" : DeactivationReason.resigned.rawValue
        if let hook = settings.onDeactivate {
            environment["UNDERSTUDY_REASON"] = reason
            _ = await run(["/bin/sh", "-c", hook], "on-deactivate", timeout: settings.hookTimeout, stopOnCancel: false)
        }
        if settings.once {
            state.withLock { $0.onceStatus = status ?? 0 }
            member.leave()
        }
    }

    /// Applies the restart policy to a command that exited by itself: a longer rest, or giving up.
    private func exitedByItself(member: Member, token: FencingToken) async {
        let now = MonotonicClock.now()
        let policy = settings.restart
        let (rest, exits) = state.withLock { state in
            let rest = policy.rest(afterExitAt: now, earlier: &state.exits)
            if rest == nil { state.gaveUpAfter = state.exits.count }
            return (rest, state.exits.count)
        }
        guard let rest else {
            logger.error("the command keeps exiting: giving up", metadata: [
                "token": "\(token)", "exits": "\(exits)", "window": "\(policy.window.formatted)",
            ])
            member.leave()
            return
        }
        if rest != policy.backoff {
            logger.warning("the command keeps exiting: backing off", metadata: ["token": "\(token)", "exits": "\(exits)", "rest": "\(rest.formatted)"])
        }
        await member.setRestAfterResigning(rest)
    }

    // MARK: Transitions

    private func logTransitions(_ events: AsyncStream<MemberEvent>) async {
        var token: FencingToken?
        var activeSince: Instant?
        func record(_ transition: Transition) {
            state.withLock { state in
                state.history = (state.history + [transition]).suffix(Self.historyLength)
            }
        }
        for await event in events {
            switch event {
            case .activate(let granted):
                token = granted
                activeSince = MonotonicClock.now()
                record(Transition(at: Date(), event: "activated", token: granted, reason: "elected"))
                logger.notice("activated", metadata: ["token": "\(granted)", "reason": "elected"])
            case .deactivate(let reason):
                state.withLock { $0.reason = reason }
                record(Transition(at: Date(), event: "deactivated", token: token, reason: reason.rawValue, activeFor: activeSince.map { MonotonicClock.now() - $0 }))
                activeSince = nil
                logger.notice("deactivated", metadata: ["token": "\(token.map { "\($0)" } ?? "-")", "reason": "\(reason)"])
            case .prepareToActivate:
                logger.info("preparing to activate")
            case .prepareWithdrawn:
                logger.info("preparation withdrawn")
            }
        }
    }
}

extension Supervisor.Settings {
    /// The supervisor's own lines, with the group and the member on each.
    func supervisorLogger() -> Logger {
        var logger = Logger(label: "understudy") { _ in LineLogHandler(format: logFormat) }
        logger[metadataKey: "group"] = "\(configuration.name)"
        logger[metadataKey: "member"] = "\(memberID)"
        return logger
    }

    /// The member's lines under a supervisor: warnings only, since the supervisor logs the transitions itself,
    /// and without errors, since a refusal by the store becomes the command's one-line error.
    func memberLogger() -> Logger {
        var logger = Logger(label: "understudy") { _ in LineLogHandler(format: logFormat, dropping: .error) }
        logger[metadataKey: "group"] = "\(configuration.name)"
        logger[metadataKey: "member"] = "\(memberID)"
        logger.logLevel = .warning
        return logger
    }
}
