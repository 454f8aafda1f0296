import CUnderstudyWatchdog
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
/// - supervisor frozen or dead: the watchdog kills the command's tree at s + T − 3I/4, or at once on end-of-file,
///   proves it gone and releases the slot itself (a compare-and-set on this incarnation and token);
/// - watchdog dead: its guard kills the tree, and the supervisor proves it gone before it releases the slot.
///
/// Hooks run like the command, under a watchdog and bound to the same lease, and are killed with it.
final class Supervisor: Sendable {
    struct Settings: Sendable {
        var configuration: GroupConfiguration
        var memberID: MemberID
        var weight: Int
        var store: any CoordinationStore
        /// Where the store is, with its credentials: the watchdogs' releases open it again.
        var location: StoreLocation
        var containment: Containment
        /// The environment of COMMAND and hooks, without the store's credentials.
        var environment: [String: String]
        /// The resolved program and its arguments.
        var command: [String]
        var stopGrace: Duration
        var restartBackoff: Duration
        var once: Bool
        var onActivate: String?
        var onDeactivate: String?
        /// Hooks are killed after this long, and always when the lease is at risk.
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
        /// The token of the activation under way, which a second SIGINT releases.
        var token: FencingToken?
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
        // Without a cgroup, orphans of a dead watchdog's tree are reparented here, to be killed (``Containment``).
        if settings.containment == .processGroup, understudy_set_subreaper() != 0 {
            throw CLIError(.invalidConfiguration, "cannot become a child subreaper: \(String(cString: strerror(errno)))")
        }
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
            let started = try await HTTPEndpoint.start(on: address, member: member, containment: settings.containment, registry: registry, logger: logger)
            logger.notice("serving HTTP", metadata: ["address": "\(started.boundAddress)"])
            endpoint = started
        }
        try await checkMembership()
        let signals = handleSignals(member: member)
        defer { signals.forEach { $0.cancel() } }

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
        return state.withLock { $0.interrupts >= 2 ? ExitStatus.interrupted.rawValue : $0.shuttingDown ? 0 : $0.onceStatus ?? 0 }
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

        state.withLock { $0.token = token }
        defer { state.withLock { $0.token = nil } }
        let release = SlotRelease(
            store: settings.location.urlWithCredentials,
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
        func run(_ command: [String], _ name: String, timeout: Duration?, stopOnCancel: Bool) async -> Int32? {
            await runWatched(command, name: name, environment: environment, token: token, lease: lease, release: release, timeout: timeout, stopOnCancel: stopOnCancel)
        }
        if let hook = settings.onActivate {
            _ = await run(["/bin/sh", "-c", hook], "on-activate", timeout: settings.hookTimeout, stopOnCancel: true)
        }

        var status: Int32?
        if !Task.isCancelled {
            status = await run(settings.command, "command", timeout: nil, stopOnCancel: true)
        }
        let cancelled = Task.isCancelled
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

    /// Runs the command or a hook under the watchdog, bound to the lease: its tree is killed at the lease's
    /// deadline minus the margin, by `stopBy`, after `timeout`, and (with `stopOnCancel`) stopped with the grace
    /// when the activation is cancelled. Nothing starts once the lease has run out. Returns its status, `nil`
    /// when it did not start; only returns once its tree is proven gone.
    private func runWatched(
        _ command: [String],
        name: String,
        environment: [String: String],
        token: FencingToken,
        lease: Lease,
        release: [UInt8],
        timeout: Duration?,
        stopOnCancel: Bool
    ) async -> Int32? {
        let margin = killMargin
        let started: WatchedProcess?
        do throws(CLIError) {
            started = try lease.values.withLock { lease throws(CLIError) -> WatchedProcess? in
                let now = MonotonicClock.now()
                guard now < lease.validUntil - margin, now < (lease.stopBy ?? lease.validUntil) - margin else { return nil }
                let child = try WatchedProcess(
                    command: command,
                    environment: environment,
                    deadline: lease.validUntil,
                    margin: margin,
                    containment: settings.containment,
                    release: release
                )
                lease.child = child
                if let stopBy = lease.stopBy { child.kill(by: stopBy, margin: margin) }
                return child
            }
        } catch {
            logger.error("cannot start the \(name)", metadata: ["token": "\(token)", "error": "\(error.message)"])
            return nil
        }
        guard let child = started else {
            logger.warning("\(name) not started: the lease has run out", metadata: ["token": "\(token)"])
            return nil
        }
        state.withLock { $0.child = child }
        defer { state.withLock { $0.child = nil } }
        if name == "command" {
            logger.info("command started", metadata: ["token": "\(token)", "watchdog": "\(child.pid)", "containment": "\(settings.containment)"])
        }
        let startedAt = MonotonicClock.now()
        let timer = timeout.map { timeout in
            Task {
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled { child.kill() }
            }
        }
        let grace = settings.stopGrace
        let status = if stopOnCancel {
            await withTaskCancellationHandler {
                await child.waitForExit()
            } onCancel: {
                child.stop(grace: grace)
            }
        } else {
            await child.waitForExit()
        }
        timer?.cancel()
        let leaseRanOut = lease.values.withLock { MonotonicClock.now() >= $0.validUntil - margin }
        var metadata: Logger.Metadata = ["token": "\(token)", "status": "\(status)"]
        if child.watchdogDied {
            logger.warning("the watchdog died: the \(name)'s tree was killed and is proven gone", metadata: metadata)
        } else if leaseRanOut {
            logger.warning("the \(name) was killed: the lease ran out", metadata: metadata)
        } else if name != "command" {
            if let timeout, MonotonicClock.now() - startedAt >= timeout {
                metadata["timeout"] = "\(timeout.formatted)"
                logger.warning("\(name) timed out and was killed", metadata: metadata)
            } else if status != 0 {
                logger.warning("\(name) failed", metadata: metadata)
            }
        } else if Task.isCancelled {
            logger.info("command stopped", metadata: metadata)
        } else {
            logger.notice("command exited", metadata: metadata)
        }
        return status
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
                let (first, interrupts, child, token) = state.withLock { state in
                    defer { state.shuttingDown = true }
                    if number == SIGINT { state.interrupts += 1 }
                    return (!state.shuttingDown, state.interrupts, state.child, state.token)
                }
                if first {
                    logger.notice("shutting down", metadata: ["signal": "\(Self.name(of: number))"])
                    member.leave()
                } else if interrupts == 2 {
                    logger.warning("second SIGINT: stopping at once")
                    child?.kill()
                    Task { await self.exitAtOnce(after: child, releasing: token, member: member) }
                }
            }
            source.resume()
            return source
        }
    }

    /// The second SIGINT: once the tree is proven gone, releases the slot (bounded by T; it expires anyway)
    /// and exits with 130.
    private func exitAtOnce(after child: WatchedProcess?, releasing token: FencingToken?, member: Member) async -> Never {
        if let child { _ = await child.waitForExit() }
        if let token {
            let configuration = settings.configuration
            let heartbeat = Heartbeat(
                group: configuration.name, activeGoal: configuration.activeGoal,
                activationInterval: configuration.activationInterval, member: member.info, phase: .stopping,
                intent: .leave(releasing: token), sentAt: MonotonicClock.now()
            )
            let store = settings.store
            Task {
                try? await Task.sleep(for: configuration.activationInterval)
                exit(ExitStatus.interrupted.rawValue)
            }
            if (try? await store.heartbeat(heartbeat)) != nil {
                logger.notice("released the slot", metadata: ["token": "\(token)", "reason": "interrupted"])
            }
        }
        exit(ExitStatus.interrupted.rawValue)
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
