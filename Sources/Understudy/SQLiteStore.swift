import Foundation
import GRDB
import Synchronization
import UnderstudyCore

/// The embedded store: one SQLite database file shared by every member process on one host.
///
/// - Heartbeats are applied inside a `BEGIN IMMEDIATE` transaction that loads the group, applies the heartbeat
///   with ``GroupLedger/apply(_:now:)`` and writes the difference back, so two members can never both be granted
///   the same slot, whatever their timing (optimistic concurrency made pessimistic by SQLite's write lock).
///   Heartbeats of this process that arrive while a transaction is under way share the next one.
/// - Time is the host's boot-time monotonic clock (``MonotonicClock``), read after the write lock is taken, so it
///   never jumps when the wall clock is changed and it is shared by every process on the host. Rows written
///   before the last reboot are treated as expired; fencing tokens survive reboots.
/// - Released slots and joins are announced to the other processes through a file beside the database
///   (`…-changes`, watched with inotify), so their members act at once; see ``changes(of:)``. Linux only.
/// - The database runs in WAL mode with a busy timeout; the schema is versioned.
public final class SQLiteStore: CoordinationStore {
    /// The schema version this build writes and reads.
    public static let schemaVersion = 1
    static let applicationTag = "understudy"

    /// The path of the database file.
    public let path: String
    private let database: DatabaseQueue
    private let clock: @Sendable () -> Instant
    private let batcher = HeartbeatBatcher(window: .zero)
    private let transactionCount = Atomic<Int>(0)
    #if os(Linux)
    private let announcements: ChangeAnnouncementFile
    #endif

    /// How many heartbeat transactions this store has run so far (each may carry several heartbeats).
    public var roundTrips: Int { transactionCount.load(ordering: .relaxed) }

