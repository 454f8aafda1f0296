import ArgumentParser
import Foundation
import Understudy
import UnderstudyCore

/// `understudy watch`: a stream of changes to groups, as they happen.
struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream joins, leaves, activations and deactivations as they happen.",
        discussion: """
            The store is polled every --interval; the first lines describe the groups as they stand. \
            Deactivation reasons are inferred from what the store shows: preempted (a member of higher weight \
            took over), resigned (the command exited), expired (the lease ran out), released (handed back), \
            left (the member left with it).

            JSON: one object per line: {"time": "…", "group": "g", "event": "join|leave|activate|deactivate", \
            "member": "a", "token": 7 | null, "reason": "…" | null, "weight": 50 | null}
            """
    )

    @OptionGroup var reading: StoreReading

    @Flag(help: "One JSON object per line.")
    var json = false

    @Option(help: "How often to read the store.")
    var interval: String = "50ms"

    func run() async throws {
        let period: Duration
        do { period = try parseDuration(interval) } catch { throw CLIError(.statusError, "--interval: \(error)") }
        guard period > .zero else { throw CLIError(.statusError, "--interval must be greater than zero") }
        let (location, opened, group) = try await reading.open()
        var tracker = ChangeTracker()
        while true {
            for change in tracker.update(try await StoreReading.groups(of: opened, at: location, only: group).views) {
                printLine(json ? change.json : change.text)
            }
            try await Task.sleep(for: period)
        }
    }
}

/// One change seen between two reads of the store.
struct GroupChange: Hashable, Sendable {
    enum Kind: String, Sendable {
        case join, leave, activate, deactivate
    }

    var time = Date()
    var group: GroupName
    var kind: Kind
    var member: MemberID
    var token: FencingToken?
    var reason: String?
    var weight: Int?

    var text: String {
        var line = "\(Self.clock(time))  \(group)  \(kind.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) \(member)"
        if let weight { line += " weight \(weight)" }
        if let token { line += " token \(token)" }
        if let reason { line += " (\(reason))" }
        return line
    }

    var json: String {
        func optional(_ value: String?) -> String { value.map(LineLogHandler.quote) ?? "null" }
        return "{\"time\":\(LineLogHandler.quote(time.ISO8601Format())),\"group\":\(LineLogHandler.quote(group.rawValue)),"
            + "\"event\":\"\(kind.rawValue)\",\"member\":\(LineLogHandler.quote(member.rawValue)),"
            + "\"token\":\(token.map { "\($0)" } ?? "null"),\"reason\":\(optional(reason)),"
            + "\"weight\":\(weight.map { "\($0)" } ?? "null")}"
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
struct ChangeTracker {
    private var previous: [GroupName: GroupView] = [:]

    /// Polls shorter than this before a lease's expiry count it as expired rather than handed back.
    var expiryWindow: Duration = .milliseconds(150)

    mutating func update(_ views: [GroupView]) -> [GroupChange] {
        var changes: [GroupChange] = []
        for view in views {
            let before = previous[view.group]
            let oldMembers = Dictionary((before?.members ?? []).map { ($0.info.id, $0) }, uniquingKeysWith: { a, _ in a })
            let newMembers = Dictionary(view.members.map { ($0.info.id, $0) }, uniquingKeysWith: { a, _ in a })
            let oldLeases = Dictionary((before?.leases ?? []).map { ($0.holder, $0) }, uniquingKeysWith: { a, _ in a })
            let newLeases = Dictionary(view.leases.map { ($0.holder, $0) }, uniquingKeysWith: { a, _ in a })
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
            for lease in view.leases where oldLeases[lease.holder]?.token != lease.token {
                changes.append(GroupChange(group: view.group, kind: .activate, member: lease.holder, token: lease.token))
            }
            previous[view.group] = view
        }
        return changes
    }
}
