import ArgumentParser
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// MARK: Time

/// Nanoseconds on CLOCK_BOOTTIME: the clock the child stamps its start with, and the SQLite store's clock.
func boottime() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_BOOTTIME, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

/// The options of the benchmarks that run real `understudy run` supervisors.
struct SupervisorOptions: ParsableArguments {
    @Option(help: "Heartbeat interval I.")
    var heartbeat = "100ms"

    @Option(help: "Activation interval T.")
    var activation = "500ms"

    @Option(help: "The `understudy` executable (default: the root's .build-release or .build release build).")
    var understudy: String?
}

func sleep(milliseconds: Int) {
    usleep(useconds_t(milliseconds * 1_000))
}

/// Parses `100ms`, `1s`, `1.5s`, `2m`.
extension Duration {
    var milliseconds: Double {
        Double(components.seconds) * 1e3 + Double(components.attoseconds) * 1e-15
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: Distributions

/// p50, p90, p99 and max of a set of samples, in milliseconds (nearest-rank percentiles).
struct Distribution: Codable, Sendable {
    var samples: Int
    var p50: Double
    var p90: Double
    var p99: Double
    var max: Double
    var min: Double
    var mean: Double

    init?(milliseconds values: [Double]) {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        func percentile(_ p: Double) -> Double {
            sorted[Swift.max(0, Swift.min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1))]
        }
        samples = sorted.count
        p50 = percentile(0.50)
        p90 = percentile(0.90)
        p99 = percentile(0.99)
        max = sorted.last!
        min = sorted.first!
        mean = sorted.reduce(0, +) / Double(sorted.count)
    }
}

func format(_ milliseconds: Double) -> String {
    milliseconds >= 100 ? String(format: "%.0f", milliseconds) : String(format: "%.1f", milliseconds)
}

/// A plain text table with aligned columns, in Markdown syntax so it can be pasted into docs.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        "| " + cells.enumerated().map { index, cell in cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) }
            .joined(separator: " | ") + " |"
    }
    return ([line(header), "|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|"]
        + rows.map(line)).joined(separator: "\n")
}

func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Progress on stderr, so stdout stays a table or JSON.
func note(_ message: String) {
    FileHandle.standardError.write(Data(("understudy-bench: " + message + "\n").utf8))
}

// MARK: The machine

struct MachineInfo: Codable, Sendable {
    var cores: Int
    var cpu: String
    var memoryMB: Int
    var kernel: String

    static func current() -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "?" } ?? "?"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let totalKB = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal") }
            .flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Int($0) } } ?? 0
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return MachineInfo(cores: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), cpu: model, memoryMB: totalKB / 1024, kernel: release)
    }

    var summary: String { "\(cores) cores, \(cpu), \(memoryMB) MB, Linux \(kernel)" }
}

// MARK: Processes

/// Everything the benchmark started, so that it can all be stopped on exit, on error and on SIGINT/SIGTERM.
final class Cleanup: Sendable {
    static let shared = Cleanup()

    private struct State {
        var processGroups: Set<pid_t> = []
        var processes: Set<pid_t> = []
        var actions: [(id: Int, run: @Sendable () -> Void)] = []
        var nextID = 0
    }

    private let state = Mutex(State())
    /// Kept alive for the life of the process.
    nonisolated(unsafe) private static var signalSources: [any DispatchSourceSignal] = []

    /// SIGINT, SIGTERM and SIGHUP run every cleanup and exit.
    func installSignalHandlers() {
        guard Self.signalSources.isEmpty else { return }
        Self.signalSources = [SIGINT, SIGTERM, SIGHUP].map { signo in
            signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler {
                note("interrupted: stopping every process the benchmark started")
                Cleanup.shared.runAll()
                exit(128 + signo)
            }
            source.resume()
            return source
        }
        atexit { Cleanup.shared.runAll() }
    }


    func trackGroup(_ pgid: pid_t) { state.withLock { _ = $0.processGroups.insert(pgid) } }
    func untrackGroup(_ pgid: pid_t) { state.withLock { _ = $0.processGroups.remove(pgid) } }
    func track(_ pid: pid_t) { state.withLock { _ = $0.processes.insert(pid) } }

    @discardableResult
    func add(_ action: @escaping @Sendable () -> Void) -> Int {
        state.withLock { state in
            state.nextID += 1
            state.actions.append((state.nextID, action))
            return state.nextID
        }
    }

    /// Runs one cleanup now and forgets it.
    func run(_ id: Int) {
        let action = state.withLock { state -> (@Sendable () -> Void)? in
            guard let index = state.actions.firstIndex(where: { $0.id == id }) else { return nil }
            return state.actions.remove(at: index).run
        }
        action?()
    }

    func runAll() {
        let (groups, processes, actions) = state.withLock { state in
            defer { state = State() }
            return (state.processGroups, state.processes, state.actions)
        }
        for pgid in groups { kill(-pgid, SIGKILL) }
        for pid in processes where isRunning(pid) { kill(pid, SIGKILL) }
        for action in actions.reversed() { action.run() }
    }
}

