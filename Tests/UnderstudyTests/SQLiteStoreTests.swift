import Foundation
import Testing
import Understudy
import UnderstudyCore
import GRDB

@Suite("SQLite store", .timeLimit(.minutes(2)))
struct SQLiteStoreTests {
    let clock = ManualClock()
    let directory: TemporaryDirectory

    init() throws {
        directory = try TemporaryDirectory()
    }

    var path: String { directory.file("understudy.db") }

    @Test func reopening_keepsLeasesAndTokens() async throws {
        let first = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-1")
        _ = try await first.heartbeat(heartbeat(member("a"), .acquire))
        try await first.close()
        let reopened = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-1")
        let view = try #require(try await reopened.group(GroupName("group")))
        #expect(view.leases.map(\.holder.rawValue) == ["a"])
        #expect(view.lastToken == FencingToken(rawValue: 1))
    }

    @Test func reopening_afterReboot_expiresRowsButKeepsTokensIncreasing() async throws {
        let before = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-1")
        _ = try await before.heartbeat(heartbeat(member("a"), .acquire))
        try await before.close()
        let after = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-2")
        let view = try #require(try await after.group(GroupName("group")))
        #expect(view.members.isEmpty)
        #expect(view.leases.isEmpty)
        let reply = try await after.heartbeat(heartbeat(member("b"), .acquire))
        #expect(reply.outcome == .granted(FencingToken(rawValue: 2)))
    }

    @Test func defaultClock_isTheSharedBootClock() async throws {
        let store = try SQLiteStore(path: path)
        let reply = try await store.heartbeat(heartbeat(member("a"), activation: .seconds(60), .acquire))
        #expect(reply.outcome == .granted(FencingToken(rawValue: 1)))
        let remaining = try #require(reply.view.leases.first?.remaining)
        #expect(remaining <= .seconds(60) && remaining > .seconds(50))
    }

    @Test func opening_aFileThatIsNotSQLite_failsNamingTheFile() throws {
        try Data("hello, I am a text file and certainly not a database at all\n".utf8).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: StoreError.self) { try SQLiteStore(path: path, clock: clock.read) }
        #expect(error?.kind == .foreign)
        #expect(error?.message.contains(path) == true)
    }

    @Test func opening_anotherApplicationsDatabase_failsAsForeign() throws {
        let other = try DatabaseQueue(path: path)
        try other.write { try $0.execute(sql: "CREATE TABLE invoices (id INTEGER PRIMARY KEY)") }
        try other.close()
        let error = #expect(throws: StoreError.self) { try SQLiteStore(path: path, clock: clock.read) }
        #expect(error?.kind == .foreign)
    }

    @Test func opening_aNewerSchema_failsAskingForAnUpgrade() async throws {
        try await SQLiteStore(path: path, clock: clock.read).close()
        let raw = try DatabaseQueue(path: path)
        try await raw.write { try $0.execute(sql: "UPDATE understudy_meta SET value = '99' WHERE key = 'schema_version'") }
        try raw.close()
        let error = #expect(throws: StoreError.self) { try SQLiteStore(path: path, clock: clock.read) }
        #expect(error?.kind == .newerSchema)
        #expect(error?.message.contains("upgrade") == true)
    }

    @Test func opening_whereTheDirectoryCannotBeCreated_failsAsUnavailable() throws {
        let blocker = directory.file("not-a-directory")
        try Data().write(to: URL(fileURLWithPath: blocker))
        let error = #expect(throws: StoreError.self) {
            try SQLiteStore(path: (blocker as NSString).appendingPathComponent("db/understudy.db"), clock: clock.read)
        }
        #expect(error?.kind == .unavailable)
    }

    @Test func announcementFile_ofGarbageOrGrownLarge_isSurvived() async throws {
        let listener = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-1")
        let releases = try #require(listener.changes(of: GroupName("group")))
        // Garbage and names that are not group names are skipped; the file is emptied once it grows large.
        let garbage = String(repeating: "not a group name!\n\u{0}\u{7f}\n", count: 4_000)
        let handle = try #require(FileHandle(forWritingAtPath: path + "-changes"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(garbage.utf8))
        try handle.close()
        let holder = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-1")
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
        let store = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-1")
        _ = try #require(store.changes(of: GroupName("group")))
        let a = try member("a")
        #expect(try await store.heartbeat(heartbeat(a, .acquire)).outcome == .granted(FencingToken(rawValue: 1)))
        #expect(try await store.heartbeat(heartbeat(a, .release(FencingToken(rawValue: 1)))).outcome == .released)
        #expect(try await store.group(GroupName("group"))?.leases.isEmpty == true)
    }

    @Test func heartbeat_onACorruptRow_failsWithoutTrappingAndLeavesTheRowAlone() async throws {
        let store = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-1")
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
    ])
    func heartbeat_onAValueOfTheWrongType_failsAsCorruptWithoutTrapping(corruption: String) async throws {
        let store = try SQLiteStore(path: path, clock: clock.read, bootID: "boot-1")
        _ = try await store.heartbeat(heartbeat(member("a"), .acquire))
        let raw = try DatabaseQueue(path: path)
        try await raw.write { try $0.execute(sql: corruption) }
        let error = await #expect(throws: StoreError.self) {
            try await store.heartbeat(heartbeat(member("b"), .acquire))
        }
        #expect(error?.kind == .corrupt)
    }
}