    /// The default database: `$XDG_STATE_HOME/understudy/understudy.db`, or
    /// `~/.local/state/understudy/understudy.db`.
    public static var defaultPath: String {
        let environment = ProcessInfo.processInfo.environment
        let stateHome = environment["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".local/state")
        return (stateHome as NSString).appendingPathComponent("understudy/understudy.db")
    }

    /// Opens (creating if needed) the database at `path`, creating its directory as well.
    ///
    /// - Parameters:
    ///   - clock: the store's clock; defaults to the host's boot-time clock. Every process sharing the file MUST
    ///     use the same clock, so only tests override it.
    ///   - bootID: identifies the current boot of the host; rows written under another boot are expired.
    /// - Throws: ``StoreError`` when the directory cannot be created, the file is not an Understudy database, or
    ///   it was written by a newer Understudy.
    public init(
        path: String = SQLiteStore.defaultPath,
        clock: @escaping @Sendable () -> Instant = MonotonicClock.now,
        bootID: String = MonotonicClock.bootID()
    ) throws {
        self.path = path
        self.clock = clock
        #if os(Linux)
        announcements = ChangeAnnouncementFile(path: path + "-changes")
        #endif
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw StoreError(.unavailable, "cannot create the store directory \(directory): \(Self.reason(error))")
            }
        }
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(10)
        configuration.label = "understudy"
        // Switching a new file to WAL takes an exclusive lock that SQLite's busy handler does not wait for, so
        // processes that open a new store at the same moment retry (for up to 10 s) instead of failing.
        var attempts = 0
        while true {
            do {
                database = try Self.open(path: path, configuration: configuration, bootID: bootID)
                return
            } catch let error as DatabaseError where [.SQLITE_BUSY, .SQLITE_LOCKED].contains(error.resultCode) && attempts < 200 {
                attempts += 1
                usleep(50_000)
            } catch let error as StoreError {
                throw error
            } catch {
                throw Self.openError(error, path: path)
            }
        }
    }

    private static func open(path: String, configuration: Configuration, bootID: String) throws -> DatabaseQueue {
        let database = try DatabaseQueue(path: path, configuration: configuration)
        try database.writeWithoutTransaction { db in
            try db.inTransaction(.immediate) {
                try prepareSchema(db, path: path)
                try expireRowsOfEarlierBoots(db, bootID: bootID)
                return .commit
            }
        }
        return database
    }

    public func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
        try await batcher.submit(heartbeat) { batch in try await self.apply(batch) }
    }

    #if os(Linux)
    public func changes(of group: GroupName) -> AsyncStream<Void>? {
        announcements.startWatching()
        return announcements.subscribers.subscribe(to: group)
    }
    #endif

    /// Applies heartbeats in one `BEGIN IMMEDIATE` transaction; a heartbeat the ledger refuses fails alone.
    private func apply(_ batch: [Heartbeat]) async throws -> [Result<HeartbeatReply, any Error>] {
        let clock = self.clock
        transactionCount.add(1, ordering: .relaxed)
        let (results, changed) = try await database.writeWithoutTransaction { db in
            var results: [Result<HeartbeatReply, any Error>] = []
            var changed: [GroupName] = []
            try db.inTransaction(.immediate) {
                results = []
                changed = []
                let now = clock()
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
                        results.append(.success(try ledger.apply(heartbeat, now: now)))
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
                return .commit
            }
            return (results, changed)
        }
        #if os(Linux)
        announcements.announce(changed)
        #endif
        return results
    }

    public func groups() async throws -> [GroupView] {
        let clock = self.clock
        return try await database.read { db in
            let now = clock()
            let names = try String.fetchAll(db, sql: "SELECT name FROM groups ORDER BY name")
            return try names.compactMap { name in
                guard let group = try? GroupName(name) else {
                    throw StoreError(.corrupt, "the store holds a group with an invalid name \"\(name)\"")
                }
                return try Self.loadLedger(db, group: group)?.view(now: now)
            }
        }
    }

    public func close() async throws {
        #if os(Linux)
        announcements.stop()
        #endif
        try database.close()
    }

    // MARK: Schema

    private static func prepareSchema(_ db: Database, path: String) throws {
        if try db.tableExists("understudy_meta") {
            let meta = try Dictionary(
                uniqueKeysWithValues: Row.fetchAll(db, sql: "SELECT key, value FROM understudy_meta").map { row in
                    (row["key"] as String? ?? "", row["value"] as String? ?? "")
                }
            )
            guard meta["application"] == applicationTag else {
                throw StoreError(.foreign, "\(path) is not an Understudy database: choose another store path")
            }
            guard let version = meta["schema_version"].flatMap(Int.init) else {
                throw StoreError(.corrupt, "\(path) has no readable schema version: restore it or choose another store path")
            }
            guard version <= schemaVersion else {
                throw StoreError(
                    .newerSchema,
                    "\(path) has schema version \(version), newer than this Understudy supports (\(schemaVersion)): upgrade Understudy"
                )
            }
            return
        }
        let existingTables = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE type = 'table'") ?? 0
        guard existingTables == 0 else {
            throw StoreError(.foreign, "\(path) is a SQLite database of another application: choose another store path")
        }
        try db.execute(sql: """
            CREATE TABLE understudy_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
            CREATE TABLE groups (
                name TEXT PRIMARY KEY NOT NULL,
                active_goal INTEGER NOT NULL,
                last_token INTEGER NOT NULL,
                next_join INTEGER NOT NULL
            );
            CREATE TABLE members (
                group_name TEXT NOT NULL REFERENCES groups(name),
                member_id TEXT NOT NULL,
                incarnation TEXT NOT NULL,
                weight INTEGER NOT NULL,
                host TEXT NOT NULL,
                pid INTEGER NOT NULL,
                join_seq INTEGER NOT NULL,
                phase TEXT NOT NULL,
                heartbeat_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                PRIMARY KEY (group_name, member_id)
            );
            CREATE TABLE leases (
                group_name TEXT NOT NULL REFERENCES groups(name),
                slot INTEGER NOT NULL,
                holder TEXT,
                incarnation TEXT,
                token INTEGER,
                expires_at INTEGER,
                PRIMARY KEY (group_name, slot)
            );
            """)
        try db.execute(
            sql: "INSERT INTO understudy_meta (key, value) VALUES ('application', ?), ('schema_version', ?), ('boot_id', '')",
            arguments: [applicationTag, String(schemaVersion)]
        )
    }

    /// After a reboot the boot-time clock restarts from zero, so instants written before it mean nothing:
    /// every membership and lease of the earlier boot is expired. Token counters are kept.
    private static func expireRowsOfEarlierBoots(_ db: Database, bootID: String) throws {
        let stored = try String.fetchOne(db, sql: "SELECT value FROM understudy_meta WHERE key = 'boot_id'")
        guard stored != bootID else { return }
        try db.execute(sql: "DELETE FROM members")
        try db.execute(sql: "UPDATE leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL")
        try db.execute(sql: "INSERT OR REPLACE INTO understudy_meta (key, value) VALUES ('boot_id', ?)", arguments: [bootID])
    }

    // MARK: Rows

    private static func loadLedger(_ db: Database, group: GroupName) throws -> GroupLedger? {
        let groupRow = try db.cachedStatement(sql: "SELECT active_goal, last_token, next_join FROM groups WHERE name = ?")
        guard let row = try Row.fetchOne(groupRow, arguments: [group.rawValue]) else { return nil }
        func corrupt(_ what: String) -> StoreError {
            StoreError(.corrupt, "group \"\(group)\" in the store has a corrupt row: \(what)")
        }
        guard let goal: Int = column(row, 0), (1...GroupConfiguration.maximumActiveGoal).contains(goal),
              let lastToken: Int64 = column(row, 1), lastToken >= 0,
              let nextJoin: Int64 = column(row, 2), nextJoin >= 1
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
                  let joinSequence: Int64 = column(row, 5),
                  let phase = (column(row, 6) as String?).flatMap(MemberPhase.init(rawValue:)),
                  let heartbeatAt: Int64 = column(row, 7),
                  let expiresAt: Int64 = column(row, 8)
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
                  let expiresAt: Int64 = column(row, 4)
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
            lastToken: lastToken == 0 ? nil : FencingToken(rawValue: UInt64(lastToken)),
            nextJoinSequence: nextJoin,
            members: members,
            leases: leases
        )
    }

    /// The value at `index`, or nil when it is NULL or of another type (a corrupt row must not trap, as GRDB's
    /// typed subscripts do).
    private static func column<Value: DatabaseValueConvertible>(_ row: Row, _ index: Int) -> Value? {
        Value.fromDatabaseValue(row[index] as DatabaseValue)
    }

    /// Writes what changed between `stored` (as loaded) and `ledger`.
    private static func write(_ ledger: GroupLedger, replacing stored: GroupLedger?, _ db: Database) throws {
        let name = ledger.group.rawValue
        if stored?.activeGoal != ledger.activeGoal || stored?.lastToken != ledger.lastToken
            || stored?.nextJoinSequence != ledger.nextJoinSequence {
            try db.cachedStatement(
                sql: """
                    INSERT INTO groups (name, active_goal, last_token, next_join) VALUES (?, ?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET
                        active_goal = excluded.active_goal, last_token = excluded.last_token, next_join = excluded.next_join
                    """
            ).execute(
                arguments: [name, ledger.activeGoal, Int64(ledger.lastToken?.rawValue ?? 0), ledger.nextJoinSequence]
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

    // MARK: Errors

    private static func openError(_ error: any Error, path: String) -> StoreError {
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_NOTADB:
                return StoreError(.foreign, "\(path) is not an Understudy database (not SQLite): choose another store path")
            case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_READONLY, .SQLITE_IOERR:
                return StoreError(.unavailable, "cannot open the store \(path): \(error.message ?? "\(error.resultCode)")")
            case .SQLITE_CORRUPT:
                return StoreError(.corrupt, "the store \(path) is corrupt: restore it or choose another store path")
            default:
                break
            }
        }
        return StoreError(.unavailable, "cannot open the store \(path): \(reason(error))")
    }

    private static func reason(_ error: any Error) -> String {
        if let error = error as? DatabaseError { return error.message ?? "\(error.resultCode)" }
        if let error = error as? CocoaError, let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError {
            return underlying.localizedDescription
        }
        return (error as NSError).localizedDescription
    }
}
