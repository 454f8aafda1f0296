import Foundation
import Logging
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyStore

/// One lease as the supervisor holds it: a slot's activation or a partition's assignment. It runs the command and
/// hooks of the lease under the watchdog and forwards every new deadline to the one running, so that none of them
/// outlives the lease.
final class WatchedLease: Sendable {
    private struct Values {
        var validUntil: Instant
        var stopBy: Instant?
        var child: WatchedProcess?
    }

    let token: FencingToken
    private let values: Mutex<Values>
    private let margin: Duration
    private let containment: Containment
    private let stopGrace: Duration
    /// What the watchdog sends to release the lease itself once it has killed a dead supervisor's tree.
    private let release: [UInt8]
    /// Where the command and hooks run; `nil`: the supervisor's own.
    private let workingDirectory: String?
    private let logger: Logger

    init(
        token: FencingToken, validUntil: Instant, margin: Duration, containment: Containment, stopGrace: Duration,
        release: [UInt8], workingDirectory: String? = nil, logger: Logger
    ) {
        self.token = token
        values = Mutex(Values(validUntil: validUntil))
        self.margin = margin
        self.containment = containment
        self.stopGrace = stopGrace
        self.release = release
        self.workingDirectory = workingDirectory
        self.logger = logger
    }

    /// Forwards the lease's updates to the process running, until they end.
    func follow(_ updates: AsyncStream<Activation.LeaseUpdate>) async {
        for await update in updates {
            switch update {
            case .validUntil(let instant):
                let child = values.withLock { lease in
                    lease.validUntil = max(lease.validUntil, instant)
                    return lease.child
                }
                child?.extend(until: instant)
            case .stopBy(let deadline):
                let child = values.withLock { lease in
                    lease.stopBy = min(lease.stopBy ?? deadline, deadline)
                    return lease.child
                }
                child?.kill(by: deadline, margin: margin)
            }
        }
    }

    /// Runs the command or a hook under the watchdog, bound to the lease: its tree is killed at the lease's
    /// deadline minus the margin, by `stopBy`, after `timeout`, and (with `stopOnCancel`) stopped with the grace
    /// when the calling task is cancelled. Nothing starts once the lease has run out. `tracking` hears of the
    /// process once started and with `nil` once proven gone. Returns its status, `nil` when it did not start; only
    /// returns once its tree is proven gone.
    func run(
        _ command: [String],
        name: String,
        environment: [String: String],
        timeout: Duration?,
        stopOnCancel: Bool,
        tracking: (WatchedProcess?) -> Void = { _ in }
    ) async -> Int32? {
        let margin = self.margin
        let started: WatchedProcess?
        do throws(SupervisorError) {
            started = try values.withLock { lease throws(SupervisorError) -> WatchedProcess? in
                let now = MonotonicClock.now()
                guard now < lease.validUntil - margin, now < (lease.stopBy ?? lease.validUntil) - margin else { return nil }
                let child = try WatchedProcess(
                    command: command,
                    environment: environment,
                    deadline: lease.validUntil,
                    margin: margin,
                    containment: containment,
                    release: release,
                    workingDirectory: workingDirectory
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
        tracking(child)
        defer { tracking(nil) }
        if name == "command" {
            logger.info("command started", metadata: ["token": "\(token)", "watchdog": "\(child.pid)", "containment": "\(containment)"])
        }
        let startedAt = MonotonicClock.now()
        let timer = timeout.map { timeout in
            Task {
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled { child.kill() }
            }
        }
        let grace = stopGrace
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
        let leaseRanOut = values.withLock { MonotonicClock.now() >= $0.validUntil - margin }
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
}
