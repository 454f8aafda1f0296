import Foundation
import GRDB
import Testing
import Understudy
import UnderstudyCore
import UnderstudySQLite
import UnderstudySimulator
import UnderstudyStore
import UnderstudyStoreConformance

@Suite("SQLite store", .timeLimit(.minutes(2)))
struct SQLiteStoreTests {
    let clock = ManualClock()
    let directory: TemporaryDirectory

    init() throws {
        directory = try TemporaryDirectory()
    }

    var path: String { directory.file("understudy.db") }

    /// A store on a new file whose first T has passed, so it grants at once.
    func newStore(boot: String = "boot-1") throws -> SQLiteStore {
        let store = try SQLiteStore(path: path, clock: clock.host(boot: boot))
        clock.advance(by: .seconds(600))
        return store
    }

    @Test func reopening_keepsLeasesAndTokens() async throws {
        let first = try newStore()
        _ = try await first.heartbeat(heartbeat(member("a"), .acquire))
        try await first.close()
        let reopened = try SQLiteStore(path: path, clock: clock.host())
        let view = try #require(try await reopened.group(named: GroupName("group")))
        #expect(view.leases.map(\.holder.rawValue) == ["a"])
        #expect(view.lastToken == FencingToken(rawValue: 1))
    }

    @Test func reopening_afterReboot_expiresRowsButKeepsTokensIncreasing() async throws {
        let before = try newStore()
        _ = try await before.heartbeat(heartbeat(member("a"), .acquire))
        try await before.close()
        // The next boot began after the last row was written: its clock restarted near zero.
        let after = try SQLiteStore(path: path, clock: Self.rebooted)
        let view = try #require(try await after.group(named: GroupName("group")))
        #expect(view.members.isEmpty)
        #expect(view.leases.isEmpty)
        let reply = try await after.heartbeat(heartbeat(member("b"), .acquire))
        #expect(reply.outcome == .granted(FencingToken(rawValue: 3_600_000_000_000)))  // the new boot's wall clock
    }

    /// A boot that began an hour (of wall clock) after the test clock's, whose clock reads 5 s.
    static let rebooted = HostClock(
        bootID: "boot-2", host: "test-host", now: { Instant(nanoseconds: 5_000_000_000) }, wallMicroseconds: { 3_600_000_000_000 }
    )

    /// Another boot id alone is no evidence of a reboot: rows written since this boot began come from another
    /// host (a network file system) or another boot clock, and neither a writer nor a reader touches them.
    @Test(arguments: [false, true])
    func opening_whereAnotherBootClockWroteSinceThisBootBegan_isRefusedAndWritesNothing(readOnly: Bool) async throws {
        let writer = try newStore()
        _ = try await writer.heartbeat(heartbeat(member("a"), .acquire))
        // Booted long before the rows were written (its clock reads 20 minutes).
        let elsewhere = HostClock(
            bootID: "boot-2", host: "other-host", now: { Instant(nanoseconds: 1_200_000_000_000) }, wallMicroseconds: { 0 }
        )
        let error = #expect(throws: StoreError.self) { try SQLiteStore(path: path, clock: elsewhere, readOnly: readOnly) }
        #expect(error?.kind == .foreignClock)
        #expect(error?.message.contains("SQLite stores serve one host; use PostgreSQL") == true)
        #expect(error?.message.contains("host test-host") == true)  // the writer's host
        let renewal = try await writer.heartbeat(heartbeat(member("a"), .renew(FencingToken(rawValue: 1))))
        #expect(renewal.outcome == .renewed)
    }

