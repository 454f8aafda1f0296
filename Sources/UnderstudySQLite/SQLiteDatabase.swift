import Foundation
import GRDB
import Synchronization
import UnderstudyCore
import UnderstudyStore

/// The database file of a ``SQLiteStore``, opened by path: every transaction of the store runs through it, and
/// nothing else of the store, so what runs them (the store's heartbeat batcher) can hold it without holding the store.
///
/// - Opening it creates the file and its directory if needed, then creates or checks the schema, and adopts a file
///   written before this boot by expiring its rows; a file written under another host's or boot's clock since this
///   boot began is refused.
/// - ``write(_:)`` runs one `BEGIN IMMEDIATE` transaction at the store's present ``StoreMoment``, read after the
///   write lock is taken. When the path names another file than the one open (deleted, replaced, restored), it
///   opens the file the path names now and runs the transaction there.
/// - ``read(orIfEmpty:_:)`` runs one read transaction at the store's present instant.
final class SQLiteDatabase: Sendable {
    /// The schema version this build writes and reads.
    ///
    /// 1: groups, members and leases. 2: and the work queues' jobs (``SQLiteQueueSchema``). 3: and the groups'
    /// checkpoints. 4: and partitioned groups (`groups.partitioned`).
    static let schemaVersion = 4
    static let applicationTag = "understudy"

    /// The path of the database file.
    let path: String
    /// Whether this handle only reads: it never creates, migrates or expires anything, and ``write(_:)`` fails.
    let isReadOnly: Bool
    private let clock: HostClock
    private let configuration: Configuration
    private let file: Mutex<OpenFile>
    private let transactionCount = Atomic<Int>(0)

    /// The database file this handle has open.
    private struct OpenFile: @unchecked Sendable {
        var database: DatabaseQueue
        /// Device and inode of the file when it was opened.
        var identity: String
    }

    /// How many write transactions have been started so far (a transaction run again on a replaced file counts
    /// twice).
    var transactions: Int { transactionCount.load(ordering: .relaxed) }

