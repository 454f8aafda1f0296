import Foundation
import UnderstudyCore

/// One change seen between two reads of the store, as `understudy watch` prints it.
public struct GroupChange: Hashable, Sendable {
    public enum Kind: String, Sendable {
        case join, leave, activate, deactivate
    }

    public var time = Date()
    public var group: GroupName
    public var kind: Kind
    public var member: MemberID
    public var token: FencingToken?
    public var reason: String?
    public var weight: Int?
    /// The partition, in a partitioned group.
    public var partition: Int?

    public var text: String {
        var line = "\(Self.clock(time))  \(group)  \(kind.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) \(member)"
        if let weight { line += " weight \(weight)" }
        if let partition { line += " partition \(partition)" }
        if let token { line += " token \(token)" }
        if let reason { line += " (\(reason))" }
        return line
    }

    public var json: String {
        func optional(_ value: String?) -> String { value.map(LineLogHandler.quote) ?? "null" }
        return "{\"time\":\(LineLogHandler.quote(time.ISO8601Format())),\"group\":\(LineLogHandler.quote(group.rawValue)),"
            + "\"event\":\"\(kind.rawValue)\",\"member\":\(LineLogHandler.quote(member.rawValue)),"
            + "\"token\":\(token.map { "\($0)" } ?? "null"),\"reason\":\(optional(reason)),"
            + "\"weight\":\(weight.map { "\($0)" } ?? "null"),\"partition\":\(partition.map { "\($0)" } ?? "null")}"
    }

    static func clock(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970
        var time = time_t(seconds)
        var parts = tm()
        localtime_r(&time, &parts)
        let millis = Int((seconds - Double(time)) * 1_000)
        return String(format: "%02d:%02d:%02d.%03d", parts.tm_hour, parts.tm_min, parts.tm_sec, millis)
    }
}

/// Turns successive reads of the store into ``GroupChange``s.
public struct ChangeTracker: Sendable {
    private var previous: [GroupName: GroupView] = [:]

    /// Polls shorter than this before a lease's expiry count it as expired rather than handed back.
    public var expiryWindow: Duration = .milliseconds(150)

    public init() {}

    /// The changes from the previous views of these groups to `views`.
    public mutating func update(_ views: [GroupView]) -> [GroupChange] {
        var changes: [GroupChange] = []
        for view in views {
            let before = previous[view.group]
            let oldMembers = Dictionary((before?.members ?? []).map { ($0.info.id, $0) }, uniquingKeysWith: { a, _ in a })
            let newMembers = Dictionary(view.members.map { ($0.info.id, $0) }, uniquingKeysWith: { a, _ in a })
            let partitions = view.partitioned ? partitionChanges(from: before, to: view, newMembers: newMembers) : (deactivations: [], activations: [])
            changes += partitions.deactivations
            // In a partitioned group, a member holds many leases: its partitions are compared one by one above.
            let oldLeases = view.partitioned ? [:] : Dictionary((before?.leases ?? []).map { ($0.holder, $0) }, uniquingKeysWith: { a, _ in a })
            let newLeases = view.partitioned ? [:] : Dictionary(view.leases.map { ($0.holder, $0) }, uniquingKeysWith: { a, _ in a })
            let yielders = before.map { GroupPlan(view: $0, preemption: true, preparationInterval: nil).yielders } ?? []

            for (holder, lease) in oldLeases.sorted(by: { $0.key < $1.key }) where newLeases[holder]?.token != lease.token {
                let reason: String
                if lease.remaining <= expiryWindow {
                    reason = "expired"
                } else if let member = newMembers[holder] {
                    if member.phase == .resting {
                        reason = "resigned"
                    } else if yielders.contains(holder) || view.members.contains(where: { $0.info.weight > member.info.weight }) {
                        reason = "preempted"
                    } else {
                        reason = "released"
                    }
                } else {
                    reason = "left"
                }
                changes.append(GroupChange(group: view.group, kind: .deactivate, member: holder, token: lease.token, reason: reason))
            }
            for id in oldMembers.keys.sorted() where newMembers[id] == nil {
                changes.append(GroupChange(group: view.group, kind: .leave, member: id))
            }
            for member in view.members where oldMembers[member.info.id] == nil {
                changes.append(GroupChange(group: view.group, kind: .join, member: member.info.id, weight: member.info.weight))
            }
            for lease in view.leases where !view.partitioned && oldLeases[lease.holder]?.token != lease.token {
                changes.append(GroupChange(group: view.group, kind: .activate, member: lease.holder, token: lease.token))
            }
            changes += partitions.activations
            previous[view.group] = view
        }
        return changes
    }

    /// Each partition whose lease changed hands: the old owner deactivates it, the new one activates it.
    private func partitionChanges(
        from before: GroupView?, to view: GroupView, newMembers: [MemberID: GroupView.Member]
    ) -> (deactivations: [GroupChange], activations: [GroupChange]) {
        let old = Dictionary((before?.leases ?? []).map { ($0.slot, $0) }, uniquingKeysWith: { a, _ in a })
        let new = Dictionary(view.leases.map { ($0.slot, $0) }, uniquingKeysWith: { a, _ in a })
        var deactivations: [GroupChange] = []
        var activations: [GroupChange] = []
        for (partition, lease) in old.sorted(by: { $0.key < $1.key }) where new[partition]?.token != lease.token {
            let reason = lease.remaining <= expiryWindow ? "expired" : newMembers[lease.holder] == nil ? "left" : "released"
            deactivations.append(GroupChange(group: view.group, kind: .deactivate, member: lease.holder, token: lease.token, reason: reason, partition: partition))
        }
        for (partition, lease) in new.sorted(by: { $0.key < $1.key }) where old[partition]?.token != lease.token {
            activations.append(GroupChange(group: view.group, kind: .activate, member: lease.holder, token: lease.token, partition: partition))
        }
        return (deactivations, activations)
    }
}
