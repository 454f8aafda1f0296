import Foundation
import Testing

/// The PostgreSQL password stays with the supervisor: not in the environment of COMMAND or hooks, not in any
/// argument list `ps` shows, and it can come from a file. Needs the test server of `scripts/test`.
@Suite(.serialized)
struct CredentialsTests {
    /// The test server's URL split into the URL without its password, and the password.
    static func server() throws -> (url: String, password: String, bare: String) {
        let url = try RunTests.freshPostgresSchemaURL()
        var components = try #require(URLComponents(string: url))
        let password = try #require(components.password)
        components.password = nil
        return (url, password, try #require(components.string))
    }

    static func cmdline(_ pid: pid_t) -> String {
        ((try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()).map { $0 == 0 ? " " : String(UnicodeScalar($0)) }.joined()
    }

    /// `UNDERSTUDY_STORE` and `PGPASSWORD` carry the password: neither reaches COMMAND or a hook, and no
    /// process of the tree shows it in its arguments; nor does the supervisor, once started, with `--store`.
    @Test func test_commandAndHooks_getNoCredentials_andNoArgumentListShowsThem() async throws {
        let (url, password, _) = try Self.server()
        let scratch = try Scratch()
        var environment = ProcessInfo.processInfo.environment
        environment["UNDERSTUDY_STORE"] = url
        environment["PGPASSWORD"] = password
        let fromEnvironment = try Launched(
            ["run", "--group", "secret", "--on-activate", "env > \(scratch.file("hook.env"))",
             "--", "/bin/sh", "-c", "env > \(scratch.file("command.env")); exec sleep 300"],
            in: scratch, name: "env", environment: environment
        )
        #expect(try await eventually { !scratch.read("command.env").isEmpty }, "\(fromEnvironment.stderr)")
        for file in ["command.env", "hook.env"] {
            let text = scratch.read(file)
            #expect(text.contains("UNDERSTUDY_FENCING_TOKEN=1"))
            #expect(!text.contains(password), "\(file) carries the store's password")
            #expect(!text.contains("UNDERSTUDY_STORE=") && !text.contains("PGPASSWORD="), "\(file): \(text)")
        }
        let watchdog = try #require(ContainmentTests.watchdogPID(fromEnvironment))
        #expect(!Self.cmdline(watchdog).isEmpty && !Self.cmdline(watchdog).contains(password))
        fromEnvironment.signal(SIGTERM)
        #expect(try await fromEnvironment.exitStatus() == 0)

        let fromArgument = try Launched(
            ["run", "--group", "secret", "--store", url, "--", "/bin/sh", "-c", "env > \(scratch.file("argument.env")); exec sleep 300"],
            in: scratch, name: "argument"
        )
        #expect(try await eventually { !scratch.read("argument.env").isEmpty }, "\(fromArgument.stderr)")
        let shown = Self.cmdline(fromArgument.pid)
        #expect(shown.contains("--store") && !shown.contains(password), "ps shows the password: \(shown)")
        #expect(!scratch.read("argument.env").contains(password))
        fromArgument.signal(SIGTERM)
        #expect(try await fromArgument.exitStatus() == 0)
    }

    /// `--password-file` and a pgpass-format file named by `PGPASSFILE` supply the password of a URL that has
    /// none; a wrong one is refused by the server; an unreadable `--password-file` is exit 72.
    @Test func test_passwordFile_andPgpass_supplyThePassword() async throws {
        let (_, password, bare) = try Self.server()
        let scratch = try Scratch()
        let components = try #require(URLComponents(string: bare))
        try "\(password)\n".write(toFile: scratch.file("password"), atomically: true, encoding: .utf8)
        let once = ["run", "--group", "files", "--store", bare, "--once"]
        let right = try await understudy(once + ["--password-file", scratch.file("password"), "--", "true"], in: scratch)
        #expect(right.status == 0, "\(right.stderr)")

        try "wrong\n".write(toFile: scratch.file("wrong"), atomically: true, encoding: .utf8)
        let wrong = try await understudy(once + ["--password-file", scratch.file("wrong"), "--", "true"], in: scratch)
        #expect(wrong.status == 68, "\(wrong.stderr)")

        let missing = try await understudy(once + ["--password-file", scratch.file("missing"), "--", "true"], in: scratch)
        #expect(missing.status == 72 && missing.stderr.split(separator: "\n").count == 1, "\(missing.stderr)")

        let pgpass = scratch.file("pgpass")
        let host = try #require(components.host), port = try #require(components.port), user = try #require(components.user)
        try "# comment\nother:1:*:*:nope\n\(host):\(port):*:\(user):\(password.replacingOccurrences(of: ":", with: "\\:"))\n"
            .write(toFile: pgpass, atomically: true, encoding: .utf8)
        chmod(pgpass, 0o600)
        var environment = ProcessInfo.processInfo.environment
        environment["PGPASSFILE"] = pgpass
        environment["PGPASSWORD"] = nil
        let member = try Launched(once + ["--", "true"], in: scratch, name: "pgpass", environment: environment)
        #expect(try await member.exitStatus() == 0, "\(member.stderr)")
    }
}