    /// Opens the database at `path`, creating it and its directory if needed (unless `readOnly`).
    ///
    /// - Parameters:
    ///   - clock: the store's clock. Every process sharing the file MUST use the same clock.
    ///   - readOnly: open for reading only: nothing is ever written.
    /// - Throws: ``StoreError`` when the directory cannot be created, the file is not an Understudy database, was
    ///   written by a newer Understudy, or is being written under another host's clock.
    init(path: String, clock: HostClock, readOnly: Bool) throws {
        self.path = path
        self.clock = clock
        self.isReadOnly = readOnly
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
        file = Mutex(try Self.open(path: path, configuration: configuration, clock: clock))
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction, and commits unless `body` throws (then nothing it wrote
    /// is kept, and the error is thrown here).
    ///
    /// `body` gets the store's present moment, read after the write lock is taken, so no other process writes
    /// between that instant and the commit. When the path names another file than the one open, `body` has not
    /// run: the file the path names now is opened and the transaction runs there, so `body` must not count on
    /// running once only.
    ///
    /// - Throws: ``StoreError`` when the handle is read-only, the file is now written under another boot clock
    ///   or cannot be reopened; SQLite's own errors; and whatever `body` throws.
    func write<Value: Sendable>(_ body: @escaping @Sendable (Database, StoreMoment) throws -> Value) async throws -> Value {
        guard !isReadOnly else { throw StoreError(.unavailable, "the store \(path) was opened for reading only") }
        do {
            return try await write(body, in: file.withLock { $0 })
        } catch is FileReplaced {
            let reopened = try Self.open(path: path, configuration: configuration, clock: clock)
            let replaced = file.withLock { file in
                let old = file
                file = reopened
                return old
            }
            try? replaced.database.close()
            return try await write(body, in: reopened)
        }
    }

    /// The path no longer names the file a transaction ran on.
    private struct FileReplaced: Error {}

    private func write<Value: Sendable>(
        _ body: @escaping @Sendable (Database, StoreMoment) throws -> Value,
        in file: OpenFile
    ) async throws -> Value {
        let (clock, path) = (self.clock, self.path)
        transactionCount.add(1, ordering: .relaxed)
        return try await file.database.writeWithoutTransaction { db in
            var value: Value?
            try db.inTransaction(.immediate) {
                // Under the write lock, so no other process can replace its rows from here to the commit.
                guard (try? Self.fileIdentity(path)) == file.identity else { throw FileReplaced() }
                value = try body(db, try Self.moment(db, path: path, clock: clock))
                return .commit
            }
            guard let value else { preconditionFailure("a committed transaction has run its body") }
            return value
        }
    }

    /// Runs `body` in one read transaction, at the store's present instant; for rows of an earlier boot (which
    /// only a read-only handle sees before a member adopts the file), at an instant after every one of them
    /// expired. Returns `empty` while the file has no tables yet (its first member is creating it).
    /// `table` is the table `body` reads: a file of an earlier schema that no writer has migrated yet may lack it.
    func read<Value: Sendable>(
        orIfEmpty empty: Value,
        table: String = "groups",
        _ body: @escaping @Sendable (Database, Instant) throws -> Value
    ) async throws -> Value {
        let (file, clock, path) = (file.withLock { $0 }, self.clock, self.path)
        return try await file.database.read { db in
            guard try db.tableExists(table) else { return empty }
            let predates = try Self.checkBoot(db, path: path, clock: clock) == .predatesThisBoot
            return try body(db, predates ? Instant(nanoseconds: .max) : clock.now())
        }
    }

    /// Closes the file; every later transaction fails.
    func close() throws {
        try file.withLock { $0 }.database.close()
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

    // MARK: Schema

    /// Creates the schema in an empty file, or checks the one there and migrates it to this version; returns
    /// whether it created it.
    private static func prepareSchema(_ db: Database, path: String) throws -> Bool {
        if try db.tableExists("understudy_meta") {
            try migrate(db, from: try checkSchema(db, path: path))
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
                next_join INTEGER NOT NULL,
                partitioned INTEGER NOT NULL DEFAULT 0
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
        try SQLiteQueueSchema.create(db)
        try db.execute(sql: SQLiteStore.checkpointTable)
        try db.execute(
            sql: "INSERT INTO understudy_meta (key, value) VALUES ('application', ?), ('schema_version', ?)",
            arguments: [applicationTag, String(schemaVersion)]
        )
        return true
    }

    /// Brings a file of schema `version` to this build's, keeping what it holds: each version adds tables or columns.
    private static func migrate(_ db: Database, from version: Int) throws {
        guard version < schemaVersion else { return }
        if version < 2 { try SQLiteQueueSchema.create(db) }
        if version < 3 { try db.execute(sql: SQLiteStore.checkpointTable) }
        if version < 4 { try db.execute(sql: "ALTER TABLE groups ADD COLUMN partitioned INTEGER NOT NULL DEFAULT 0") }
        try db.execute(
            sql: "UPDATE understudy_meta SET value = ? WHERE key = 'schema_version'",
            arguments: [String(schemaVersion)]
        )
    }

    /// Checks that the file is an Understudy database this build can read; returns its schema version.
    @discardableResult
    private static func checkSchema(_ db: Database, path: String) throws -> Int {
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
        return version
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
    /// are kept. The jobs' claims and instants of the earlier boot are rebased to now
    /// (``SQLiteQueueSchema/expireRowsOfEarlierBoot(_:now:)``).
    private static func expireRowsOfEarlierBoot(_ db: Database, clock: HostClock) throws {
        try db.execute(sql: "DELETE FROM members")
        try db.execute(sql: "UPDATE leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL")
        try SQLiteQueueSchema.expireRowsOfEarlierBoot(db, now: clock.now())
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

    /// The value at `index`, or nil when it is NULL or of another type (a corrupt row must not trap, as GRDB's
    /// typed subscripts do).
    static func column<Value: DatabaseValueConvertible>(_ row: Row, _ index: Int) -> Value? {
        Value.fromDatabaseValue(row[index] as DatabaseValue)
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
