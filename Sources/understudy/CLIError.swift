import ArgumentParser
import Foundation
import UnderstudySupervisor

/// The exit codes of `understudy`: the one list behind `--help` and docs/cli.md (a test holds the two together).
enum ExitStatus: Int32, CaseIterable {
    case success = 0
    case belowGoal = 1
    case statusError = 2
    case usage = 64
    case invalidDuration = 65
    case invalidConfiguration = 66
    case unknownStoreScheme = 67
    case storeUnavailable = 68
    case memberIDInUse = 69
    case httpUnavailable = 70
    case activeGoalMismatch = 71
    case passwordFileUnreadable = 72
    case invalidJob = 73
    case jobNotFound = 74
    case checkpointRefused = 75
    case invalidAgentFile = 76
    case agentNotRunning = 77
    case unknownGroup = 78
    case controlSocketUnavailable = 79
    case commandNotExecutable = 126
    case commandNotFound = 127
    case interrupted = 130

    /// What the code means, one line.
    var meaning: String {
        switch self {
        case .success: "success (`run`: stopped by a signal; `run --once`: COMMAND's status)"
        case .belowGoal: "`status`: a listed group is below its goal"
        case .statusError: "`status`, `watch`: the store cannot be read, or the group is unknown"
        case .usage: "usage: missing `--` or command, unknown option, bad `--http`"
        case .invalidDuration: "invalid duration (use a number and a unit: `100ms`, `2s`, `1m`)"
        case .invalidConfiguration: "invalid settings: T <= 2·I, P >= T, bad name, id, weight or goal"
        case .unknownStoreScheme: "unknown store scheme, or a store that looks like a URL but is not"
        case .storeUnavailable: "the store cannot be created, opened or written"
        case .memberIDInUse: "the member id is alive in the group (the message names host and pid)"
        case .httpUnavailable: "`--http`: the port is in use, or the address cannot be listened on"
        case .activeGoalMismatch: "the group runs with another active goal or number of partitions"
        case .passwordFileUnreadable: "`--password-file` cannot be read"
        case .invalidJob: "`queue`: invalid queue name, payload, priority, attempts or key"
        case .jobNotFound: "`queue cancel`: no such job, or it is done already"
        case .checkpointRefused: "`checkpoint put`: refused (no valid lease with the token, or stale)"
        case .invalidAgentFile: "`agent`: the file is invalid (each problem listed with line and key)"
        case .agentNotRunning: "`agent` subcommands: no agent answers on the control socket"
        case .unknownGroup: "`agent drain`, `agent resume`: the agent runs no member of GROUP"
        case .controlSocketUnavailable: "`agent`: another agent holds the control socket, or it cannot be made"
        case .commandNotExecutable: "COMMAND not executable"
        case .commandNotFound: "COMMAND not found"
        case .interrupted: "second SIGINT: stopped at once"
        }
    }

    /// The table shown by `--help`.
    static var help: String {
        "EXIT CODES:\n" + allCases.map { "  \(String($0.rawValue).padding(toLength: 5, withPad: " ", startingAt: 0))\($0.meaning)" }.joined(separator: "\n")
    }
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

extension ExitStatus {
    /// The exit status of a supervisor that could not start or go on.
    init(_ kind: SupervisorError.Kind) {
        self = switch kind {
        case .invalidConfiguration: .invalidConfiguration
        case .storeUnavailable: .storeUnavailable
        case .memberIDInUse: .memberIDInUse
        case .activeGoalMismatch: .activeGoalMismatch
        case .invalidHTTPAddress: .usage
        case .httpUnavailable: .httpUnavailable
        case .commandNotExecutable: .commandNotExecutable
        }
    }
}

extension CLIError {
    init(_ error: SupervisorError) {
        self.init(ExitStatus(error.kind), error.message)
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
