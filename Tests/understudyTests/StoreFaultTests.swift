import Foundation
import Testing

/// Faults of the SQLite store made as an operator would make them, with real `understudy run` processes: every
/// command holds an exclusive flock, so two commands running at once would log `OVERLAP`.
@Suite(.serialized)
struct StoreFaultTests {
    /// The store file deleted, or a backup moved over it, while members run; then a new member starts on the
    /// path. Members follow the path, the new file grants nothing for T, and no token repeats.
    @Test(arguments: ["deleted", "backupMovedOver"])
    func test_storeFileReplacedWhileMembersRun_neverTwoCommandsNorARepeatedToken(fault: String) async throws {
        let scratch = try Scratch()
        let script = try scratch.childScript()
        let store = scratch.file("store.db")
        func member(_ id: String) throws -> Launched {
            try Launched(["run", "--group", "g", "--store", store, "--id", id, "--", script], in: scratch, name: id)
        }
        let a = try member("a")
        let b = try member("b")
        defer { for member in [a, b] { member.signal(SIGTERM) } }
        func starts() -> [LogEntry] { entries(scratch.lines("log")).filter { $0.kind == "start" } }
        #expect(try await eventually { starts().count == 1 && b.stderr.contains("joined") })
        if fault == "deleted" {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: store + suffix) }
        } else {
            let backup = "import sqlite3; s = sqlite3.connect('\(store)', timeout=10); d = sqlite3.connect('\(scratch.file("backup.db"))'); s.backup(d); d.close()"
            let python = try Launched(["/usr/bin/env", "python3", "-c", backup], in: scratch, name: "backup", executable: true)
            #expect(try await python.exitStatus() == 0, "\(python.stderr)")
            #expect(rename(scratch.file("backup.db"), store) == 0)
        }
        let c = try member("c")
        defer { c.signal(SIGTERM) }
        let first = try #require(starts().first)
        if fault == "deleted" {
            // The active's lease went with the file: it stops, and one member is granted the slot T later.
            #expect(try await eventually { starts().count >= 2 }, "\(a.stderr)\n\(b.stderr)\n\(c.stderr)")
            #expect(try await eventually { !isAlive(first.pid) })
        }
        // Either way all three meet in the file the path names, with one active.
        #expect(try await eventually {
            let status = try Launched(["status", "--store", store, "--json"], in: scratch, name: "poll")
            while status.process.isRunning { usleep(10_000) }
            return status.process.terminationStatus == 0 && ["\"a\"", "\"b\"", "\"c\""].allSatisfy(status.stdout.contains)
        }, "\(a.stderr)\n\(b.stderr)\n\(c.stderr)")
        let log = scratch.lines("log")
        #expect(!log.contains { $0.hasPrefix("OVERLAP") }, "two commands ran at once: \(log)")
        let tokens = starts().map(\.token)
        #expect(zip(tokens, tokens.dropFirst()).allSatisfy { $0 < $1 }, "tokens not strictly increasing: \(tokens)")
    }

    /// A writer whose boot id differs (another host sharing the file, here a bind-mounted boot id) neither wipes
    /// the live leases nor joins: it is refused, naming the problem; a reader with that boot id writes nothing.
    /// An unreadable boot id is an error, not a value.
    @Test func test_anotherBootID_isRefused_andTheActiveKeepsItsLease() async throws {
        let scratch = try Scratch()
        let script = try scratch.childScript()
        let store = scratch.file("store.db")
        let a = try Launched(["run", "--group", "g", "--store", store, "--id", "a", "--", script], in: scratch, name: "a")
        defer { a.signal(SIGTERM) }
        #expect(try await eventually { entries(scratch.lines("log")).contains { $0.kind == "start" } })
        try "another-boot\n".write(toFile: scratch.file("boot_id"), atomically: true, encoding: .utf8)
        func withBootID(_ file: String, _ arguments: [String], name: String) async throws -> (status: Int32?, stderr: String) {
            let command = "mount --bind \(file) /proc/sys/kernel/random/boot_id && exec \"$0\" \"$@\""
            let launched = try Launched(
                ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", command, understudyPath] + arguments,
                in: scratch, name: name, executable: true
            )
            return (try await launched.exitStatus(), launched.stderr)
        }
        let writer = try await withBootID(scratch.file("boot_id"), ["run", "--group", "g", "--store", store, "--id", "b", "--", script], name: "b")
        #expect(writer.status == 68, "\(writer.stderr)")
        #expect(writer.stderr.contains("SQLite stores serve one host; use PostgreSQL"), "\(writer.stderr)")
        let reader = try await withBootID(scratch.file("boot_id"), ["status", "--store", store], name: "reader")
        #expect(reader.status == 2 && reader.stderr.contains("serve one host"), "\(reader.stderr)")
        let hidden = try await withBootID("/dev/null", ["run", "--group", "g", "--store", store, "--id", "c", "--", script], name: "c")
        #expect(hidden.status == 68 && hidden.stderr.contains("cannot read the boot id"), "\(hidden.stderr)")
        let status = try await understudy(["status", "--store", store, "--json"], in: scratch)
        #expect(status.status == 0, "the active lost its lease: \(status.stdout)")
        #expect(entries(scratch.lines("log")).filter { $0.kind == "start" }.count == 1)
        #expect(a.process.isRunning)
    }
}
