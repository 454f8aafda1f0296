import CUnderstudyWatchdog
import Foundation
import Synchronization
import Understudy
import UnderstudyCore

/// A command running under the watchdog (a copy of this executable, see `CUnderstudyWatchdog`), in its own
/// process group, with stdin, stdout and stderr passed through.
///
/// The supervisor talks to the watchdog through a pipe only it can write. The watchdog kills the command's
/// process group with SIGKILL when that pipe reaches end-of-file (this process died, even by SIGKILL) and when
/// the newest lease deadline minus `margin` passes (this process is frozen and cannot renew). So the command
/// never outlives the lease that allowed it to run, whatever happens to the supervisor.
final class WatchedProcess: Sendable {
    /// The first argument that turns this executable into the watchdog.
    static let watchdogArgument = "__watchdog"

    /// The watchdog's pid; the command is its only child.
    let pid: pid_t
    private let control: Mutex<Int32>
    private let exitCode = Mutex<Int32?>(nil)
    private let waiters = Mutex<[CheckedContinuation<Int32, Never>]>([])

    /// Starts `command` under the watchdog.
    ///
    /// - Parameters:
    ///   - command: the program (resolved with `PATH`) and its arguments.
    ///   - environment: the command's complete environment.
    ///   - deadline: the command is killed at `deadline - margin` unless ``extend(until:)`` moves it.
    /// - Throws: ``CLIError`` when the watchdog cannot be started.
    init(command: [String], environment: [String: String], deadline: Instant, margin: Duration) throws(CLIError) {
        var fds: [Int32] = [-1, -1]
        guard understudy_pipe_cloexec(&fds) == 0 else {
            throw CLIError(.storeUnavailable, "cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        let executable = Self.executablePath
        let arguments = [executable, Self.watchdogArgument, "3", String(margin.nanoseconds), String(deadline.nanoseconds)] + command
        let variables = environment.map { "\($0.key)=\($0.value)" }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[0], 3)
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
        let result = withCStrings(arguments) { argv in
            withCStrings(variables) { envp in
                posix_spawn(&spawned, executable, &actions, &attributes, argv, envp)
            }
        }
        close(fds[0])
        guard result == 0 else {
            close(fds[1])
            throw CLIError(.commandNotExecutable, "cannot start the watchdog \(executable): \(String(cString: strerror(result)))")
        }
        let pid = spawned
        self.pid = pid
        control = Mutex(fds[1])
        // Reaping needs a blocking waitpid(2): a thread of its own, which keeps `self` alive until then.
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0, errno == EINTR {}
            self.reaped(status)
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

    /// The lease is vouched for until `instant`: the watchdog lets the command run until `instant - margin`.
    func extend(until instant: Instant) {
        send("d \(instant.nanoseconds)\n")
    }

    /// Sends SIGTERM to the command's process group.
    func terminate() {
        send("t\n")
    }

    /// Sends SIGKILL to the command's process group.
    func kill() {
        send("k\n")
    }

    /// Stops the command: SIGTERM now, SIGKILL after `grace` if it is still running.
    func stop(grace: Duration) {
        terminate()
        Task {
            try? await Task.sleep(for: grace)
            self.kill()
        }
    }

    /// Makes sure the command is dead by `instant - margin`: SIGKILL then if it is still running.
    func kill(by instant: Instant, margin: Duration) {
        Task {
            let delay = (instant - margin) - MonotonicClock.now()
            if delay > .zero { try? await Task.sleep(for: delay) }
            self.kill()
        }
    }

    /// Waits until the command and the watchdog have exited; returns the command's exit code, or 128 + the
    /// number of the signal that ended it.
    func waitForExit() async -> Int32 {
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
    var hasExited: Bool { exitCode.withLock { $0 != nil } }

    private func send(_ message: String) {
        control.withLock { descriptor in
            guard descriptor >= 0 else { return }
            let bytes = Array(message.utf8)
            _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        }
    }

    /// This executable, which doubles as the watchdog.
    static let executablePath: String = {
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
