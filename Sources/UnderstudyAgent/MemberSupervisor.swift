import Understudy
import UnderstudyCore
import UnderstudySupervisor

/// The supervisor of one member of an agent: a ``Supervisor`` for a group of slots, a ``PartitionedSupervisor``
/// for a partitioned group (`partitions = P`). The agent drives both alike through this.
enum MemberSupervisor: Sendable {
    case slots(Supervisor)
    case partitioned(PartitionedSupervisor)

    /// What `agent status` shows of the member, read from its newest store answer.
    struct State: Sendable {
        var state: String
        var token: FencingToken?
        /// For a partitioned member: each partition it acts on, with its token.
        var partitions: [Int: FencingToken]?
    }

    func run() async throws(SupervisorError) -> Supervisor.Outcome {
        switch self {
        case .slots(let supervisor): try await supervisor.run()
        case .partitioned(let supervisor): try await supervisor.run()
        }
    }

    func shutdown(reason: String) {
        switch self {
        case .slots(let supervisor): supervisor.shutdown(reason: reason)
        case .partitioned(let supervisor): supervisor.shutdown(reason: reason)
        }
    }

    func stopAtOnce(reason: String) async {
        switch self {
        case .slots(let supervisor): await supervisor.stopAtOnce(reason: reason)
        case .partitioned(let supervisor): await supervisor.stopAtOnce(reason: reason)
        }
    }

    func drain() {
        switch self {
        case .slots(let supervisor): supervisor.drain()
        case .partitioned(let supervisor): supervisor.drain()
        }
    }

    func resume() {
        switch self {
        case .slots(let supervisor): supervisor.resume()
        case .partitioned(let supervisor): supervisor.resume()
        }
    }

    var history: [Supervisor.Transition] {
        switch self {
        case .slots(let supervisor): supervisor.history
        case .partitioned(let supervisor): supervisor.history
        }
    }

    /// The group as the newest store answer to the member shows it; `nil` before the member exists or the store
    /// has answered.
    func groupStatus() async -> GroupStatus? {
        switch self {
        case .slots(let supervisor): try? await supervisor.member?.status()
        case .partitioned(let supervisor): try? await supervisor.member?.status()
        }
    }

    /// The member's state, `nil` before the member exists.
    func state() async -> State? {
        switch self {
        case .slots(let supervisor):
            guard let member = supervisor.member else { return nil }
            return State(state: await member.state.rawValue, token: await member.activeToken)
        case .partitioned(let supervisor):
            guard let member = supervisor.member else { return nil }
            return State(state: await member.state.rawValue, partitions: await member.ownedPartitions)
        }
    }
}
