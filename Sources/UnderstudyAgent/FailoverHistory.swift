import Foundation
import UnderstudyCore

/// Each group's failovers as the agent sees them: every change of a group's active members, across all hosts,
/// with its cause and how long the group was below its goal. A pure function of successive group views (the
/// members' newest store answers), so it needs no store history and costs no round trip.
public struct FailoverHistory: Sendable {
    /// One change of a group's active members.
    public struct Failover: Encodable, Sendable, Hashable {
        public var group: String
        public var at: Date
        public var from: [String]
        public var to: [String]
        /// Why the old actives stopped: `gone` (no heartbeat row: left, or died and expired), `silent` (its row
        /// says active but it holds no lease: its heartbeats stopped), or the state it reports (`stopping`,
        /// `resting`, `standby`); `elected` when only actives were added.
        public var reason: String
        /// How long the group had fewer actives than its goal before this change, when it did.
        public var belowGoalForMs: Double?
    }

    /// How many failovers are kept, newest last.
    public static let length = 20

    private var active: [String: [String]] = [:]
    private var belowGoalSince: [String: Date] = [:]
    public private(set) var failovers: [Failover] = []

    public init() {}

    /// Takes in a group's newest view at `now`; records a failover when its active members changed.
    public mutating func observe(_ status: GroupStatus, at now: Date) {
        observe(
            group: status.group.rawValue, activeGoal: status.activeGoal,
            members: status.members.map { member in
                // A row that still says active but holds no lease: its heartbeats stopped (a dead or frozen host).
                (member.id.rawValue, member.state == .active ? (member.token == nil ? "silent" : "active") : "\(member.state)")
            },
            at: now
        )
    }

    /// ``observe(_:at:)`` with a group's members as ids and states (`active` for an active with a token).
    public mutating func observe(group: String, activeGoal: Int, members: [(id: String, state: String)], at now: Date) {
        let current = members.filter { $0.state == "active" }.map(\.id).sorted()
        if current.count >= activeGoal {
            defer { belowGoalSince[group] = nil }
            guard let previous = active[group], previous != current else {
                active[group] = current
                return
            }
            record(group: group, from: previous, to: current, members: members, at: now, belowSince: belowGoalSince[group])
        } else {
            if belowGoalSince[group] == nil { belowGoalSince[group] = now }
            // A change seen while below the goal is told once the goal is met again, as one failover.
            if active[group] == nil { active[group] = current }
            return
        }
        active[group] = current
    }

    private mutating func record(
        group: String, from previous: [String], to current: [String], members: [(id: String, state: String)], at now: Date, belowSince: Date?
    ) {
        let stopped = previous.filter { !current.contains($0) }
        let reasons = stopped.map { id in members.first { $0.id == id }?.state ?? "gone" }
        failovers.append(Failover(
            group: group, at: now, from: previous, to: current, reason: reasons.isEmpty ? "elected" : Array(Set(reasons)).sorted().joined(separator: ", "),
            belowGoalForMs: belowSince.map { now.timeIntervalSince($0) * 1_000 }
        ))
        if failovers.count > Self.length { failovers.removeFirst(failovers.count - Self.length) }
    }
}