    @Test func readingAfterReboot_showsEveryLeaseExpired_andWritesNothing() async throws {
        let before = try newStore()
        _ = try await before.heartbeat(heartbeat(member("a"), .acquire))
        try await before.close()
        let reader = try SQLiteStore(path: path, clock: Self.rebooted, readOnly: true)
        let view = try #require(try await reader.group(named: GroupName("group")))
        #expect(view.leases.isEmpty && view.members.isEmpty)
        try await reader.close()
        let raw = try DatabaseQueue(path: path)
        #expect(try await raw.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM members") } == 1)
        #expect(try await raw.read { try String.fetchOne($0, sql: "SELECT value FROM understudy_meta WHERE key = 'boot_id'") } == "boot-1")
    }

    /// The file deleted, or a backup moved over it, while a member holds a lease: the store follows the path, the
    /// holder's renewal fails there, nobody is granted the slot for T, and no token repeats.
    @Test(arguments: ["deleted", "backupMovedOver"])
    func fileReplacedUnderARunningMember_holdsGrantsForT_andNeverRepeatsAToken(fault: String) async throws {
        let clock = self.clock
        let host = clock.host(wall: { UInt64(clock.now.nanoseconds / 1_000) })  // a wall clock that keeps pace
        let holder = try SQLiteStore(path: path, clock: host)
        clock.advance(by: .seconds(600))
        let a = try member("a")
        if fault == "backupMovedOver" {
            guard case .granted(let old) = try await holder.heartbeat(heartbeat(member("old"), .acquire)).outcome else {
                Issue.record("old was not granted the slot")
                return
            }
            _ = try await holder.heartbeat(heartbeat(member("old"), .leave(releasing: old)))
            let raw = try DatabaseQueue(path: path)
            try raw.backup(to: DatabaseQueue(path: directory.file("backup.db")))
            try raw.close()
        }
        guard case .granted(let token) = try await holder.heartbeat(heartbeat(a, .acquire)).outcome else {
            Issue.record("a was not granted the slot")
            return
        }
        if fault == "deleted" {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        } else {
            #expect(rename(directory.file("backup.db"), path) == 0)
        }
        let newcomer = try SQLiteStore(path: path, clock: host)
        let b = try member("b")
        #expect(try await newcomer.heartbeat(heartbeat(b, .acquire)).outcome == .notGranted)
        // The holder follows the path. Its lease is gone with a deleted file; a backup moved over the file may
        // get it back from the old write-ahead log, which SQLite applies to whatever file the path names.
        let renewal = try await holder.heartbeat(heartbeat(a, .renew(token))).outcome
        #expect(renewal == .lost || fault == "backupMovedOver")
        clock.advance(by: .seconds(2))
        #expect(try await newcomer.heartbeat(heartbeat(b, .acquire)).outcome == .notGranted)
        clock.advance(by: .seconds(1))  // T = 3 s after the newcomer found the file new
        guard case .granted(let next) = try await newcomer.heartbeat(heartbeat(b, .acquire)).outcome else {
            Issue.record("b was not granted the slot T after the file changed")
            return
        }
        #expect(next > token)
    }

    @Test func defaultClock_isTheSharedBootClock_andTokensStartFromTheWallClock() async throws {
        let store = try SQLiteStore(path: path)
        let a = try member("a")
        // A new file grants nothing for T: ask with a short T until granted, then look at a long lease.
        let start = ContinuousClock.now
        var reply = try await store.heartbeat(heartbeat(a, activation: .milliseconds(200), .acquire))
        while reply.outcome == .notGranted, ContinuousClock.now < start + .seconds(20) {
            try await Task.sleep(for: .milliseconds(20))
            reply = try await store.heartbeat(heartbeat(a, activation: .milliseconds(200), .acquire))
        }
        guard case .granted(let token) = reply.outcome else {
            Issue.record("not granted: \(reply.outcome)")
            return
        }
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(token.rawValue >= MonotonicClock.wallMicroseconds() - 60_000_000)
        reply = try await store.heartbeat(heartbeat(a, activation: .seconds(60), .renew(token)))
        let remaining = try #require(reply.view.leases.first?.remaining)
        #expect(remaining <= .seconds(60) && remaining > .seconds(50))
    }

