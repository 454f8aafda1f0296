import Foundation
import Logging
import Synchronization
import Understudy
import UnderstudyCore

/// The shell of `understudy run`: a ``Member`` whose work is a command run under the watchdog.
///
/// Deactivation timeline (I = heartbeat, T = activation, s = send time of the newest confirmed renewal):
/// - graceful (preemption, shutdown, the lease still renewed): SIGTERM, SIGKILL after `stopGrace`; the lease is
///   renewed meanwhile and the slot is released only after the command has exited;
/// - lease at risk (no renewal confirmed by s + T − I, or the store says the lease is lost): SIGTERM, then
///   SIGKILL at s + T − 3I/4 at the latest, whatever `stopGrace` says; the store cannot grant the slot to
///   another member before s + T;
/// - supervisor frozen or dead: the watchdog kills the command's group at s + T − 3I/4, or at once on end-of-file.
final class Supervisor: Sendable {
    struct Settings: Sendable {
        var configuration: GroupConfiguration
        var memberID: MemberID
        var weight: Int
        var store: any CoordinationStore
        /// The resolved program and its arguments.
        var command: [String]
        var stopGrace: Duration
        var restartBackoff: Duration
        var once: Bool
        var onActivate: String?
        var onDeactivate: String?
        var hookTimeout: Duration
        var logFormat: LogFormat
        /// Where to serve the HTTP endpoint, if anywhere.
        var http: HTTPAddress?
    }

    private struct State {
        var child: WatchedProcess?
        var reason: DeactivationReason?
        var onceStatus: Int32?
        var shuttingDown = false
        var interrupts = 0
    }

    /// What one activation knows about its lease, shared with the task that forwards lease updates.
    private final class Lease: Sendable {
        struct Values {
            var validUntil: Instant
            var stopBy: Instant?
            var child: WatchedProcess?
        }

        let values: Mutex<Values>

        init(validUntil: Instant) {
            values = Mutex(Values(validUntil: validUntil))
        }
    }

    let settings: Settings
    private let state = Mutex(State())
    private let logger: Logger

    init(settings: Settings) {
        self.settings = settings
        var logger = Logger(label: "understudy") { _ in LineLogHandler(format: settings.logFormat) }
        logger[metadataKey: "group"] = "\(settings.configuration.name)"
        logger[metadataKey: "member"] = "\(settings.memberID)"
        self.logger = logger
    }

    /// SIGKILL goes out this long before the core's deadline (s + T − I/2, which already leaves I/2 for clock
    /// drift), to cover the kill itself: at s + T − 3I/4, after the self-fence's SIGTERM at s + T − I.
    var killMargin: Duration { settings.configuration.heartbeatInterval / 4 }

    /// Takes part in the group until SIGTERM/SIGINT (or, with `once`, until the command has run once).
    ///
    /// - Returns: the exit status: 0, or with `once` the command's status.
    /// - Throws: ``CLIError`` when the store refuses the member or the HTTP endpoint cannot listen.
    func run() async throws(CLIError) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        // The member's own lines about activation are replaced by ``logTransitions(_:)``, which adds the token
        // to every line; its errors (a refusal by the store) become this command's one-line error.
        var memberLogger = Logger(label: "understudy") { _ in LineLogHandler(format: self.settings.logFormat, dropping: .error) }
        memberLogger[metadataKey: "group"] = "\(settings.configuration.name)"
        memberLogger[metadataKey: "member"] = "\(settings.memberID)"
        memberLogger.logLevel = .warning
        // The member makes its metrics when created, so the registry must be in place before.
        let registry = settings.http.map { _ in HTTPEndpoint.bootstrapMetrics() }
        let member: Member
        do {
            member = try Member(
                group: settings.configuration,
                id: settings.memberID,
                weight: settings.weight,
                store: settings.store,
                restAfterResigning: settings.restartBackoff,
                logger: memberLogger
            )
        } catch {
            throw CLIError(.invalidConfiguration, error.description)
        }
        var endpoint: HTTPEndpoint?
        if let address = settings.http, let registry {
            let started = try await HTTPEndpoint.start(on: address, member: member, registry: registry, logger: logger)
            logger.notice("serving HTTP", metadata: ["address": "\(started.boundAddress)"])
            endpoint = started
        }
        try await checkMembership()
        let signals = handleSignals(member: member)
        defer { signals.forEach { $0.cancel() } }

