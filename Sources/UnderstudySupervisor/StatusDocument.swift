import Foundation
import UnderstudyCore

/// The stable JSON form of `understudy status --json` (schema version 1).
public struct StatusDocument: Encodable, Sendable {
    public struct Group: Encodable, Sendable {
        public var group: String
        public var activeGoal: Int
        public var activeCount: Int
        public var meetsGoal: Bool
        public var lastToken: UInt64?
        public var members: [Member]

        enum CodingKeys: CodingKey { case group, activeGoal, activeCount, meetsGoal, lastToken, members }

        // Written out so that a missing token is `null`, not an absent key.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(group, forKey: .group)
            try container.encode(activeGoal, forKey: .activeGoal)
            try container.encode(activeCount, forKey: .activeCount)
            try container.encode(meetsGoal, forKey: .meetsGoal)
            try container.encode(lastToken, forKey: .lastToken)
            try container.encode(members, forKey: .members)
        }
    }

    public struct Member: Encodable, Sendable {
        public var rank: Int
        public var id: String
        public var weight: Int
        public var state: String
        public var host: String
        public var pid: Int32
        public var heartbeatAgeMs: Double
        public var token: UInt64?

        enum CodingKeys: CodingKey { case rank, id, weight, state, host, pid, heartbeatAgeMs, token }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(rank, forKey: .rank)
            try container.encode(id, forKey: .id)
            try container.encode(weight, forKey: .weight)
            try container.encode(state, forKey: .state)
            try container.encode(host, forKey: .host)
            try container.encode(pid, forKey: .pid)
            try container.encode(heartbeatAgeMs, forKey: .heartbeatAgeMs)
            try container.encode(token, forKey: .token)
        }
    }

    /// A group whose rows cannot be read, with the reason.
    public struct Unreadable: Encodable, Sendable {
        public var group: String
        public var error: String

        public init(group: String, error: String) {
            self.group = group
            self.error = error
        }
    }

    public var schemaVersion = 1
    public var store: String
    public var groups: [Group]
    public var unreadableGroups: [Unreadable] = []

    public init(store: String, statuses: [GroupStatus]) {
        self.store = store
        groups = statuses.map { status in
            Group(
                group: status.group.rawValue,
                activeGoal: status.activeGoal,
                activeCount: status.activeCount,
                meetsGoal: status.meetsGoal,
                lastToken: status.lastToken?.rawValue,
                members: status.members.map { member in
                    Member(
                        rank: member.rank,
                        id: member.id.rawValue,
                        weight: member.weight,
                        state: member.state.rawValue,
                        host: member.host,
                        pid: member.pid,
                        heartbeatAgeMs: Double(member.heartbeatAge.nanoseconds / 1_000) / 1_000,
                        token: member.token?.rawValue
                    )
                }
            )
        }
    }

    public func encoded() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding plain strings and numbers cannot fail.
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