    @Test func defaultPath_isOneForEveryUser() {
        #expect(SQLiteStore.defaultPath == "/var/lib/understudy/understudy.db")
    }

    @Test func opening_aFileThatIsNotSQLite_failsNamingTheFile() throws {
        try Data("hello, I am a text file and certainly not a database at all\n".utf8).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: StoreError.self) { try SQLiteStore(path: path, clock: clock.host()) }
        #expect(error?.kind == .foreign)
        #expect(error?.message.contains(path) == true)
    }

    @Test func opening_anotherApplicationsDatabase_failsAsForeign() throws {
        let other = try DatabaseQueue(path: path)
        try other.write { try $0.execute(sql: "CREATE TABLE invoices (id INTEGER PRIMARY KEY)") }
        try other.close()
        let error = #expect(throws: StoreError.self) { try SQLiteStore(path: path, clock: clock.host()) }
        #expect(error?.kind == .foreign)
    }

    @Test func opening_aNewerSchema_failsAskingForAnUpgrade() async throws {
        try await SQLiteStore(path: path, clock: clock.host()).close()
        let raw = try DatabaseQueue(path: path)
        try await raw.write { try $0.execute(sql: "UPDATE understudy_meta SET value = '99' WHERE key = 'schema_version'") }
        try raw.close()
        let error = #expect(throws: StoreError.self) { try SQLiteStore(path: path, clock: clock.host()) }
        #expect(error?.kind == .newerSchema)
        #expect(error?.message.contains("upgrade") == true)
    }

    @Test func opening_whereTheDirectoryCannotBeCreated_failsAsUnavailable() throws {
        let blocker = directory.file("not-a-directory")
        try Data().write(to: URL(fileURLWithPath: blocker))
        let error = #expect(throws: StoreError.self) {
            try SQLiteStore(path: (blocker as NSString).appendingPathComponent("db/understudy.db"), clock: clock.host())
        }
        #expect(error?.kind == .unavailable)
    }

    @Test func announcementFile_ofGarbageOrGrownLarge_isSurvived() async throws {
        let listener = try newStore()
        let releases = try listener.changes(of: GroupName("group"))
        // Garbage and names that are not group names are skipped; the file is emptied once it grows large.
        let garbage = String(repeating: "not a group name!\n\u{0}\u{7f}\n", count: 4_000)
        let handle = try #require(FileHandle(forWritingAtPath: path + "-changes"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(garbage.utf8))
        try handle.close()
        let holder = try SQLiteStore(path: path, clock: clock.host())
        let a = try member("a")
        _ = try await holder.heartbeat(heartbeat(a, .acquire))
        _ = try await holder.heartbeat(heartbeat(a, .release(FencingToken(rawValue: 1))))
        var iterator = releases.makeAsyncIterator()
        #expect(await iterator.next() != nil)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path + "-changes")[.size] as? Int)
        #expect(size < 1_000)
    }

    @Test func announcementFile_thatCannotBeWritten_leavesHeartbeatsWorking() async throws {
        try FileManager.default.createDirectory(atPath: path + "-changes", withIntermediateDirectories: true)
        let store = try newStore()
        _ = try store.changes(of: GroupName("group"))
        let a = try member("a")
        #expect(try await store.heartbeat(heartbeat(a, .acquire)).outcome == .granted(FencingToken(rawValue: 1)))
        #expect(try await store.heartbeat(heartbeat(a, .release(FencingToken(rawValue: 1)))).outcome == .released)
        #expect(try await store.group(named: GroupName("group"))?.leases.isEmpty == true)
    }

    @Test func heartbeat_onACorruptRow_failsWithoutTrappingAndLeavesTheRowAlone() async throws {
        let store = try newStore()
        _ = try await store.heartbeat(heartbeat(member("a"), .acquire))
        let raw = try DatabaseQueue(path: path)
        try await raw.write { try $0.execute(sql: "UPDATE members SET phase = 'dancing' WHERE member_id = 'a'") }
        let error = await #expect(throws: StoreError.self) {
            try await store.heartbeat(heartbeat(member("b"), .acquire))
        }
        #expect(error?.kind == .corrupt)
        #expect(error?.message.contains("dancing") == true)
        let phase = try await raw.read { try String.fetchOne($0, sql: "SELECT phase FROM members WHERE member_id = 'a'") }
        #expect(phase == "dancing")
    }

    @Test(arguments: [
        "UPDATE members SET weight = 'heavy' WHERE member_id = 'a'",
        "UPDATE leases SET token = x'00ff' WHERE slot = 0",
        "UPDATE groups SET last_token = 'many'",
        "UPDATE groups SET last_token = 9223372036854775807",
        "UPDATE groups SET next_join = 9223372036854775807",
        "UPDATE members SET join_seq = 0",
        "UPDATE members SET expires_at = heartbeat_at - 1",
        "INSERT INTO leases (group_name, slot, holder, incarnation, token, expires_at) SELECT group_name, 1, holder, incarnation, token, expires_at FROM leases",
    ])
    func heartbeat_onAValueOfTheWrongType_failsAsCorruptWithoutTrapping(corruption: String) async throws {
        let store = try newStore()
        _ = try await store.heartbeat(heartbeat(member("a"), .acquire))
        let raw = try DatabaseQueue(path: path)
        try await raw.write { try $0.execute(sql: corruption) }
        let error = await #expect(throws: StoreError.self) {
            try await store.heartbeat(heartbeat(member("b"), .acquire))
        }
        #expect(error?.kind == .corrupt)
    }

    /// Random values of every type in every column of every row: a heartbeat and a read either succeed or fail
    /// as corrupt, and never trap.
    @Test func rowDecoder_fuzzedRows_neverTrap() async throws {
        var random = SimulationRandom(seed: 0x5eed)
        let columns = [
            ("groups", ["active_goal", "last_token", "next_join"]),
            ("members", ["member_id", "incarnation", "weight", "host", "pid", "join_seq", "phase", "heartbeat_at", "expires_at"]),
            ("leases", ["slot", "holder", "incarnation", "token", "expires_at"]),
        ]
        let values = [
            "NULL", "0", "-1", "1", "2", "9223372036854775807", "-9223372036854775808", "4096", "1e300", "'a'", "''",
            "x'00ff'", "'active'", "'standby'", "'a-1'", "2147483648", "-2147483649",
        ]
        for round in 0..<100 {
            let file = directory.file("fuzz-\(round).db")
            let store = try SQLiteStore(path: file, clock: clock.host())
            clock.advance(by: .seconds(600))
            let a = try member("a")
            _ = try await store.heartbeat(heartbeat(a, goal: 2, .acquire))
            let raw = try DatabaseQueue(path: file)
            for _ in 0..<Int(random.next() % 3 + 1) {
                let (table, names) = columns[Int(random.next() % UInt64(columns.count))]
                let column = names[Int(random.next() % UInt64(names.count))]
                let value = values[Int(random.next() % UInt64(values.count))]
                try? await raw.write { try $0.execute(sql: "UPDATE \(table) SET \(column) = \(value)") }
            }
            try raw.close()
            for intent in [Heartbeat.Intent.acquire, .renew(FencingToken(rawValue: 1)), .leave(releasing: FencingToken(rawValue: 1))] {
                do {
                    _ = try await store.heartbeat(heartbeat(member(["a", "b"][Int(random.next() % 2)]), goal: 2, intent))
                } catch let error as StoreError {
                    #expect(error.kind == .corrupt, "round \(round): \(error)")
                } catch is HeartbeatRejection {}
            }
            do { _ = try await store.groups() } catch let error as StoreError { #expect(error.kind == .corrupt) }
            try await store.close()
        }
    }
}
