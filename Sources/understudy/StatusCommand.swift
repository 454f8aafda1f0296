import ArgumentParser
import Foundation
import Understudy
import UnderstudyCore
import UnderstudySupervisor

/// `understudy status`: every group (or one), its goal and its members.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show groups, their goals and their members.",
        discussion: """
            Exit code: 0 when every listed group meets its goal, 1 when a group is below its goal, 2 on error.

            JSON schema (version 1; fields are only ever added):
              {"schemaVersion": 1, "store": "sqlite:///…", "groups": [{"group": "name", "activeGoal": 1,
               "activeCount": 1, "meetsGoal": true, "lastToken": 7 | null, "members": [{"rank": 1, "id": "a",
               "weight": 50, "state": "standby|preparing|active|stopping|resting", "host": "h", "pid": 1234,
               "heartbeatAgeMs": 12.5, "token": 7 | null, "partitions": 0}], "partitioned": false,
               "partitions": [{"partition": 0, "owner": "a" | null, "token": 7 | null}]}],
               "unreadableGroups": [{"group": "name", "error": "why its rows cannot be read"}]}
            A group is active-counted only for members that hold a lease and report "active"; an unreadable
            group counts as below its goal. A partitioned group lists its partitions (with more than 32, as
            ranges per owner; --json has every token), and meets its goal when every partition is owned.
            """
    )

    @OptionGroup var reading: StoreReading

    @Flag(help: "Print JSON (see the schema above).")
    var json = false

    func run() async throws {
        let (location, statuses, unreadable) = try await Self.read(reading)
        if json {
            var document = StatusDocument(store: location.description, statuses: statuses)
            document.unreadableGroups = unreadable.map { .init(group: $0.group.rawValue, error: $0.error) }
            print(document.encoded())
        } else {
            print("store \(location)")
            print(Self.table(statuses), terminator: "")
            for (group, error) in unreadable { print("group \(group): UNREADABLE: \(error)") }
        }
        // A group whose rows cannot be read cannot meet its goal either: its members' heartbeats fail.
        if statuses.contains(where: { !$0.meetsGoal }) || !unreadable.isEmpty { throw ExitCode(ExitStatus.belowGoal.rawValue) }
    }

    /// Reads the groups of the store (or just the one asked for); every failure is ``ExitStatus/statusError``.
    static func read(_ reading: StoreReading) async throws(CLIError) -> (StoreLocation, [GroupStatus], [(group: GroupName, error: String)]) {
        let (location, opened, group) = try await reading.open()
        defer { Task { try? await opened.close() } }
        let (views, unreadable) = try await StoreReading.groups(of: opened, at: location, only: group)
        if let group, views.isEmpty, unreadable.isEmpty { throw CLIError(.statusError, "group \"\(group)\" is not in the store \(location)") }
        return (location, views.map(GroupStatus.init(view:)), unreadable)
    }

    /// The human form: one block per group, columns sized to fit.
    static func table(_ statuses: [GroupStatus]) -> String {
        guard !statuses.isEmpty else { return "no groups in the store\n" }
        var output = ""
        for status in statuses {
            let verdict = status.meetsGoal ? "ok" : "BELOW GOAL"
            output += "group \(status.group): \(status.activeCount)/\(status.activeGoal) "
                + (status.partitioned ? "partitions owned" : "active")
                + ", last token \(status.lastToken.map { "\($0)" } ?? "-"), \(verdict)\n"
            var rows = [["RANK", "MEMBER", "WEIGHT", "STATE", "HOST", "PID", "HEARTBEAT", status.partitioned ? "PARTITIONS" : "TOKEN"]]
            for member in status.members {
                rows.append([
                    "\(member.rank)", member.id.rawValue, "\(member.weight)", member.state.rawValue, member.host,
                    "\(member.pid)", member.heartbeatAge.formatted + " ago",
                    status.partitioned ? "\(member.partitions)" : member.token.map { "\($0)" } ?? "-",
                ])
            }
            output += columns(rows)
            guard status.partitioned else { continue }
            if status.partitions.count <= 32 {
                output += columns([["PARTITION", "OWNER", "TOKEN"]] + status.partitions.map { partition in
                    ["\(partition.partition)", partition.owner?.rawValue ?? "-", partition.token.map { "\($0)" } ?? "-"]
                })
            } else {
                let owners = Dictionary(grouping: status.partitions, by: \.owner)
                for (owner, partitions) in owners.sorted(by: { ($0.key?.rawValue ?? "~") < ($1.key?.rawValue ?? "~") }) {
                    output += "  \(owner?.rawValue ?? "unowned"): \(ranges(partitions.map(\.partition))) (\(partitions.count))\n"
                }
            }
        }
        return output
    }

    /// Rows as left-aligned columns, indented by two spaces.
    private static func columns(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            let cells = row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }
            return "  " + cells.joined(separator: "  ") + "\n"
        }.joined()
    }

    /// `0-3,8,12-15`: sorted numbers as ranges.
    static func ranges(_ numbers: [Int]) -> String {
        var parts: [String] = []
        var start: Int?
        var previous: Int?
        for number in numbers.sorted() + [Int.max] {
            if let last = previous, number == last + 1 {
                previous = number
                continue
            }
            if let start, let previous { parts.append(start == previous ? "\(start)" : "\(start)-\(previous)") }
            start = number
            previous = number
        }
        return parts.joined(separator: ",")
    }
}
