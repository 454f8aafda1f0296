import UnderstudyCore

/// A place where members of fault-tolerance groups meet: it applies heartbeats atomically on its own clock.
///
/// Every backend implements the semantics of ``GroupLedger/apply(_:at:)`` exactly, and passes the lease suite of
/// the conformance kit. A heartbeat that can never succeed throws ``HeartbeatRejection``; any other error is
/// transient and the member retries (and fences itself if the store stays away too long).
public protocol LeaseStore: Sendable {
    /// Applies one heartbeat atomically and returns the outcome and the group as it stands afterwards.
    func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply

    /// Releases the store's resources. Calls after `close()` fail.
    func close() async throws
}

/// A store that announces changes, so that members act at once instead of at their next heartbeat.
public protocol ChangeAnnouncing: Sendable {
    /// An element each time the store announces that a slot of `group` was just released or a member joined it,
    /// so a standby can ask for the slot, and an active outranked by the newcomer hand over, at once. Without
    /// announcements (a store that is not ``ChangeAnnouncing``), polling still works.
    func changes(of group: GroupName) -> AsyncStream<Void>
}

/// The groups a store knows, read one at a time so that a thousand groups cost nothing to one reader.
public protocol GroupDirectory: Sendable {
    /// One group as it stands now, or `nil` if the store has never seen it: one indexed read, whatever the number
    /// of groups.
    func group(named name: GroupName) async throws -> GroupView?

    /// At most `limit` names of groups the store knows, in name order, after `cursor` (from the first when `nil`).
    /// Reads no group, so that each can be read (and fail) on its own. Names that are not valid group names are
    /// left out: no member can address them.
    func groupNames(after cursor: GroupName?, limit: Int) async throws -> [GroupName]
}

/// What `understudy run` and `status` need of a store: leases and the directory.
public typealias CoordinationStore = LeaseStore & GroupDirectory

extension GroupDirectory {
    /// Every group name, read page by page.
    public func allGroupNames(pageSize: Int = 500) async throws -> [GroupName] {
        var names: [GroupName] = []
        while true {
            let page = try await groupNames(after: names.last, limit: pageSize)
            if page.isEmpty { return names }
            names += page
        }
    }

    /// Every group the store knows, each read on its own; a group that vanishes meanwhile is left out. Groups that
    /// never had a member are not listed.
    public func groups() async throws -> [GroupView] {
        var views: [GroupView] = []
        for name in try await allGroupNames() {
            if let view = try await group(named: name) { views.append(view) }
        }
        return views
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
