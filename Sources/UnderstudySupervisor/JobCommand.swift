import Foundation
import Understudy
import UnderstudyCore

/// Runs a command once per job under the watchdog, as ``QueueWorker``'s handler: the command never outlives the
/// claim that allowed it to run.
///
/// The command gets the job's payload on standard input and `UNDERSTUDY_QUEUE`, `UNDERSTUDY_JOB_ID`,
/// `UNDERSTUDY_JOB_ATTEMPT`, `UNDERSTUDY_FENCING_TOKEN` and `UNDERSTUDY_WORKER_ID` in its environment. Exit status 0 completes the job;
/// any other status fails it. When the job is stopped (its claim lost, or the worker shutting down past its grace)
/// the command gets SIGTERM, then SIGKILL after `stopGrace`; the watchdog kills its tree at each work deadline
/// less `margin` unless a renewal moved the deadline on, even if this process freezes or dies.
public struct JobCommand: Sendable {
    public let command: [String]
    public let environment: [String: String]
    public let containment: Containment
    public let stopGrace: Duration
    /// How long before a work deadline the watchdog kills the tree (``LeaseTimeline/killMargin``).
    public let margin: Duration

    /// The worker's id, as `UNDERSTUDY_WORKER_ID`.
    public let worker: MemberID

    public init(
        command: [String], environment: [String: String], worker: MemberID, containment: Containment, stopGrace: Duration, margin: Duration
    ) {
        self.command = command
        self.worker = worker
        self.environment = environment
        self.containment = containment
        self.stopGrace = stopGrace
        self.margin = margin
    }

    /// The command failed: it exited with a status other than 0, or was killed.
    public struct Failed: Error, CustomStringConvertible {
        public let status: Int32
        public var description: String {
            status > 128 ? "the command was killed by signal \(status - 128)" : "the command exited with status \(status)"
        }
    }

    /// Runs the command for `job` and returns once its whole tree is gone; throws ``Failed`` unless it exited 0.
    public func run(_ job: RunningJob) async throws {
        var deadlines = job.deadlines.makeAsyncIterator()
        guard let first = await deadlines.next() else { throw CancellationError() }
        let claim = job.claim
        var environment = self.environment
        environment["UNDERSTUDY_QUEUE"] = claim.queue.rawValue
        environment["UNDERSTUDY_JOB_ID"] = String(claim.id.rawValue)
        environment["UNDERSTUDY_JOB_ATTEMPT"] = String(claim.attempt)
        environment["UNDERSTUDY_FENCING_TOKEN"] = String(claim.token.rawValue)
        environment["UNDERSTUDY_WORKER_ID"] = worker.rawValue
        let process = try WatchedProcess(
            command: command, environment: environment, deadline: first, margin: margin,
            containment: containment, standardInput: claim.payload
        )
        let stopGrace = self.stopGrace
        let status = await withTaskGroup(of: Int32?.self) { group in
            group.addTask {
                var deadlines = job.deadlines.makeAsyncIterator()
                while let deadline = await deadlines.next() { process.extend(until: deadline) }
                return nil
            }
            group.addTask {
                await withTaskCancellationHandler {
                    await process.waitForExit()
                } onCancel: {
                    process.stop(grace: stopGrace)
                }
            }
            var status: Int32 = -1
            while let next = await group.next() {
                if let code = next {
                    status = code
                    group.cancelAll()
                }
            }
            return status
        }
        guard status == 0 else { throw Failed(status: status) }
    }
}
