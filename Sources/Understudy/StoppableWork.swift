import Logging
import ServiceLifecycle

/// What a member and a partitioned member share: how a member's loop runs, and how one piece of work races its
/// stop.
enum MemberShell {
    /// Runs `loop` until it ends; graceful shutdown or cancellation of the caller call `leave` instead of
    /// cancelling it, so the member leaves in order (stops its work, gives its leases back) rather than cancelling
    /// the heartbeat that gives them back. `loop` is the one task of the member that is not the caller's child.
    static func run(_ loop: @escaping @Sendable () async throws -> Void, leave: @escaping @Sendable () -> Void) async throws {
        let task = Task { try await loop() }
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await task.value
            } onGracefulShutdown: {
                leave()
            }
        } onCancel: {
            leave()
        }
    }
}

/// One piece of work a member runs while it holds a lease: the body races its stop, whichever ends first cancels
/// the other, and the body is awaited either way.
struct StoppableWork {
    /// The number of this run, so that the end of an older run is not taken for this one's.
    var number: Int
    /// Finishing it stops the work; `nil` when the member runs no work and only reports events.
    var stop: AsyncStream<Void>.Continuation?
    var updates: AsyncStream<Activation.LeaseUpdate>.Continuation
    var stopping = false

    /// Runs `body` until it returns or `stopped` ends; returns whether it was stopped (rather than ending by itself).
    static func race(
        _ body: @escaping @Sendable () async throws -> Void,
        until stopped: AsyncStream<Void>,
        logger: Logger,
        metadata: Logger.Metadata = [:]
    ) async -> Bool {
        await withTaskGroup(of: Bool.self) { race in
            race.addTask {
                do {
                    try await body()
                } catch is CancellationError {
                } catch {
                    var metadata = metadata
                    metadata["error"] = "\(error)"
                    logger.error("work failed", metadata: metadata)
                }
                return false
            }
            race.addTask {
                for await _ in stopped {}
                return true
            }
            let first = await race.next() ?? true
            race.cancelAll()
            return first
        }
    }

    /// Asks the work to stop; returns whether the member must report it stopped itself (it runs no work).
    mutating func requestStop() -> Bool {
        guard !stopping else { return false }
        stopping = true
        guard let stop else { return true }
        stop.finish()
        return false
    }
}