        logger.notice("joined", metadata: [
            "weight": "\(settings.weight)", "pid": "\(getpid())", "goal": "\(settings.configuration.activeGoal)",
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
        do {
            try outcome.get()
        } catch MemberError.rejected(let rejection) {
            switch rejection {
            case .memberIDInUse: throw CLIError(.memberIDInUse, rejection.description)
            case .activeGoalMismatch: throw CLIError(.activeGoalMismatch, rejection.description)
            }
        } catch {
            throw CLIError(.storeUnavailable, "\(error)")
        }
        await transitions.value
        logger.notice("left")
        try? await settings.store.close()
        return state.withLock { $0.shuttingDown ? 0 : $0.onceStatus ?? 0 }
    }

    /// Refuses to start, before joining, when the id belongs to a process alive on this host or the goal differs.
    /// The store enforces both anyway; this only refuses a live duplicate at once. A dead process's row (a
    /// restart within T) is left to the member, which waits for it to expire.
    private func checkMembership() async throws(CLIError) {
        let configuration = settings.configuration
        guard let view = try? await settings.store.group(configuration.name) else { return }
        if let other = view.members.first(where: { $0.info.id == settings.memberID }),
           other.info.host == ProcessInfo.processInfo.hostName, kill(other.info.pid, 0) == 0 || errno == EPERM {
            throw CLIError(.memberIDInUse, HeartbeatRejection.memberIDInUse(settings.memberID, host: other.info.host, pid: other.info.pid).description)
        }
        if view.activeGoal != configuration.activeGoal, !view.members.isEmpty || !view.leases.isEmpty {
            throw CLIError(
                .activeGoalMismatch,
                HeartbeatRejection.activeGoalMismatch(group: configuration.name, stored: view.activeGoal, requested: configuration.activeGoal).description
            )
        }
    }

    // MARK: Activation

    private func activate(_ activation: Activation, member: Member) async {
        guard case .validUntil(let validUntil)? = await activation.leaseUpdates.first(where: { _ in true }) else { return }
        let token = activation.token
        let lease = Lease(validUntil: validUntil)
        let margin = killMargin
        let forwarder = Task {
            for await update in activation.leaseUpdates {
                switch update {
                case .validUntil(let instant):
                    let child = lease.values.withLock { lease in
                        lease.validUntil = max(lease.validUntil, instant)
                        return lease.child
                    }
                    child?.extend(until: instant)
                case .stopBy(let deadline):
                    let child = lease.values.withLock { lease in
                        lease.stopBy = min(lease.stopBy ?? deadline, deadline)
                        return lease.child
                    }
                    child?.kill(by: deadline, margin: margin)
                }
            }
        }
        defer { forwarder.cancel() }

        var environment = ProcessInfo.processInfo.environment
        environment["UNDERSTUDY_GROUP"] = settings.configuration.name.rawValue
        environment["UNDERSTUDY_MEMBER_ID"] = settings.memberID.rawValue
        environment["UNDERSTUDY_FENCING_TOKEN"] = "\(token)"
        if let hook = settings.onActivate {
            await runHook(hook, name: "on-activate", environment: environment, token: token)
        }

        var status: Int32?
        if !Task.isCancelled {
            status = await runCommand(environment: environment, token: token, lease: lease)
        }
        let cancelled = Task.isCancelled
        let reason = cancelled ? state.withLock { $0.reason?.rawValue } ?? "stopped" : DeactivationReason.resigned.rawValue
        if let hook = settings.onDeactivate {
            environment["UNDERSTUDY_REASON"] = reason
            await runHook(hook, name: "on-deactivate", environment: environment, token: token)
        }
        if settings.once {
            state.withLock { $0.onceStatus = status ?? 0 }
            member.leave()
        }
    }

    /// Runs the command until it exits or the activation is cancelled; returns its status.
    private func runCommand(environment: [String: String], token: FencingToken, lease: Lease) async -> Int32? {
        let child: WatchedProcess
        do throws(CLIError) {
            child = try lease.values.withLock { lease throws(CLIError) in
                let child = try WatchedProcess(
                    command: settings.command,
                    environment: environment,
                    deadline: lease.validUntil,
                    margin: killMargin
                )
                lease.child = child
                if let stopBy = lease.stopBy { child.kill(by: stopBy, margin: killMargin) }
                return child
            }
        } catch {
            logger.error("cannot start the command", metadata: ["token": "\(token)", "error": "\(error.message)"])
            return nil
        }
        state.withLock { $0.child = child }
        defer { state.withLock { $0.child = nil } }
        logger.info("command started", metadata: ["token": "\(token)", "watchdog": "\(child.pid)"])
        let grace = settings.stopGrace
        let status = await withTaskCancellationHandler {
            await child.waitForExit()
        } onCancel: {
            child.stop(grace: grace)
        }
        if Task.isCancelled {
            logger.info("command stopped", metadata: ["token": "\(token)", "status": "\(status)"])
        } else {
            logger.notice("command exited", metadata: ["token": "\(token)", "status": "\(status)"])
        }
        return status
    }

    /// Runs a hook through `/bin/sh -c` under the watchdog, which kills it after the hook timeout.
    private func runHook(_ command: String, name: String, environment: [String: String], token: FencingToken) async {
        let started = MonotonicClock.now()
        do {
            let hook = try WatchedProcess(
                command: ["/bin/sh", "-c", command],
                environment: environment,
                deadline: started + settings.hookTimeout,
                margin: .zero
            )
            let status = await hook.waitForExit()
            if MonotonicClock.now() - started >= settings.hookTimeout {
                logger.warning("\(name) timed out and was killed", metadata: ["token": "\(token)", "timeout": "\(settings.hookTimeout.formatted)"])
            } else if status != 0 {
                logger.warning("\(name) failed", metadata: ["token": "\(token)", "status": "\(status)"])
            }
        } catch {
            logger.warning("cannot run \(name)", metadata: ["token": "\(token)", "error": "\(error.message)"])
        }
    }

    // MARK: Transitions and signals

    private func logTransitions(_ events: AsyncStream<MemberEvent>) async {
        var token: FencingToken?
        for await event in events {
            switch event {
            case .activate(let granted):
                token = granted
                logger.notice("activated", metadata: ["token": "\(granted)", "reason": "elected"])
            case .deactivate(let reason):
                state.withLock { $0.reason = reason }
                logger.notice("deactivated", metadata: ["token": "\(token.map { "\($0)" } ?? "-")", "reason": "\(reason)"])
            case .prepareToActivate:
                logger.info("preparing to activate")
            case .prepareWithdrawn:
                logger.info("preparation withdrawn")
            }
        }
    }

    /// SIGTERM, SIGINT and SIGHUP leave the group gracefully; a second SIGINT exits at once.
    private func handleSignals(member: Member) -> [any DispatchSourceSignal] {
        let queue = DispatchQueue(label: "understudy.signals")
        return [SIGTERM, SIGINT, SIGHUP].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [self] in
                let (first, interrupts, child) = state.withLock { state in
                    defer { state.shuttingDown = true }
                    if number == SIGINT { state.interrupts += 1 }
                    return (!state.shuttingDown, state.interrupts, state.child)
                }
                if first {
                    logger.notice("shutting down", metadata: ["signal": "\(Self.name(of: number))"])
                    member.leave()
                } else if interrupts >= 2 {
                    logger.warning("second SIGINT: stopping at once")
                    child?.kill()
                    exit(ExitStatus.interrupted.rawValue)
                }
            }
            source.resume()
            return source
        }
    }

    private static func name(of signal: Int32) -> String {
        switch signal {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        case SIGHUP: "SIGHUP"
        default: "signal \(signal)"
        }
    }
}
