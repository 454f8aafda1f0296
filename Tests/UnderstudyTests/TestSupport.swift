import Foundation
import GRDB
import Synchronization
import Testing
import Understudy
import UnderstudyCore
import UnderstudySQLite
import UnderstudyStore
import UnderstudyStoreConformance

/// A SQLite store on the host's clock whose file counts as long in use (a new file grants nothing for T, which
/// tests with a long T cannot wait for), with tokens that count from 1.
func seasonedSQLiteStore(path: String, batchWindow: Duration = .zero) throws -> SQLiteStore {
    let system = try HostClock.system()
    let store = try SQLiteStore(
        path: path, clock: HostClock(bootID: system.bootID, host: system.host, now: system.now, wallMicroseconds: { 0 }),
        batchWindow: batchWindow
    )
    let raw = try DatabaseQueue(path: path)
    try raw.write { try $0.execute(sql: "UPDATE understudy_meta SET value = '0' WHERE key = 'record_complete_since'") }
    try raw.close()
    return store
}

/// A fresh temporary directory, removed when the value is released.
final class TemporaryDirectory: Sendable {
    let path: String

    init() throws {
        let template = (NSTemporaryDirectory() as NSString).appendingPathComponent("understudy-test-XXXXXX")
        var bytes = Array(template.utf8CString)
        guard let result = mkdtemp(&bytes) else { throw StoreError(.unavailable, "mkdtemp failed") }
        path = String(cString: result)
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Polls `condition` until it holds or `timeout` passes; for waiting on other processes, whose progress
/// cannot be awaited directly.
func eventually(timeout: Duration = .seconds(20), _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
}

/// The throwaway PostgreSQL server that `scripts/test` starts on loopback.
enum TestPostgres {
    struct NotConfigured: Error, CustomStringConvertible {
        var description: String {
            "UNDERSTUDY_TEST_POSTGRES_URL is not set: run the suite with ./scripts/test, which starts PostgreSQL"
        }
    }

    static var baseURL: String {
        get throws {
            guard let url = ProcessInfo.processInfo.environment["UNDERSTUDY_TEST_POSTGRES_URL"], !url.isEmpty else {
                throw NotConfigured()
            }
            return url
        }
    }

    /// The server's URL with a schema no other test uses.
    static func freshSchemaURL() throws -> String {
        let schema = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        let base = try baseURL
        return base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
    }

    /// Runs the server's control script (`start`, `stop`, `restart`).
    static func control(_ command: String) throws {
        guard let script = ProcessInfo.processInfo.environment["UNDERSTUDY_TEST_POSTGRES_CTL"] else { throw NotConfigured() }
        guard try runToCompletion(script, [command]) == 0 else { throw StoreError(.unavailable, "pg_ctl \(command) failed") }
    }
}

/// Runs a program and waits for it with `waitpid`. Foundation's `Process.waitUntilExit()` also waits for every
/// descendant that inherited its bookkeeping descriptor, which a daemon (the PostgreSQL server) never closes.
func runToCompletion(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws -> Int32 {
    var pid: pid_t = 0
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let envp = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { envp.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    let spawned = posix_spawnp(&pid, path, &actions, nil, argv, envp)
    guard spawned == 0 else { throw StoreError(.unavailable, "cannot run \(path): error \(spawned)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// SIGSTOP `pid` at a moment when it holds no POSIX write lock (/proc/locks): a member frozen half-way through a
/// SQLite transaction stops every other member of the store, which is not what a test of a frozen member means.
func freezeOutsideWriteLock(_ pid: pid_t) async throws {
    func stopped() -> Bool {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let end = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: end)...].dropFirst().first == "T"
    }
    func holdsWriteLock() -> Bool {
        let locks = (try? String(contentsOfFile: "/proc/locks", encoding: .utf8)) ?? ""
        return locks.split(separator: "\n").contains { $0.split(separator: " ").contains("WRITE") && $0.split(separator: " ").contains(Substring("\(pid)")) }
    }
    for _ in 0..<100 {
        kill(pid, SIGSTOP)
        guard try await eventually(timeout: .seconds(2), stopped) else { continue }
        if !holdsWriteLock() { return }
        kill(pid, SIGCONT)
        try await Task.sleep(for: .milliseconds(Int.random(in: 1...20)))
    }
    Issue.record("could not freeze \(pid) outside a write transaction")
}
