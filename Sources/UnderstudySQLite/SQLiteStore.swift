import Foundation
import GRDB
import Synchronization
import UnderstudyCore
import UnderstudyStore

/// The embedded store: one SQLite database file shared by every member process on one host.
///
/// - Heartbeats are applied inside a `BEGIN IMMEDIATE` transaction that loads the group, applies the heartbeat
///   with ``GroupLedger/apply(_:at:)`` and writes the difference back, so two members can never both be granted
///   the same slot, whatever their timing (optimistic concurrency made pessimistic by SQLite's write lock).
///   Heartbeats of this process that arrive while a transaction is under way share the next one.
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
/// - The database runs in WAL mode with a busy timeout; the schema is versioned.
public final class SQLiteStore: LeaseStore, ChangeAnnouncing, GroupDirectory, CustomStringConvertible {
    /// The schema version this build writes and reads.
    public static let schemaVersion = 1
    static let applicationTag = "understudy"

    /// The path of the database file.
    public let path: String
    /// Whether this handle only reads: it never creates, migrates or expires anything (`status`, `watch`).
    public let isReadOnly: Bool
    private let clock: HostClock
    private let configuration: Configuration
    private let file: Mutex<OpenFile>
    private let batcher = HeartbeatBatcher(window: .zero)
    private let transactionCount = Atomic<Int>(0)
    private let announcements: ChangeAnnouncementFile

    /// The database file this handle has open.
    private struct OpenFile: @unchecked Sendable {
        var database: DatabaseQueue
        /// Device and inode of the file when it was opened.
        var identity: String
    }

    /// `sqlite://` and the path, as members log it at start.
    public var description: String { "sqlite://\(path)" }

    /// How many heartbeat transactions this store has run so far (each may carry several heartbeats).
    public var roundTrips: Int { transactionCount.load(ordering: .relaxed) }

    /// The default database, one for every user of the host: `/var/lib/understudy/understudy.db`. Members of
    /// one group MUST share a store; two users' members would not share one in their home directories.
    public static let defaultPath = "/var/lib/understudy/understudy.db"

