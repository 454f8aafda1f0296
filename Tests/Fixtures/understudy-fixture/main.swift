// A member process for the multi-process tests of the library.
//
//   understudy-fixture DB GROUP ID WEIGHT LOG
//
// Joins GROUP on the store DB, a SQLite path or a postgres:// URL (I = 100 ms, T = 500 ms). For every activation it appends to LOG:
//   start TOKEN PID INSTANT
//   stop TOKEN PID INSTANT VALID_UNTIL
// where INSTANT is the host's boot-time clock in nanoseconds and VALID_UNTIL the end of the last lease the
// member had confirmed: the interval in which the member may act is [start, min(stop, VALID_UNTIL)].
import Foundation
import Logging
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySQLite
import UnderstudyStore

let arguments = CommandLine.arguments
guard arguments.count == 6, let weight = Int(arguments[4]) else {
    FileHandle.standardError.write(Data("usage: understudy-fixture DB GROUP ID WEIGHT LOG\n".utf8))
    exit(64)
}
let log = AppendOnlyLog(path: arguments[5])
let pid = ProcessInfo.processInfo.processIdentifier

struct AppendOnlyLog: Sendable {
    let path: String

    /// Appends one line with a single `write` on an `O_APPEND` descriptor, so lines of several processes
    /// never interleave.
    func append(_ line: String) {
    let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
    guard descriptor >= 0 else { return }
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    close(descriptor)
    }
}

do {
    let configuration = try GroupConfiguration(
        name: GroupName(arguments[2]),
        heartbeatInterval: .milliseconds(100),
        activationInterval: .milliseconds(500)
    )
    let store: any CoordinationStore = if arguments[1].hasPrefix("postgres") {
        try await PostgresStore(url: arguments[1])
    } else {
        try SQLiteStore(path: arguments[1])
    }
    var logger = Logger(label: "understudy")
    if ProcessInfo.processInfo.environment["UNDERSTUDY_FIXTURE_TRACE"] != nil { logger.logLevel = .trace }
    let member = try Member(group: configuration, id: MemberID(arguments[3]), weight: weight, store: store, logger: logger)
    signal(SIGTERM, SIG_IGN)
    let termination = DispatchSource.makeSignalSource(signal: SIGTERM)
    termination.setEventHandler { member.leave() }
    termination.resume()
    try await member.whileActiveSupervised { activation in
        let validUntil = Mutex(Instant.zero)
        log.append("start \(activation.token) \(pid) \(MonotonicClock.now().nanoseconds)")
        let watcher = Task {
            for await update in activation.leaseUpdates {
                if case .validUntil(let instant) = update { validUntil.withLock { $0 = instant } }
            }
        }
        defer {
            watcher.cancel()
            log.append("stop \(activation.token) \(pid) \(MonotonicClock.now().nanoseconds) \(validUntil.withLock { $0.nanoseconds })")
        }
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
} catch {
    FileHandle.standardError.write(Data("understudy-fixture: \(error)\n".utf8))
    exit(1)
}
