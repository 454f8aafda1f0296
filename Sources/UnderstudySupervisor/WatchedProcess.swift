import CUnderstudyWatchdog
import Foundation
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyStore

/// A command running under the watchdog (a copy of this executable, see `CUnderstudyWatchdog`), with its
/// whole process tree held by a ``Containment``, and stdin, stdout and stderr passed through.
///
/// The supervisor talks to the watchdog through a pipe only it can write. The watchdog kills the command's
/// tree with SIGKILL when that pipe reaches end-of-file (this process died, even by SIGKILL) and when the
/// newest lease deadline minus `margin` passes (this process is frozen and cannot renew); it then proves the
/// tree gone and gives the slot back with `release`. If the watchdog itself dies, its guard inside the tree
/// kills the tree, and this process proves it gone before ``waitForExit()`` returns. So the command never
/// outlives the lease that allowed it to run, and no release precedes its death.
///
/// It spawns with `posix_spawn` rather than swift-subprocess: the watchdog needs exactly two inherited
/// descriptors at fixed numbers (the control pipe's read end as 3, the release ticket as 4) and every other one
/// closed, a process group of its own, and its own pid known before the first deadline is sent; and it is
/// waited for through the watchdog's own protocol (the pipe and the tree's proof of death), not through the
/// child's exit status alone. swift-subprocess runs a closure over a child's lifetime, which fits neither.
public final class WatchedProcess: Sendable {
    /// The first argument that turns this executable into the watchdog.
    public static let watchdogArgument = "__watchdog"

    /// The watchdog's pid; the guard is its only child, the command the guard's.
    public let pid: pid_t
    /// The command's cgroup leaf, `nil` in process-group mode.
    public let leaf: String?
    private let control: Mutex<Int32>
    private let exitCode = Mutex<Int32?>(nil)
    private let waiters = Mutex<[CheckedContinuation<Int32, Never>]>([])
    /// Whether the watchdog was reaped (then its pid may be reused), and whether this process killed it.
    private let watchdog = Mutex<(reaped: Bool, killedByUs: Bool, signaled: Bool)>((false, false, false))

    /// The watchdogs of this process not yet reaped: orphans are every other child.
    private static let live = Mutex<Set<pid_t>>([])

