import Foundation
import UnderstudyCore

/// The stable JSON form of `understudy status --json` (schema version 1).
public struct StatusDocument: Encodable, Sendable {
    public struct Group: Encodable, Sendable {
        public var group: String
        public var activeGoal: Int
        public var activeCount: Int
        public var meetsGoal: Bool
        @NullWhenAbsent public var lastToken: UInt64? = nil
        public var members: [Member]
        /// Whether the group is partitioned; `activeGoal` is then its number of partitions, `activeCount` how
        /// many are owned.
        public var partitioned: Bool
        /// Every partition with its owner, in a partitioned group; empty otherwise.
        public var partitions: [Partition]
    }

    public struct Partition: Encodable, Sendable {
        public var partition: Int
        @NullWhenAbsent public var owner: String? = nil
        @NullWhenAbsent public var token: UInt64? = nil
    }

    public struct Member: Encodable, Sendable {
        public var rank: Int
        public var id: String
        public var weight: Int
        public var state: String
        public var host: String
        public var pid: Int32
        public var heartbeatAgeMs: Double
        @NullWhenAbsent public var token: UInt64? = nil
        /// How many partitions it owns (0 in a group of slots).
        public var partitions: Int
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
                        token: member.token?.rawValue,
                        partitions: member.partitions
                    )
                },
                partitioned: status.partitioned,
                partitions: status.partitions.map { Partition(partition: $0.partition, owner: $0.owner?.rawValue, token: $0.token?.rawValue) }
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

/// An optional that a JSON document always carries: `null` when absent, never a missing key, so that readers of a
/// schema see every field of it.
@propertyWrapper
public struct NullWhenAbsent<Value: Encodable & Sendable>: Encodable, Sendable {
    public var wrappedValue: Value?

    public init(wrappedValue: Value?) {
        self.wrappedValue = wrappedValue
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue { try container.encode(wrappedValue) } else { try container.encodeNil() }
    }
}