    /// Opens the database at `path`, creating it and its directory if needed (unless `readOnly`).
    ///
    /// - Parameters:
    ///   - clock: the store's clock; defaults to the host's boot-time clock. Every process sharing the file MUST
    ///     use the same clock, so only tests override it.
    ///   - readOnly: open for reading only, as `status` and `watch` do: nothing is ever written.
    /// - Throws: ``StoreError`` when the directory cannot be created, the file is not an Understudy database, was
    ///   written by a newer Understudy, or is being written under another host's clock.
    public init(path: String = SQLiteStore.defaultPath, clock: HostClock? = nil, readOnly: Bool = false) throws {
        self.path = path
        self.clock = try clock ?? HostClock.system()
        self.isReadOnly = readOnly
        announcements = ChangeAnnouncementFile(path: path + "-changes")
        if !readOnly {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                do {
                    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                } catch {
                    throw StoreError(.unavailable, "cannot create the store directory \(directory): \(Self.reason(error))")
                }
            }
        }
        var configuration = Configuration()
        configuration.journalMode = readOnly ? .default : .wal
        configuration.readonly = readOnly
        configuration.busyMode = .timeout(10)
        configuration.label = "understudy"
        self.configuration = configuration
        file = Mutex(try Self.open(path: path, configuration: configuration, clock: self.clock))
    }

    /// Opens the file, retrying while another process switches a new file to WAL mode.
    private static func open(path: String, configuration: Configuration, clock: HostClock) throws -> OpenFile {
        // Switching a new file to WAL takes an exclusive lock that SQLite's busy handler does not wait for, so
        // processes that open a new store at the same moment retry (for up to 10 s) instead of failing.
        var attempts = 0
        while true {
            do {
                return try openOnce(path: path, configuration: configuration, clock: clock)
            } catch let error as DatabaseError where [.SQLITE_BUSY, .SQLITE_LOCKED].contains(error.resultCode) && attempts < 200 {
                attempts += 1
                usleep(50_000)
            } catch let error as StoreError {
                throw error
            } catch {
                throw openError(error, path: path)
            }
        }
    }

    private static func openOnce(path: String, configuration: Configuration, clock: HostClock) throws -> OpenFile {
        if configuration.readonly {
            guard FileManager.default.fileExists(atPath: path) else {
                throw StoreError(.unavailable, "no store at \(path)")
            }
            let database = try DatabaseQueue(path: path, configuration: configuration)
            let identity = try fileIdentity(path)
            try database.read { db in
                // A file with no tables yet is a store its first member is creating right now.
                guard try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE type = 'table'") != 0 else { return }
                try checkSchema(db, path: path)
                _ = try checkBoot(db, path: path, clock: clock)
            }
            return OpenFile(database: database, identity: identity)
        }
        let database = try DatabaseQueue(path: path, configuration: configuration)
        let identity = try database.writeWithoutTransaction { db in
            try db.inTransaction(.immediate) {
                let created = try prepareSchema(db, path: path)
                switch try checkBoot(db, path: path, clock: clock) {
                case .unrecorded, .predatesThisBoot:
                    try expireRowsOfEarlierBoot(db, clock: clock)
                case .sameBoot:
                    // Files of earlier builds did not record when the boot began.
                    if try meta(db, "boot_started_us") == nil { try recordBoot(db, clock: clock) }
                }
                try noteFileIdentity(db, path: path, created: created, now: clock.now())
                return .commit
            }
            return try fileIdentity(path)
        }
        return OpenFile(database: database, identity: identity)
    }

    public func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
        try await batcher.submit(heartbeat) { batch in try await self.apply(batch) }
    }

    public func changes(of group: GroupName) -> AsyncStream<Void> {
        announcements.startWatching()
        return announcements.subscribers.subscribe(to: group)
    }

    /// Applies heartbeats in one `BEGIN IMMEDIATE` transaction; a heartbeat the ledger refuses fails alone.
    /// When the path names another file than the one open, the batch goes to the file the path names now.
    private func apply(_ batch: [Heartbeat]) async throws -> [Result<HeartbeatReply, any Error>] {
        guard !isReadOnly else { throw StoreError(.unavailable, "the store \(path) was opened for reading only") }
        do {
            return try await apply(batch, in: file.withLock { $0 })
        } catch is FileReplaced {
            let reopened = try Self.open(path: path, configuration: configuration, clock: clock)
            let replaced = file.withLock { file in
                let old = file
                file = reopened
                return old
            }
            try? replaced.database.close()
            return try await apply(batch, in: reopened)
        }
    }

    /// The path no longer names the file a transaction ran on.
    private struct FileReplaced: Error {}

    private func apply(_ batch: [Heartbeat], in file: OpenFile) async throws -> [Result<HeartbeatReply, any Error>] {
        let (clock, path) = (self.clock, self.path)
        transactionCount.add(1, ordering: .relaxed)
        let (results, changed) = try await file.database.writeWithoutTransaction { db in
            var results: [Result<HeartbeatReply, any Error>] = []
            var changed: [GroupName] = []
            try db.inTransaction(.immediate) {
                results = []
                changed = []
                // Under the write lock, so no other process can replace its rows from here to the commit.
                guard (try? Self.fileIdentity(path)) == file.identity else { throw FileReplaced() }
                let moment = try Self.moment(db, path: path, clock: clock)
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
                return .commit
            }
            return (results, changed)
        }
        announcements.announce(changed)
        return results
    }

    /// The store's clock and history for one transaction, after checking that this host's boot still owns the
    /// file (another host's process may have adopted it since this handle opened it).
    private static func moment(_ db: Database, path: String, clock: HostClock) throws -> StoreMoment {
        let meta = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT key, value FROM understudy_meta WHERE key IN ('boot_id', 'record_complete_since')")
        )
        var values: [String: String] = [:]
        for row in meta {
            if let key: String = column(row, 0), let value: String = column(row, 1) { values[key] = value }
        }
        guard values["boot_id"] == clock.bootID else {
            throw StoreError(
                .foreignClock,
                "the store \(path) is now written under another boot clock (boot \(values["boot_id"] ?? "none")): "
                    + "SQLite stores serve one host; use PostgreSQL for members on several hosts"
            )
        }
        let since = values["record_complete_since"].flatMap(Int64.init).map(Instant.init(nanoseconds:))
        return StoreMoment(
            now: clock.now(),
            tokenFloor: FencingToken(rawValue: min(clock.wallMicroseconds(), FencingToken.maximum.rawValue)),
            recordCompleteSince: since
        )
    }

    public func groupNames(after cursor: GroupName?, limit: Int) async throws -> [GroupName] {
        try await read(orIfEmpty: []) { db, _ in
            try String.fetchAll(
                db, sql: "SELECT name FROM groups WHERE name > ? ORDER BY name LIMIT ?",
                arguments: [cursor?.rawValue ?? "", max(0, limit)]
            ).compactMap { try? GroupName($0) }
        }
    }

    public func group(named name: GroupName) async throws -> GroupView? {
        try await read(orIfEmpty: nil) { db, now in try Self.loadLedger(db, group: name)?.view(now: now) }
    }

    /// Reads at the store's present instant; for rows of an earlier boot (which only a read-only handle sees
    /// before a member adopts the file), at an instant after every one of them expired.
    private func read<T: Sendable>(orIfEmpty empty: T, _ body: @escaping @Sendable (Database, Instant) throws -> T) async throws -> T {
        let (file, clock, path) = (file.withLock { $0 }, self.clock, self.path)
        return try await file.database.read { db in
            guard try db.tableExists("groups") else { return empty }
            let predates = try Self.checkBoot(db, path: path, clock: clock) == .predatesThisBoot
            return try body(db, predates ? Instant(nanoseconds: .max) : clock.now())
        }
    }

    public func close() async throws {
        announcements.stop()
        try file.withLock { $0 }.database.close()
    }

    // MARK: Schema

    /// Creates the schema in an empty file, or checks the one there; returns whether it created it.
    private static func prepareSchema(_ db: Database, path: String) throws -> Bool {
        if try db.tableExists("understudy_meta") {
            try checkSchema(db, path: path)
            return false
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
            sql: "INSERT INTO understudy_meta (key, value) VALUES ('application', ?), ('schema_version', ?)",
            arguments: [applicationTag, String(schemaVersion)]
        )
        return true
    }

    private static func checkSchema(_ db: Database, path: String) throws {
        guard try db.tableExists("understudy_meta") else {
            throw StoreError(.foreign, "\(path) is not an Understudy database: choose another store path")
        }
        let version = try meta(db, "schema_version")
        guard try meta(db, "application") == applicationTag else {
            throw StoreError(.foreign, "\(path) is not an Understudy database: choose another store path")
        }
        guard let version = version.flatMap(Int.init) else {
            throw StoreError(.corrupt, "\(path) has no readable schema version: restore it or choose another store path")
        }
        guard version <= schemaVersion else {
            throw StoreError(
                .newerSchema,
                "\(path) has schema version \(version), newer than this Understudy supports (\(schemaVersion)): upgrade Understudy"
            )
        }
    }

    private enum BootCheck {
        /// No boot recorded: a new file.
        case unrecorded
        case sameBoot
        case predatesThisBoot
    }

    /// Whether the rows were written under this boot's clock, or provably before this boot began (the newest
    /// heartbeat, on the wall clock of the boot that wrote it, is older than this boot's start). Anything else is
    /// another clock writing now: another host sharing the file, or a boot clock this host does not run.
    private static func checkBoot(_ db: Database, path: String, clock: HostClock) throws -> BootCheck {
        guard let stored = try meta(db, "boot_id"), !stored.isEmpty else { return .unrecorded }
        guard stored != clock.bootID else { return .sameBoot }
        // Where the boot that wrote the rows began, on the wall clock (0 in files of earlier builds: those rows
        // are taken as written just after that boot began, as earlier builds did).
        let origin = try meta(db, "boot_started_us").flatMap(Int64.init) ?? 0
        let newest = try Int64.fetchOne(db, sql: "SELECT max(heartbeat_at) FROM members") ?? nil
        let thisBootStarted = Int64(clock.wallMicroseconds()) - clock.now().nanoseconds / 1_000
        guard let newest, origin.addingReportingOverflow(newest / 1_000).partialValue >= thisBootStarted else {
            return .predatesThisBoot
        }
        let host = try meta(db, "host") ?? "unknown"
        let writer = host == clock.host ? "another boot clock of this host (boot \(stored))" : "host \(host) (boot \(stored))"
        throw StoreError(
            .foreignClock,
            "the store \(path) is being written by \(writer) since this host booted: SQLite stores serve one host; "
                + "use PostgreSQL for members on several hosts"
        )
    }

    /// After a reboot the boot-time clock restarts from zero, so instants written before it mean nothing: every
    /// membership and lease of the earlier boot is expired, and this boot's clock is recorded. Token counters
    /// are kept.
    private static func expireRowsOfEarlierBoot(_ db: Database, clock: HostClock) throws {
        try db.execute(sql: "DELETE FROM members")
        try db.execute(sql: "UPDATE leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL")
        try db.execute(sql: "DELETE FROM understudy_meta WHERE key = 'record_complete_since'")
        try recordBoot(db, clock: clock)
    }

    /// Records which boot's clock the rows are written on, and when that boot began on the wall clock.
    private static func recordBoot(_ db: Database, clock: HostClock) throws {
        let started = Int64(clock.wallMicroseconds()) - clock.now().nanoseconds / 1_000
        for (key, value) in [("boot_id", clock.bootID), ("boot_started_us", String(started)), ("host", clock.host)] {
            try db.execute(sql: "INSERT OR REPLACE INTO understudy_meta (key, value) VALUES (?, ?)", arguments: [key, value])
        }
    }

    /// A file other than the one the store recorded (new, or restored, copied or moved in from elsewhere) may lack
    /// leases that still run: its record counts as complete only from now on.
    private static func noteFileIdentity(_ db: Database, path: String, created: Bool, now: Instant) throws {
        let identity = try fileIdentity(path)
        let recorded = try meta(db, "file_identity")
        guard created || recorded != identity else { return }
        try db.execute(
            sql: "INSERT OR REPLACE INTO understudy_meta (key, value) VALUES ('file_identity', ?), ('record_complete_since', ?)",
            arguments: [identity, String(now.nanoseconds)]
        )
    }

    /// The device and inode the path names now.
    private static func fileIdentity(_ path: String) throws -> String {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw StoreError(.unavailable, "the store \(path) is gone: \(String(cString: strerror(errno)))")
        }
        return "\(info.st_dev):\(info.st_ino)"
    }

    private static func meta(_ db: Database, _ key: String) throws -> String? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT value FROM understudy_meta WHERE key = ?"), arguments: [key])
            .flatMap { column($0, 0) }
    }

    // MARK: Rows

    private static func loadLedger(_ db: Database, group: GroupName) throws -> GroupLedger? {
        let groupRow = try db.cachedStatement(sql: "SELECT active_goal, last_token, next_join FROM groups WHERE name = ?")
        guard let row = try Row.fetchOne(groupRow, arguments: [group.rawValue]) else { return nil }
        func corrupt(_ what: String) -> StoreError {
            StoreError(.corrupt, "group \"\(group)\" in the store has a corrupt row: \(what)")
        }
        guard let goal: Int = column(row, 0), (1...GroupConfiguration.maximumActiveGoal).contains(goal),
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
                  !leases.contains(where: { $0.holder?.member == member })
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