    /// Starts `command` under the watchdog.
    ///
    /// - Parameters:
    ///   - command: the program (resolved with `PATH`) and its arguments.
    ///   - environment: the command's complete environment.
    ///   - deadline: the command is killed at `deadline - margin` unless ``extend(until:)`` moves it.
    ///   - containment: how the command's tree is held; in process-group mode this process MUST be a child
    ///     subreaper (``Containment``) for ``waitForExit()`` to prove the tree gone after a watchdog's death.
    ///   - release: what `understudy __release-slot` reads to give the slot back once the watchdog has killed
    ///     the tree on its own (`nil`: nothing to release). Passed in an anonymous file, never in arguments.
    ///   - standardInput: what the command reads on standard input, from an anonymous file (`nil`: this
    ///     process's standard input).
    ///   - workingDirectory: where the command starts (`nil`: this process's working directory).
    /// - Throws: ``SupervisorError`` when the watchdog cannot be started.
    public init(
        command: [String],
        environment: [String: String],
        deadline: Instant,
        margin: Duration,
        containment: Containment = .processGroup,
        release: [UInt8]? = nil,
        standardInput: [UInt8]? = nil,
        workingDirectory: String? = nil
    ) throws(SupervisorError) {
        var fds: [Int32] = [-1, -1]
        guard understudy_pipe_cloexec(&fds) == 0 else {
            throw SupervisorError(.storeUnavailable, "cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        let leaf: String?
        do {
            leaf = try containment.makeLeaf()
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        let ticket = release.map { bytes in bytes.withUnsafeBytes { understudy_memfd($0.baseAddress, $0.count) } } ?? -1
        defer { if ticket >= 0 { close(ticket) } }
        let input = standardInput.map { bytes in bytes.withUnsafeBytes { understudy_memfd($0.baseAddress, $0.count) } }
        defer { if let input, input >= 0 { close(input) } }
        if let input, input < 0 {
            close(fds[0])
            close(fds[1])
            if let leaf { rmdir(leaf) }
            throw SupervisorError(.storeUnavailable, "cannot pass the command its input: \(String(cString: strerror(errno)))")
        }
        let executable = Self.executablePath
        let arguments = [
            executable, Self.watchdogArgument, "3", String(margin.nanoseconds), String(deadline.nanoseconds),
            leaf ?? "-", ticket >= 0 ? "4" : "-1",
        ] + command
        let variables = environment.map { "\($0.key)=\($0.value)" }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[0], 3)
        if ticket >= 0 { posix_spawn_file_actions_adddup2(&actions, ticket, 4) }
        if let input { posix_spawn_file_actions_adddup2(&actions, input, 0) }
        if let workingDirectory { _ = understudy_spawn_add_chdir(&actions, workingDirectory) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Its own process group: a Ctrl-C or Ctrl-Z meant for the supervisor never reaches the watchdog.
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var spawned: pid_t = 0
        // Registered while spawning, so that no orphan hunt takes the new watchdog for an orphan.
        let result = Self.live.withLock { live in
            let result = withCStrings(arguments) { argv in
                withCStrings(variables) { envp in
                    posix_spawn(&spawned, executable, &actions, &attributes, argv, envp)
                }
            }
            if result == 0 { live.insert(spawned) }
            return result
        }
        close(fds[0])
        guard result == 0 else {
            close(fds[1])
            if let leaf { rmdir(leaf) }
            throw SupervisorError(.commandNotExecutable, "cannot start the watchdog \(executable): \(String(cString: strerror(result)))")
        }
        let pid = spawned
        self.pid = pid
        self.leaf = leaf
        control = Mutex(fds[1])
        // Reaping needs a blocking wait: a thread of its own, which keeps `self` alive until then.
        Thread.detachNewThread {
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0, errno == EINTR {}
            var status: Int32 = 0
            self.watchdog.withLock { watchdog in
                while waitpid(pid, &status, 0) < 0, errno == EINTR {}
                watchdog.reaped = true
                watchdog.signaled = status & 0x7f != 0
            }
            Self.live.withLock { _ = $0.remove(pid) }
            self.confirmTreeGone()
            self.reaped(status)
        }
    }

    /// Kills what may be left of the tree and returns once it is proven gone: the cgroup is empty, or every
    /// orphan reparented to this subreaper is reaped. The watchdog normally did this already; this covers its
    /// death.
    private func confirmTreeGone() {
        if let leaf {
            while understudy_cgroup_kill(leaf) != 0 {
                // Only a vanished cgroup file system gets here; nothing can be proven, and nothing to wait for.
                if errno == EINTR { continue }
                return
            }
        } else {
            Self.live.withLock { live in
                let keep = Array(live)
                keep.withUnsafeBufferPointer { understudy_kill_orphans($0.baseAddress, Int32($0.count)) }
            }
        }
    }

    private func reaped(_ status: Int32) {
        let code: Int32 = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        control.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
            descriptor = -1
        }
        let pending = waiters.withLock { waiters in
            exitCode.withLock { $0 = code }
            defer { waiters = [] }
            return waiters
        }
        for waiter in pending { waiter.resume(returning: code) }
    }

    /// Whether the watchdog itself was killed by a signal this process did not send: its guard then killed the
    /// tree, and ``waitForExit()`` returned only once the tree was proven gone.
    public var watchdogDied: Bool {
        watchdog.withLock { $0.signaled && !$0.killedByUs }
    }

    /// The lease is vouched for until `instant`: the watchdog lets the command run until `instant - margin`.
    public func extend(until instant: Instant) {
        send("d \(instant.nanoseconds)\n")
    }

    /// Sends SIGTERM to the command's tree (every process of its cgroup; in process-group mode, its process group).
    public func terminate() {
        send("t\n")
    }

    /// Kills the command's whole tree with SIGKILL, without relying on the watchdog (which may be frozen):
    /// asks it, kills the cgroup directly, and kills the watchdog, whose guard then kills what is left.
    /// ``waitForExit()`` returns once the tree is proven gone.
    public func kill() {
        send("k\n")
        if let leaf {
            let descriptor = open(leaf + "/cgroup.kill", O_WRONLY | O_CLOEXEC)
            if descriptor >= 0 {
                _ = write(descriptor, "1", 1)
                close(descriptor)
            }
        }
        watchdog.withLock { watchdog in
            guard !watchdog.reaped else { return }
            watchdog.killedByUs = true
            Glibc.kill(pid, SIGKILL)
        }
    }

    /// Stops the command: SIGTERM now, SIGKILL after `grace` if it is still running.
    public func stop(grace: Duration) {
        terminate()
        Task {
            try? await Task.sleep(for: grace)
            self.kill()
        }
    }

    /// Makes sure the command is dead by `instant - margin`: SIGKILL then if it is still running.
    public func kill(by instant: Instant, margin: Duration) {
        Task {
            let delay = (instant - margin) - MonotonicClock.now()
            if delay > .zero { try? await Task.sleep(for: delay) }
            self.kill()
        }
    }

    /// Waits until the command and the watchdog have exited; returns the command's exit code, or 128 + the
    /// number of the signal that ended it.
    public func waitForExit() async -> Int32 {
        await withCheckedContinuation { continuation in
            let code: Int32? = waiters.withLock { waiters in
                if let code = exitCode.withLock({ $0 }) { return code }
                waiters.append(continuation)
                return nil
            }
            if let code { continuation.resume(returning: code) }
        }
    }

    /// Whether the command has exited.
    public var hasExited: Bool { exitCode.withLock { $0 != nil } }

    private func send(_ message: String) {
        control.withLock { descriptor in
            guard descriptor >= 0 else { return }
            let bytes = Array(message.utf8)
            _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        }
    }

    /// This executable, which doubles as the watchdog.
    public static let executablePath: String = {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if count > 0 { return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CommandLine.arguments[0]
    }()
}

/// Calls `body` with a NULL-terminated C array of `strings`.
func withCStrings<Result>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> Result) -> Result {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { for pointer in pointers { free(pointer) } }
    return body(pointers)
}
