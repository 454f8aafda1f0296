import GRDB
import UnderstudyCore
import UnderstudyStore

/// The embedded store: one SQLite database file shared by every member process on one host.
///
/// - Heartbeats are applied inside a `BEGIN IMMEDIATE` transaction that loads the group, applies the heartbeat
///   with ``GroupLedger/apply(_:at:)`` and writes the difference back, so two members can never both be granted
///   the same slot, whatever their timing (optimistic concurrency made pessimistic by SQLite's write lock).
///   Heartbeats of this process that arrive while a transaction is under way (or within ``batchWindow``) share
///   the next one.
/// - Time is the host's boot-time clock (``HostClock``), read after the write lock is taken, so it never jumps
///   when the wall clock is changed and every process on the host reads the same value, whatever its time
///   namespace. Rows written before the last reboot are expired, on evidence: they were last written before this
///   boot began. A file written under another host's or boot's clock since this boot began is refused: a SQLite
///   store serves one host.
/// - Every transaction checks that the path still names the file it has open. When the file was deleted,
///   replaced or restored from a backup, the store opens whatever the path names now, and that file grants no
///   slot for T (``StoreMoment/recordCompleteSince``), since leases granted in the lost file may still run; its
///   members' renewals fail there, so they deactivate. Tokens never repeat: a grant takes at least the wall clock
///   in microseconds (``StoreMoment/tokenFloor``).
/// - Released slots and joins are announced to the other processes through a file beside the database
///   (`…-changes`, watched with inotify), so their members act at once; see ``changes(of:)``. Linux only.
/// - It keeps work queues too (``JobQueueStore``, in `SQLiteStore+Queue.swift`): each call is one transaction,
///   whatever the number of jobs it carries, and enqueued jobs are announced through the same file.
/// - The database runs in WAL mode with a busy timeout; the schema is versioned.
public final class SQLiteStore: LeaseStore, PartitionLeaseStore, ChangeAnnouncing, GroupDirectory, CustomStringConvertible {
    /// The schema version this build writes and reads.
    public static let schemaVersion = SQLiteDatabase.schemaVersion

    /// The path of the database file.
    public let path: String
    /// Whether this handle only reads: it never creates, migrates or expires anything (`status`, `watch`).
    public let isReadOnly: Bool
    /// How long the first heartbeat of a transaction waits for others of this process.
    public let batchWindow: Duration
    /// The open file, which every transaction runs through; the batcher's round trips hold it too, not the store.
    let database: SQLiteDatabase
    private let batcher: HeartbeatBatcher
    /// The announcements of groups' changes and queues' jobs to the other processes sharing the file.
    let announcements: ChangeAnnouncementFile

    /// `sqlite://` and the path, as members log it at start.
    public var description: String { "sqlite://\(path)" }

    /// How many heartbeat transactions this store has run so far (each may carry several heartbeats).
    public var roundTrips: Int { database.transactions }

    /// The default database, one for every user of the host: `/var/lib/understudy/understudy.db`. Members of
    /// one group MUST share a store; two users' members would not share one in their home directories.
    public static let defaultPath = "/var/lib/understudy/understudy.db"

    /// Opens the database at `path`, creating it and its directory if needed (unless `readOnly`).
    ///
    /// - Parameters:
    ///   - clock: the store's clock; defaults to the host's boot-time clock. Every process sharing the file MUST
    ///     use the same clock, so only tests override it.
    ///   - readOnly: open for reading only, as `status` and `watch` do: nothing is ever written.
    ///   - batchWindow: how long the first heartbeat of a transaction waits for the others of this process (see
    ///     ``HeartbeatBatcher``); zero sends it at once.
    /// - Throws: ``StoreError`` when the directory cannot be created, the file is not an Understudy database, was
    ///   written by a newer Understudy, or is being written under another host's clock.
    public init(
        path: String = SQLiteStore.defaultPath, clock: HostClock? = nil, readOnly: Bool = false, batchWindow: Duration = .zero
    ) throws {
        self.path = path
        self.batchWindow = batchWindow
        self.isReadOnly = readOnly
        let announcements = ChangeAnnouncementFile(path: path + "-changes")
        let database = try SQLiteDatabase(path: path, clock: try clock ?? HostClock.system(), readOnly: readOnly)
        self.announcements = announcements
        self.database = database
        batcher = HeartbeatBatcher(window: batchWindow) { batch in
            try await SQLiteStore.apply(batch, in: database, announcing: announcements)
        }
    }

