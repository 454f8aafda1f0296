import Foundation
import Understudy
import UnderstudyCore
import UnderstudySupervisor

/// The JSON of `understudy agent status --json`, the control socket's and the status page's `/status`
/// (schema version 1; fields are only ever added).
public struct AgentStatusDocument: Encodable, Sendable {
    public struct Member: Encodable, Sendable {
        public var group: String
        public var id: String
        public var weight: Int
        /// The member's state (`active`, `standby`, `preparing`, `resting`, `stopping`…), `ended` once its
        /// supervisor returned by itself.
        public var state: String
        public var drained: Bool
        @NullWhenAbsent public var token: UInt64? = nil
        /// Why the member no longer runs.
        @NullWhenAbsent public var ended: String? = nil
        public var command: [String]
        public var history: [Transition]
        /// P, for a partitioned member.
        @NullWhenAbsent public var partitionCount: Int? = nil
        /// For a partitioned member: the partitions it acts on, each with its token, by partition.
        @NullWhenAbsent public var partitions: [OwnedPartition]? = nil
    }

    /// A partition a member acts on, and the partition's token.
    public struct OwnedPartition: Encodable, Sendable {
        public var partition: Int
        public var token: UInt64
    }

    /// An activation or deactivation of a member of this agent.
    public struct Transition: Encodable, Sendable {
        public var group: String
        public var member: String
        public var at: String
        public var event: String
        @NullWhenAbsent public var token: UInt64? = nil
        public var reason: String
        @NullWhenAbsent public var activeForMs: Double? = nil
        /// The partition, for a member of a partitioned group.
        @NullWhenAbsent public var partition: Int? = nil
    }

    /// A queue worker of this agent.
    public struct Worker: Encodable, Sendable {
        public var queue: String
        public var id: String
        public var concurrency: Int
        /// `running`, or `ended`.
        public var state: String
        @NullWhenAbsent public var ended: String? = nil
        public var command: [String]
        /// The queue's jobs waiting to be claimed, and running, as last counted (about once a second).
        @NullWhenAbsent public var pending: Int? = nil
        @NullWhenAbsent public var running: Int? = nil
        /// The worker's periodic jobs: each name with its schedule.
        public var periodic: [String: String] = [:]
    }

    public var schemaVersion = 1
    public var file: String
    public var pid: Int32
    public var members: [Member]
    public var workers: [Worker]
    /// Each group as the store shows it, every host's members with ranks and heartbeat ages.
    public var groups: [StatusDocument.Group]
    /// The newest transitions of every member, newest first.
    public var history: [Transition]
    /// Each group's newest changes of active members, on any host, newest first (``FailoverHistory``).
    public var failovers: [FailoverHistory.Failover]

    public func encoded(pretty: Bool = false) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Self.timestamp(date))
        }
        // Encoding plain strings and numbers cannot fail.
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

extension AgentStatusDocument {
    /// `2026-12-01T19:30:31.689Z`.
    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }
}

extension Agent {
    /// The state of every member and of their groups, from each member's newest store answer (no round trip).
    public func status() async -> AgentStatusDocument {
        var members: [AgentStatusDocument.Member] = []
        var history: [(Date, AgentStatusDocument.Transition)] = []
        let statuses = await groupStatuses()
        for member in configuration.members {
            let key = member.key
            var document = AgentStatusDocument.Member(
                group: key.group, id: key.id, weight: member.weight, state: "starting",
                drained: drainedGroups.contains(key.group), command: member.command, history: [], partitionCount: member.partitions
            )
            if let running = running[key] {
                let transitions = running.supervisor.history.map { transition in
                    AgentStatusDocument.Transition(
                        group: key.group, member: key.id, at: AgentStatusDocument.timestamp(transition.at), event: transition.event,
                        token: transition.token?.rawValue, reason: transition.reason,
                        activeForMs: transition.activeFor.map { Double($0.nanoseconds / 1_000) / 1_000 }, partition: transition.partition
                    )
                }
                document.history = transitions
                history += zip(running.supervisor.history.map(\.at), transitions)
                if let state = await running.supervisor.state() {
                    document.state = state.state
                    document.token = state.token?.rawValue
                    document.partitions = state.partitions.map { owned in
                        owned.sorted { $0.key < $1.key }.map { AgentStatusDocument.OwnedPartition(partition: $0.key, token: $0.value.rawValue) }
                    }
                }
            } else {
                document.state = "ended"
                document.ended = ended[key]
            }
            members.append(document)
        }
        return AgentStatusDocument(
            file: path,
            pid: getpid(),
            members: members,
            workers: configuration.workers.map { worker in
                AgentStatusDocument.Worker(
                    queue: worker.key.group, id: worker.key.id, concurrency: worker.concurrency,
                    state: runningWorkers[worker.key] == nil ? "ended" : "running", ended: endedWorkers[worker.key], command: worker.command,
                    pending: queueStats[worker.key]?.count(.pending), running: queueStats[worker.key]?.count(.running),
                    periodic: worker.periodic.mapValues(\.description)
                )
            },
            groups: StatusDocument(store: "", statuses: statuses.keys.sorted().compactMap { statuses[$0] }).groups,
            history: history.sorted { $0.0 > $1.0 }.prefix(Supervisor.historyLength).map(\.1),
            failovers: failoverHistory
        )
    }
}
