import Foundation
import Synchronization
import Testing

/// The `understudy` executable built next to this test bundle, or `UNDERSTUDY_TEST_BINARY` (to run the tests
/// against another build, e.g. to show that a test fails without its fix).
let understudyPath: String = {
    if let binary = ProcessInfo.processInfo.environment["UNDERSTUDY_TEST_BINARY"], !binary.isEmpty { return binary }
    let candidates = [
        (CommandLine.arguments[0] as NSString).deletingLastPathComponent,
        Bundle.main.bundleURL.deletingLastPathComponent().path,
        ((CommandLine.arguments[0] as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent,
    ]
    for directory in candidates {
        let path = (directory as NSString).appendingPathComponent("understudy")
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return FileManager.default.currentDirectoryPath + "/.build/debug/understudy"
}()

/// A fresh temporary directory, removed when the value is released.
final class Scratch: Sendable {
    let path: String

    init() throws {
        let template = (NSTemporaryDirectory() as NSString).appendingPathComponent("understudy-cli-XXXXXX")
        var bytes = Array(template.utf8CString)
        let result = try #require(mkdtemp(&bytes))
        path = String(cString: result)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func read(_ name: String) -> String { (try? String(contentsOfFile: file(name), encoding: .utf8)) ?? "" }

    func lines(_ name: String) -> [String] { read(name).split(separator: "\n").map(String.init) }

    /// Creates the SQLite store at `path` and marks its record complete since long ago, for tests whose lease is
    /// longer than they can wait: a new store grants nothing for T (it may replace one whose leases still run).
    func seasonedSQLiteStore(_ name: String) async throws -> String {
        let path = file(name)
        let created = try await understudy(
            ["run", "--group", "seed", "--store", path, "--heartbeat", "100ms", "--activation", "500ms", "--once", "--", "true"], in: self
        )
        #expect(created.status == 0, "\(created.stderr)")
        let season = "import sqlite3; c = sqlite3.connect('\(path)', timeout=10); c.execute(\"UPDATE understudy_meta SET value = '0' WHERE key = 'record_complete_since'\"); c.commit()"
        let python = try Launched(["/usr/bin/env", "python3", "-c", season], in: self, name: "season", executable: true)
        #expect(try await python.exitStatus() == 0, "\(python.stderr)")
        return path
    }

    /// Creates the PostgreSQL schema of `url` and marks its record complete since long ago (see
    /// ``seasonedSQLiteStore(_:)``), through `psql`.
    func seasonPostgresStore(_ url: String) async throws {
        let created = try await understudy(
            ["run", "--group", "seed", "--store", url, "--heartbeat", "100ms", "--activation", "500ms", "--once", "--", "true"], in: self
        )
        #expect(created.status == 0, "\(created.stderr)")
        guard let components = URLComponents(string: url),
              let schema = components.queryItems?.first(where: { $0.name == "schema" })?.value
        else { throw CocoaError(.fileReadUnknown) }
        var plain = components
        plain.queryItems = components.queryItems?.filter { $0.name != "schema" }
        let psql = ["/usr/bin/env", "psql", "-q", plain.string ?? url, "-c", "UPDATE \(schema).understudy_meta SET value = '0' WHERE key = 'complete_wall'"]
        let season = try Launched(psql, in: self, name: "season-pg", executable: true)
        #expect(try await season.exitStatus() == 0, "\(season.stderr)")
    }

    /// The lines of `name` with each fencing token (the second field) replaced by its rank among the tokens in
    /// the file: 1 for the first command's, 2 for the next. Tokens grow but are not consecutive (a new store's
    /// first one is its wall clock in microseconds).
    func linesByTokenRank(_ name: String) -> [String] {
        let lines = lines(name).map { $0.split(separator: " ", omittingEmptySubsequences: false).map(String.init) }
        let ranks = Dictionary(
            uniqueKeysWithValues: Set(lines.compactMap { $0.count > 1 ? UInt64($0[1]) : nil }).sorted().enumerated().map { ($1, $0 + 1) }
        )
        return lines.map { fields in
            guard fields.count > 1, let token = UInt64(fields[1]), let rank = ranks[token] else { return fields.joined(separator: " ") }
            return ([fields[0], String(rank)] + fields.dropFirst(2)).joined(separator: " ")
        }
    }

    /// A shell script that records its life in `log` (`start TOKEN PID MEMBER`, `stop TOKEN PID`) and, holding an
    /// exclusive flock(1) for as long as it or anything it started lives, writes `OVERLAP` if another copy is
    /// still alive when it starts.
    func childScript() throws -> String {
        let script = file("child.sh")
        try """
            #!/bin/sh
            exec 9>>"\(file("lock"))"
            flock -n 9 || echo "OVERLAP $UNDERSTUDY_FENCING_TOKEN" >> "\(file("log"))"
            echo "start $UNDERSTUDY_FENCING_TOKEN $$ $UNDERSTUDY_MEMBER_ID $UNDERSTUDY_GROUP" >> "\(file("log"))"
            trap 'echo "stop $UNDERSTUDY_FENCING_TOKEN $$" >> "\(file("log"))"; exit 0' TERM
            while :; do sleep 0.05; done

            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        return script
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// An `understudy` process whose stdout and stderr go to files; killed with SIGKILL when released.
final class Launched {
    let process: Process
    let stderrPath: String
    let stdoutPath: String

    /// Runs `understudy` with `arguments`, or with `executable`, the program `arguments[0]` with the rest.
    init(_ arguments: [String], in scratch: Scratch, name: String, environment: [String: String]? = nil, executable: Bool = false) throws {
        stderrPath = scratch.file("\(name).err")
        stdoutPath = scratch.file("\(name).out")
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable ? arguments[0] : understudyPath)
        process.arguments = executable ? Array(arguments.dropFirst()) : arguments
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        try process.run()
    }

    var pid: pid_t { process.processIdentifier }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { kill(pid, number) }

    /// SIGSTOP, at a moment when the process holds no write lock (a SQLite transaction frozen half-way would
    /// stop every other member of the store, which is not what a test of a frozen supervisor means).
    func freeze() async throws {
        for _ in 0..<100 {
            kill(pid, SIGSTOP)
            guard try await eventually(timeout: .seconds(2), { processState(pid) == "T" }) else { continue }
            if !holdsWriteLock(pid) { return }
            kill(pid, SIGCONT)
            try await Task.sleep(for: .milliseconds(Int.random(in: 1...20)))
        }
        Issue.record("could not freeze \(pid) outside a write transaction")
    }

    /// Waits for the exit; returns the exit status, or `nil` if still running at the deadline.
    func exitStatus(within timeout: Duration = .seconds(15)) async throws -> Int32? {
        guard try await eventually(timeout: timeout, { !self.process.isRunning }) else { return nil }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(pid, SIGCONT)
            kill(pid, SIGKILL)
        }
    }
}

/// Runs `understudy` to completion (at most 30 s); returns its status, stdout and stderr.
func understudy(_ arguments: [String], in scratch: Scratch) async throws -> (status: Int32, stdout: String, stderr: String) {
    let launched = try Launched(arguments, in: scratch, name: "once-\(UInt32.random(in: 0...UInt32.max))")
    let exited = try await launched.exitStatus(within: .seconds(30))
    let status = try #require(exited, "understudy \(arguments) did not exit")
    return (status, launched.stdout, launched.stderr)
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(15), _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
}

/// Whether a process with this pid exists (and is not a zombie).
func isAlive(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    return !stat.contains(") Z ")
}

/// The state letter of /proc/PID/stat (`R`, `S`, `T`, `Z`, …).
func processState(_ pid: pid_t) -> String {
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    guard let end = stat.lastIndex(of: ")") else { return "" }
    return String(stat[stat.index(after: end)...].dropFirst().prefix(1))
}

/// Whether `pid` holds a POSIX write lock (SQLite's writer and checkpointer locks), from /proc/locks.
func holdsWriteLock(_ pid: pid_t) -> Bool {
    let locks = (try? String(contentsOfFile: "/proc/locks", encoding: .utf8)) ?? ""
    return locks.split(separator: "\n").contains { line in
        let fields = line.split(separator: " ")
        return fields.contains("WRITE") && fields.contains(Substring("\(pid)"))
    }
}

/// One line of the child's log.
struct LogEntry: Equatable {
    var kind: String
    var token: Int
    var pid: pid_t
    var member: String?
}

func entries(_ lines: [String]) -> [LogEntry] {
    lines.compactMap { line in
        let fields = line.split(separator: " ").map(String.init)
        guard fields.count >= 3, let token = Int(fields[1]), let pid = pid_t(fields[2]) else { return nil }
        return LogEntry(kind: fields[0], token: token, pid: pid, member: fields.count > 3 ? fields[3] : nil)
    }
}

/// A file of this repository, by its path from the root.
func repositoryFile(_ path: String, file: String = #filePath) -> String {
    URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(path).path
}