    public func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
        try await batcher.submit(heartbeat)
    }

    public func heartbeat(_ heartbeat: PartitionHeartbeat) async throws -> PartitionHeartbeatReply {
        let announcements = announcements
        let (reply, changed) = try await database.write { db, moment in
            let stored = try Self.loadLedger(db, group: heartbeat.group)
            let before = stored ?? GroupLedger(group: heartbeat.group, activeGoal: heartbeat.partitions)
            var ledger = before
            let reply = try ledger.apply(heartbeat, at: moment)
            try Self.write(ledger, replacing: stored, db)
            return (reply, ledger.shouldAnnounce(heartbeat, from: before))
        }
        if changed { announcements.announce([heartbeat.group]) }
        return reply
    }

    public func changes(of group: GroupName) -> AsyncStream<Void> {
        announcements.startWatching()
        return announcements.subscribers.subscribe(to: group)
    }

    /// Applies heartbeats in one write transaction of `database`, then announces the releases and joins among
    /// them; a heartbeat the ledger refuses fails alone. When the path names another file than the one open, the
    /// batch goes to the file the path names now.
    private static func apply(
        _ batch: [Heartbeat],
        in database: SQLiteDatabase,
        announcing announcements: ChangeAnnouncementFile
    ) async throws -> [Result<HeartbeatReply, any Error>] {
        let (results, changed) = try await database.write { db, moment in
            var results: [Result<HeartbeatReply, any Error>] = []
            var changed: [GroupName] = []
            for heartbeat in batch {
                let stored: GroupLedger?
                let before: GroupLedger
                var ledger: GroupLedger
                do {
                    // A corrupt row (StoreError) or a refusal (HeartbeatRejection) fails this heartbeat only;
                    // SQLite's own errors fail the whole transaction.
                    stored = try Self.loadLedger(db, group: heartbeat.group)
                    before = stored ?? GroupLedger(group: heartbeat.group, activeGoal: heartbeat.activeGoal)
                    ledger = before
                    results.append(.success(try ledger.apply(heartbeat, at: moment)))
                } catch let error as StoreError {
                    results.append(.failure(error))
                    continue
                } catch let error as HeartbeatRejection {
                    results.append(.failure(error))
                    continue
                }
                try Self.write(ledger, replacing: stored, db)
                if ledger.shouldAnnounce(heartbeat, from: before) { changed.append(heartbeat.group) }
            }
            return (results, changed)
        }
        announcements.announce(changed)
        return results
    }

    public func groupNames(after cursor: GroupName?, limit: Int) async throws -> [GroupName] {
        try await database.read(orIfEmpty: []) { db, _ in
            try String.fetchAll(
                db, sql: "SELECT name FROM groups WHERE name > ? ORDER BY name LIMIT ?",
                arguments: [cursor?.rawValue ?? "", max(0, limit)]
            ).compactMap { try? GroupName($0) }
        }
    }

    public func group(named name: GroupName) async throws -> GroupView? {
        try await database.read(orIfEmpty: nil) { db, now in try Self.loadLedger(db, group: name)?.view(now: now) }
    }

    public func close() async throws {
        announcements.stop()
        try database.close()
    }

    // MARK: Rows

    static func loadLedger(_ db: Database, group: GroupName) throws -> GroupLedger? {
        // `*` last: a read-only handle of a file older than version 4 sees no `partitioned` column.
        let groupRow = try db.cachedStatement(sql: "SELECT active_goal, last_token, next_join, * FROM groups WHERE name = ?")
        guard let row = try Row.fetchOne(groupRow, arguments: [group.rawValue]) else { return nil }
        func corrupt(_ what: String) -> StoreError {
            StoreError(.corrupt, "group \"\(group)\" in the store has a corrupt row: \(what)")
        }
        let partitionedValue: DatabaseValue = row.hasColumn("partitioned") ? row["partitioned"] : false.databaseValue
        guard let partitioned = Bool.fromDatabaseValue(partitionedValue),
              let goal: Int = column(row, 0),
              (1...(partitioned ? PartitionAssignment.maximumPartitions : GroupConfiguration.maximumActiveGoal)).contains(goal),
              let lastToken: Int64 = column(row, 1), (0..<Int64.max).contains(lastToken),
              let nextJoin: Int64 = column(row, 2), (1..<Int64.max).contains(nextJoin)
        else { throw corrupt("group row \(row)") }

        var members: [MemberID: GroupLedger.MemberRecord] = [:]
        let memberRows = try db.cachedStatement(sql: """
            SELECT member_id, incarnation, weight, host, pid, join_seq, phase, heartbeat_at, expires_at
            FROM members WHERE group_name = ?
            """)
        let memberCursor = try Row.fetchCursor(memberRows, arguments: [group.rawValue])
        while let row = try memberCursor.next() {
            guard let id = (column(row, 0) as String?).flatMap({ try? MemberID($0) }),
                  let incarnation: String = column(row, 1),
                  let weight: Int = column(row, 2),
                  let host: String = column(row, 3),
                  let pid: Int32 = column(row, 4),
                  let info = try? MemberInfo(id: id, incarnation: incarnation, weight: weight, host: host, pid: pid),
                  let joinSequence: Int64 = column(row, 5), (1..<nextJoin).contains(joinSequence),
                  let phase = (column(row, 6) as String?).flatMap(MemberPhase.init(rawValue:)),
                  let heartbeatAt: Int64 = column(row, 7),
                  let expiresAt: Int64 = column(row, 8), expiresAt >= heartbeatAt
            else { throw corrupt("member row \(row)") }
            members[id] = .init(
                info: info,
                joinSequence: joinSequence,
                phase: phase,
                heartbeatAt: Instant(nanoseconds: heartbeatAt),
                expiresAt: Instant(nanoseconds: expiresAt)
            )
        }

        var leases = (0..<goal).map { GroupLedger.LeaseRecord(slot: $0, holder: nil) }
        let leaseRows = try db.cachedStatement(sql: """
            SELECT slot, holder, incarnation, token, expires_at FROM leases WHERE group_name = ? ORDER BY slot
            """)
        let leaseCursor = try Row.fetchCursor(leaseRows, arguments: [group.rawValue])
        while let row = try leaseCursor.next() {
            guard let slot: Int = column(row, 0), leases.indices.contains(slot) else { throw corrupt("lease row \(row)") }
            guard !row.hasNull(atIndex: 1) else { continue }
            guard let member = (column(row, 1) as String?).flatMap({ try? MemberID($0) }),
                  let incarnation: String = column(row, 2),
                  let token: Int64 = column(row, 3), token >= 1, token <= lastToken,
                  let expiresAt: Int64 = column(row, 4),
                  partitioned || !leases.contains(where: { $0.holder?.member == member })
            else { throw corrupt("lease row \(row)") }
            leases[slot].holder = .init(
                member: member,
                incarnation: incarnation,
                token: FencingToken(rawValue: UInt64(token)),
                expiresAt: Instant(nanoseconds: expiresAt)
            )
        }
        return GroupLedger(
            group: group,
            activeGoal: goal,
            partitioned: partitioned,
            lastToken: lastToken == 0 ? nil : FencingToken(rawValue: UInt64(lastToken)),
            nextJoinSequence: nextJoin,
            members: members,
            leases: leases
        )
    }

    /// The value at `index`, or nil when it is NULL or of another type; see ``SQLiteDatabase/column(_:_:)``.
    private static func column<Value: DatabaseValueConvertible>(_ row: Row, _ index: Int) -> Value? {
        SQLiteDatabase.column(row, index)
    }

    /// Writes what changed between `stored` (as loaded) and `ledger`.
    private static func write(_ ledger: GroupLedger, replacing stored: GroupLedger?, _ db: Database) throws {
        let name = ledger.group.rawValue
        if stored?.activeGoal != ledger.activeGoal || stored?.lastToken != ledger.lastToken
            || stored?.nextJoinSequence != ledger.nextJoinSequence || stored?.partitioned != ledger.partitioned {
            try db.cachedStatement(
                sql: """
                    INSERT INTO groups (name, active_goal, last_token, next_join, partitioned) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET
                        active_goal = excluded.active_goal, last_token = excluded.last_token, next_join = excluded.next_join,
                        partitioned = excluded.partitioned
                    """
            ).execute(
                arguments: [name, ledger.activeGoal, Int64(ledger.lastToken?.rawValue ?? 0), ledger.nextJoinSequence, ledger.partitioned]
            )
        }
        for (id, record) in ledger.members where stored?.members[id] != record {
            try db.cachedStatement(
                sql: """
                    INSERT OR REPLACE INTO members
                        (group_name, member_id, incarnation, weight, host, pid, join_seq, phase, heartbeat_at, expires_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """
            ).execute(
                arguments: [
                    name, id.rawValue, record.info.incarnation, record.info.weight, record.info.host, record.info.pid,
                    record.joinSequence, record.phase.rawValue, record.heartbeatAt.nanoseconds, record.expiresAt.nanoseconds,
                ]
            )
        }
        for id in stored?.members.keys ?? [:].keys where ledger.members[id] == nil {
            try db.execute(sql: "DELETE FROM members WHERE group_name = ? AND member_id = ?", arguments: [name, id.rawValue])
        }
        if stored?.leases.count != ledger.leases.count {
            try db.execute(sql: "DELETE FROM leases WHERE group_name = ? AND slot >= ?", arguments: [name, ledger.leases.count])
        }
        for lease in ledger.leases where stored?.leases.indices.contains(lease.slot) != true || stored?.leases[lease.slot] != lease {
            try db.cachedStatement(
                sql: "INSERT OR REPLACE INTO leases (group_name, slot, holder, incarnation, token, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
            ).execute(
                arguments: [
                    name, lease.slot, lease.holder?.member.rawValue, lease.holder?.incarnation,
                    lease.holder.map { Int64($0.token.rawValue) }, lease.holder?.expiresAt.nanoseconds,
                ]
            )
        }
    }
}