/// Starts `arguments` in a process group of its own, with default signal dispositions, stdin from /dev/null
/// and stdout and stderr appended to `log`.
func spawn(_ arguments: [String], log: String, environment extra: [String: String] = [:]) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    posix_spawnattr_setpgroup(&attributes, 0)
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attributes, &none)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var environment = ProcessInfo.processInfo.environment
    for (key, value) in extra { environment[key] = value }
    let argv = arguments.map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
    }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
    guard result == 0 else { throw BenchError("cannot start \(arguments[0]): \(String(cString: strerror(result)))") }
    Cleanup.shared.trackGroup(pid)
    return pid
}

/// Waits for a child of this process to exit; SIGKILLs its group after `timeout`.
@discardableResult
func reap(_ pid: pid_t, timeout: Duration = .seconds(10)) -> Int32 {
    let deadline = boottime() + timeout.components.seconds * 1_000_000_000
    var status: Int32 = 0
    while true {
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid || (result < 0 && errno == ECHILD) { break }
        if boottime() > deadline {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
            break
        }
        sleep(milliseconds: 2)
    }
    Cleanup.shared.untrackGroup(pid)
    return status
}

/// Runs a command to completion; returns its exit status and output.
@discardableResult
func runCommand(_ arguments: [String], environment: [String: String] = [:], check: Bool = true) throws -> (status: Int32, output: String) {
    let log = NSTemporaryDirectory() + "understudy-bench-cmd-\(getpid())-\(boottime()).log"
    defer { unlink(log) }
    let pid = try spawn(arguments, log: log, environment: environment)
    let status = reap(pid, timeout: .seconds(300))
    let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    if check, exitCode != 0 {
        throw BenchError("\(arguments.joined(separator: " ")) failed with status \(exitCode): \(output)")
    }
    return (exitCode, output)
}

/// Whether `pid` exists and is not a zombie.
func isRunning(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")")
    else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Fields of /proc/PID/stat after the command name (field 3 is index 0).
func procStat(_ pid: pid_t) -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")")
    else { return nil }
    return stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
}

/// User + system CPU time of a process, in seconds.
func cpuSeconds(_ pid: pid_t) -> Double? {
    guard let fields = procStat(pid), fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// User + system CPU time, in seconds, of every process on this host whose command name is `name` (the
/// processes of a server on loopback). A process that exits in between takes its time with it.
func cpuSeconds(ofProcessesNamed name: String) -> Double {
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
    return pids.reduce(0) { total, pid in
        guard let command = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
              command.trimmingCharacters(in: .whitespacesAndNewlines) == name
        else { return total }
        return total + (cpuSeconds(pid) ?? 0)
    }
}

func parentPID(_ pid: pid_t) -> pid_t? {
    procStat(pid).flatMap { $0.count > 1 ? pid_t($0[1]) : nil }
}

/// Resident set size in MB (VmRSS), or the peak (VmHWM).
func residentMB(_ pid: pid_t = getpid(), peak: Bool = false) -> Double? {
    megabytes(in: "/proc/\(pid)/status", key: peak ? "VmHWM:" : "VmRSS:")
}

/// Proportional set size in MB: each resident page divided by the number of processes that map it.
func proportionalMB(_ pid: pid_t) -> Double? {
    megabytes(in: "/proc/\(pid)/smaps_rollup", key: "Pss:")
}

/// The value of a `KEY:   1234 kB` line of a /proc file, in MB.
private func megabytes(in path: String, key: String) -> Double? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }),
          let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
    else { return nil }
    return kilobytes / 1024
}

/// Drops the file's clean, unmapped pages from the page cache, so the next process to map it reads it afresh.
func dropFromPageCache(_ path: String) throws {
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else { throw BenchError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    let result = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
    guard result == 0 else { throw BenchError("posix_fadvise on \(path): \(String(cString: strerror(result)))") }
}

func freePort() -> Int {
    let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(socketFD) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socketFD, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

func makeTemporaryDirectory(_ prefix: String) throws -> String {
    var template = Array((NSTemporaryDirectory() + prefix + "-XXXXXX").utf8CString)
    guard let pointer = mkdtemp(&template) else { throw BenchError("cannot create a temporary directory") }
    let path = String(cString: pointer)
    Cleanup.shared.add { try? FileManager.default.removeItem(atPath: path) }
    return path
}

// MARK: Binaries

enum Binaries {
    /// The repository's root, from this file's path.
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The directory of the running executable.
    static var ownDirectory: String {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (path as NSString).deletingLastPathComponent
    }

    static func understudy(_ explicit: String?) throws -> String {
        let candidates = explicit.map { [$0] } ?? [
            root + "/.build-release/release/understudy",
            root + "/.build/release/understudy",
        ]
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BenchError(
                "no release build of `understudy` at \(candidates.joined(separator: " or ")): run "
                    + "`swift build -c release --scratch-path .build-release --product understudy` at the root, or pass --understudy PATH"
            )
        }
        return found
    }

    static func child() throws -> String {
        let path = ownDirectory + "/understudy-bench-child"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw BenchError("\(path) is missing: build the Benchmarks package's understudy-bench-child product")
        }
        return path
    }
}
