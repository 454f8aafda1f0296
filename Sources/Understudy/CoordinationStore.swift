import UnderstudyCore

/// A place where members of fault-tolerance groups meet: it applies heartbeats atomically on its own clock.
///
/// Every backend implements the semantics of ``GroupLedger/apply(_:now:)`` exactly, and passes the same
/// conformance suite. A heartbeat that can never succeed throws ``HeartbeatRejection``; any other error is
/// transient and the member retries (and fences itself if the store stays away too long).
public protocol CoordinationStore: Sendable {
    /// Applies one heartbeat atomically and returns the outcome and the group as it stands afterwards.
    func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply

    /// Every group the store knows, as it stands now. Groups that never had a member are not listed.
    func groups() async throws -> [GroupView]

    /// One group as it stands now, or `nil` if the store has never seen it: one indexed read, whatever the number
    /// of groups.
    func group(_ name: GroupName) async throws -> GroupView?

    /// The names of every group the store knows, without reading the groups, so that each can be read (and fail)
    /// on its own.
    func groupNames() async throws -> [GroupName]

    /// Releases the store's resources. Calls after `close()` fail.
    func close() async throws

    /// An element each time the store announces that a slot of `group` was just released or a member joined it,
    /// so a standby can ask for the slot, and an active outranked by the newcomer hand over, at once instead of at
    /// their next heartbeat. `nil` when the store cannot announce (polling still works).
    func changes(of group: GroupName) -> AsyncStream<Void>?
}

extension CoordinationStore {
    public func changes(of group: GroupName) -> AsyncStream<Void>? { nil }

    public func groupNames() async throws -> [GroupName] {
        try await groups().map(\.group)
    }

    /// Filters ``groups()``: a backend that can read one group by itself SHOULD.
    public func group(_ name: GroupName) async throws -> GroupView? {
        try await groups().first { $0.group == name }
    }
}

/// A store that cannot be used, with a message that says what is wrong and how to fix it.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// The store location cannot be created or opened.
        case unavailable
        /// The file or database is not an Understudy store.
        case foreign
        /// The store was written by a newer Understudy.
        case newerSchema
        /// A row cannot be read as Understudy data.
        case corrupt
        /// The store URL is malformed or names an unknown backend.
        case invalidLocation
        /// The store was closed.
        case closed
        /// The store is written under a clock this process cannot compare with its own (a SQLite file shared by
        /// another host, or by another boot clock).
        case foreignClock
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
