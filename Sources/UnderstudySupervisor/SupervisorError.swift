import Understudy

/// Why a supervisor could not start or go on, with a message that says what is wrong and how to fix it.
///
/// The `understudy` command maps each ``Kind`` to one exit code.
public struct SupervisorError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// Settings that cannot work together, or a containment that cannot be had.
        case invalidConfiguration
        /// The store cannot be created, opened or written.
        case storeUnavailable
        /// Another live process already uses this member id in the group.
        case memberIDInUse
        /// The group runs with another active goal, or another number of partitions.
        case activeGoalMismatch
        /// An HTTP address that is not `HOST:PORT`.
        case invalidHTTPAddress
        /// The HTTP address cannot be listened on.
        case httpUnavailable
        /// The watchdog, or the cgroup leaf it runs in, cannot be made.
        case commandNotExecutable
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// How a member's run ended, as the supervisor reports it: a refusal by the store as its kind, any other
    /// error as a store that cannot be used.
    static func check(_ outcome: Result<Void, any Error>) throws(SupervisorError) {
        do {
            try outcome.get()
        } catch MemberError.rejected(let rejection) {
            switch rejection {
            case .memberIDInUse: throw SupervisorError(.memberIDInUse, rejection.description)
            case .activeGoalMismatch, .partitionsMismatch: throw SupervisorError(.activeGoalMismatch, rejection.description)
            }
        } catch {
            throw SupervisorError(.storeUnavailable, "\(error)")
        }
    }
}
