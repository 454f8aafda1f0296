import ArgumentParser
import Foundation

/// The exit codes of `understudy`, documented in `--help`, the README and docs/cli.md.
enum ExitStatus: Int32 {
    /// `status`: a listed group is below its goal.
    case belowGoal = 1
    /// `status` and `watch`: the store cannot be read.
    case statusError = 2
    /// A malformed command line: a missing `--` or command, an unknown option.
    case usage = 64
    /// A duration that is not a positive number with a unit (`100ms`, `2s`).
    case invalidDuration = 65
    /// Settings that cannot work together: T ≤ 2·I, an invalid group name or member id, a weight or goal out of range.
    case invalidConfiguration = 66
    /// A store URL with a scheme Understudy does not support.
    case unknownStoreScheme = 67
    /// The store cannot be created, opened or written.
    case storeUnavailable = 68
    /// Another live process already uses this member id in the group.
    case memberIDInUse = 69
    /// `--http`: the port is in use, or the address cannot be listened on.
    case httpUnavailable = 70
    /// The group runs with another active goal.
    case activeGoalMismatch = 71
    /// `--password-file` cannot be read.
    case passwordFileUnreadable = 72
    /// The command exists but cannot be executed.
    case commandNotExecutable = 126
    /// The command is not found.
    case commandNotFound = 127
    /// A second SIGINT stopped the supervisor at once.
    case interrupted = 130

    /// The table shown by `--help`.
    static let help = """
        EXIT CODES:
          0    success; `run --once`: the command's own status
          1    `status`: a listed group is below its goal
          2    `status`, `watch`: the store cannot be read
          64   usage: missing `--` or command, unknown option, malformed --http
          65   invalid duration (use a number and a unit: 100ms, 2s, 1m)
          66   invalid settings: T <= 2 x I, bad name, id, weight or goal
          67   unknown store scheme
          68   store not writable or not usable
          69   member id already alive in the group
          70   --http: the port is in use or the address cannot be listened on
          71   the group runs with another active goal
          72   --password-file cannot be read
          126  command not executable
          127  command not found
          130  second SIGINT: stopped at once
        """
}

/// A mistake or failure reported as one line on stderr and a documented exit code.
struct CLIError: Error {
    var status: ExitStatus
    var message: String

    init(_ status: ExitStatus, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// Writes one line to standard output at once, even when it is a pipe.
func printLine(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
}

/// Writes one line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
