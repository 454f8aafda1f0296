import Foundation
import UnderstudyCore
#if canImport(Glibc)
import Glibc
#endif

struct QueueFailoverResult: Codable, Sendable {
    var store: String
    var leaseMilliseconds: Double
    var pollMilliseconds: Double
    var rounds: Int
    /// Per job the killed worker held: from just before kill() to the job's command stamping its start under
    /// another worker.
    var samplesMilliseconds: [Double]
    var distribution: Distribution?
    var timeouts: Int
    /// Jobs whose old command still ran when the new one started.
    var oldCommandStillRunning: Int
}

/// Real `understudy queue work` processes (two, two commands each): each round pushes two jobs whose command
/// stamps its start (job id as label) and sleeps; once both run, after a random wait of up to I, `kill -9` of the
/// worker holding the first, then the time until each of its jobs starts under the other worker. The jobs are then
/// cancelled and a replacement worker started.
func killedWorkerFailover(
    binary: String, child: String, target: QueueTarget, rounds: Int, lease: Duration, leaseText: String, pollText: String,
    directory: String
) throws -> QueueFailoverResult {
    let queue = benchQueue
    let prefix = "\(directory)/failover-\(target.kind)"
    let stamps = StampFile(path: "\(prefix).stamps")
    let renewMilliseconds = Int(lease.milliseconds / 3)
    var workers: [pid_t: String] = [:]
    var started = 0
    func startWorker() throws {
        started += 1
        let label = "w\(started)"
        let pid = try spawn([
            binary, "queue", "work", "--store", target.url, "--queue", queue, "--concurrency", "2", "--claim-lease", leaseText,
            "--poll", pollText, "--stop-grace", "1s", "--id", label,
            "--", "/bin/sh", "-c", "exec \"$0\" \"$1\" \"$UNDERSTUDY_JOB_ID\"", child, stamps.path,
        ], log: "\(prefix)-\(label).log")
        workers[pid] = label
    }
    func push() throws -> String {
        let output = try runCommand([binary, "queue", "push", "--store", target.url, "--queue", queue, "{}"]).output
        guard let id = output.split(separator: "\n").last.map({ $0.trimmingCharacters(in: .whitespaces) }), Int(id) != nil else {
            throw BenchError("queue push printed no job id: \(output)")
        }
        return id
    }
    /// The worker among ours that `pid` descends from.
    func worker(of pid: pid_t) -> pid_t? {
        var current = pid
        for _ in 0..<12 {
            if workers[current] != nil { return current }
            guard let parent = parentPID(current), parent > 1 else { return nil }
            current = parent
        }
        return nil
    }
    defer {
        for pid in workers.keys { kill(pid, SIGKILL); reap(pid) }
    }
    try startWorker()
    try startWorker()
    sleep(milliseconds: 1_500)
    var samples: [Double] = []
    var timeouts = 0
    var stillRunning = 0
    for round in 1...rounds {
        stamps.refresh()
        let before = stamps.stamps.count - 1
        let ids = [try push(), try push()]
        var first: [String: Stamp] = [:]
        var index = before
        while first.count < ids.count {
            guard case let (found, stamp)? = stamps.wait(after: index, timeout: .seconds(15), matching: { ids.contains($0.label) }) else {
                throw BenchError("round \(round): jobs \(ids) did not start within 15 s; see \(prefix)-*.log")
            }
            index = found
            first[stamp.label] = first[stamp.label] ?? stamp
        }
        guard let victim = worker(of: first[ids[0]]!.pid) else { throw BenchError("round \(round): cannot tell which worker runs job \(ids[0])") }
        let held = ids.filter { worker(of: first[$0]!.pid) == victim }
        sleep(milliseconds: Int.random(in: 0..<max(1, renewMilliseconds)))
        stamps.refresh()
        let mark = stamps.stamps.count - 1
        let killedAt = boottime()
        kill(victim, SIGKILL)
        var waiting = Set(held)
        var after = mark
        while !waiting.isEmpty {
            guard case let (found, stamp)? = stamps.wait(after: after, timeout: lease * 3, matching: { waiting.contains($0.label) }) else {
                timeouts += waiting.count
                break
            }
            after = found
            waiting.remove(stamp.label)
            samples.append(Double(stamp.at - killedAt) / 1e6)
            if isRunning(first[stamp.label]!.pid) { stillRunning += 1 }
        }
        reap(victim)
        note("queue failover (\(target.kind)) round \(round): worker \(workers[victim] ?? "?") killed holding \(held.count) job(s); "
            + samples.suffix(held.count).map { format($0) + " ms" }.joined(separator: ", "))
        workers[victim] = nil
        for id in ids { _ = try? runCommand([binary, "queue", "cancel", "--store", target.url, id], check: false) }
        try startWorker()
        // The survivor stops the cancelled commands at its next renewal; the new worker starts up meanwhile.
        sleep(milliseconds: renewMilliseconds + 1_000)
    }
    return QueueFailoverResult(
        store: target.kind, leaseMilliseconds: lease.milliseconds, pollMilliseconds: (try? parseDuration(pollText).milliseconds) ?? 0,
        rounds: rounds, samplesMilliseconds: samples, distribution: Distribution(milliseconds: samples), timeouts: timeouts,
        oldCommandStillRunning: stillRunning
    )
}
