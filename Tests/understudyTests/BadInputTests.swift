import Foundation
import Testing

/// Every mistake: one line on stderr and its own exit code.
@Suite(.serialized)
struct BadInputTests {
    static let cases: [(arguments: [String], status: Int32, mentions: String)] = [
        (["run", "--group", "g", "sleep", "1"], 64, "missing `--`"),
        (["run", "--group", "g", "--"], 64, "missing command"),
        (["run", "--group", "g", "--", "no-such-command-understudy"], 127, "not found"),
        (["run", "--group", "g", "--", "NOT-EXECUTABLE"], 126, "not executable"),
        (["run", "--group", "g", "--heartbeat", "100", "--", "true"], 65, "--heartbeat"),
        (["run", "--group", "g", "--heartbeat", "-1s", "--", "true"], 65, "negative"),
        (["run", "--group", "g", "--activation", "1x", "--", "true"], 65, "unknown unit"),
        (["run", "--group", "g", "--heartbeat", "1s", "--activation", "2s", "--", "true"], 66, "twice the heartbeat"),
        (["run", "--group", "bad name", "--", "true"], 66, "invalid group name"),
        (["run", "--group", "g", "--store", "etcd://db/x", "--", "true"], 67, "postgres://"),
        (["run", "--group", "g", "--store", "postgres://db/x", "--", "true"], 68, "has no user name"),
        // Mistyped URLs are errors, never a local SQLite file of that name (on N hosts, N actives).
        (["run", "--group", "g", "--store", "postgres:/app:secret@db:5432/app", "--", "true"], 67, "write postgres://"),
        (["run", "--group", "g", "--store", "postgresql:app:secret@db/app", "--", "true"], 67, "write postgresql://"),
        (["run", "--group", "g", "--store", "app:secret@db:5432/app", "--", "true"], 67, "unknown scheme"),
        (["run", "--group", "g", "--store", "app@db/app", "--", "true"], 67, "user@host"),
        (["run", "--group", "g", "--store", "sqlite://relative.db", "--", "true"], 67, "sqlite:///absolute"),
        (["run", "--group", "g", "--store", "/proc/understudy/store.db", "--", "true"], 68, "store"),
        (["run", "--group", "g", "--bogus", "--", "true"], 64, "--bogus"),
        (["run", "--group", "g", "--containment", "jail", "--", "true"], 64, "--containment"),
        (["run", "--group", "g", "--password-file", "/etc/hostname", "--", "true"], 66, "only a PostgreSQL store"),
        (["run", "--group", "g", "--store", "postgres://u@127.0.0.1:1/db", "--password-file", "/nonexistent/pw", "--", "true"], 72, "password file"),
        (["status", "--store", "postgres://u@127.0.0.1:1/db", "--password-file", "/nonexistent/pw"], 72, "password file"),
    ]

    @Test(arguments: 0..<cases.count)
    func test_badInput_oneLine_distinctExitCode(_ index: Int) async throws {
        let scratch = try Scratch()
        let notExecutable = scratch.file("data.txt")
        _ = FileManager.default.createFile(atPath: notExecutable, contents: Data("data\n".utf8), attributes: [.posixPermissions: 0o644])
        var arguments = Self.cases[index].arguments.map { $0 == "NOT-EXECUTABLE" ? notExecutable : $0 }
        if !arguments.contains("--store"), let separator = arguments.firstIndex(of: "--") {
            arguments.insert(contentsOf: ["--store", scratch.file("store.db")], at: separator)
        }
        let result = try await understudy(arguments, in: scratch)
        #expect(result.status == Self.cases[index].status, "\(arguments): \(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
        #expect(result.stderr.contains(Self.cases[index].mentions), "\(arguments): \(result.stderr)")
        #expect(!result.stderr.contains("secret"), "a password in the message: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("postgres:")), "a mistyped URL became a file")
    }

    /// A member id that is alive in the group is refused, naming the host and pid of the live one.
    @Test func test_memberIDInUse_namesHostAndPid() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let first = try Launched(["run", "--group", "g", "--store", store, "--id", "same", "--", "sleep", "60"], in: scratch, name: "first")
        defer { first.signal(SIGTERM) }
        #expect(try await eventually { first.stderr.contains("activated") })
        let second = try await understudy(["run", "--group", "g", "--store", store, "--id", "same", "--", "sleep", "60"], in: scratch)
        #expect(second.status == 69)
        #expect(second.stderr.split(separator: "\n").count == 1, "\(second.stderr)")
        #expect(second.stderr.contains("pid \(first.pid)"))
        let goal = try await understudy(["run", "--group", "g", "--store", store, "--active-goal", "2", "--", "sleep", "60"], in: scratch)
        #expect(goal.status == 71)
    }

    /// A member killed with SIGKILL and restarted at once with the same id (systemd's `Restart=`) joins once its
    /// dead predecessor's row expires, instead of exiting 69 about a process that is gone.
    @Test func test_restartOfAKilledMembersID_withinT_joins() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let arguments = ["run", "--group", "g", "--store", store, "--id", "same", "--", "sleep", "60"]
        let first = try Launched(arguments, in: scratch, name: "first")
        #expect(try await eventually { first.stderr.contains("activated") })
        #expect(first.stderr.contains("store=sqlite://\(store)"), "every member says which store it uses: \(first.stderr)")
        first.signal(SIGKILL)
        _ = try await first.exitStatus()
        let restarted = try Launched(arguments, in: scratch, name: "restarted")
        defer { restarted.signal(SIGTERM) }
        #expect(try await eventually { restarted.stderr.contains("activated") || !restarted.process.isRunning }, "\(restarted.stderr)")
        #expect(restarted.process.isRunning, "\(restarted.stderr)")
        #expect(restarted.stderr.contains("activated"))
    }
}

/// The exit codes are listed once, in `ExitStatus`; `--help` prints them and docs/cli.md must say the same.
@Suite struct ExitCodeDocumentationTests {
    @Test func test_docsExitCodeTable_isTheHelpTable() async throws {
        let help = try await understudy(["--help"], in: try Scratch()).stdout
        let helpRows = help.split(separator: "\n").drop { !$0.hasPrefix("EXIT CODES:") }.dropFirst()
            .prefix { $0.hasPrefix("  ") }
            .map { line in
                let trimmed = line.drop { $0 == " " }
                let code = trimmed.prefix { $0.isNumber }
                return "| \(code) | \(trimmed.dropFirst(code.count).drop { $0 == " " }) |"
            }
        let docs = try String(contentsOfFile: repositoryFile("docs/cli.md"), encoding: .utf8)
        let docRows = docs.components(separatedBy: "## Exit codes")[1].split(separator: "\n")
            .filter { $0.hasPrefix("| ") && $0.first(where: \.isNumber) == $0.dropFirst(2).first }
            .map(String.init)
        #expect(helpRows.count >= 15)
        #expect(docRows == helpRows)
    }
}
