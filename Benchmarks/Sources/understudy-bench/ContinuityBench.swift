import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudyStore
#if canImport(Glibc)
import Glibc
#endif

/// `understudy-bench continuity`: issue 18's figures, on one throwaway PostgreSQL server (store, checkpoint and
/// sink): throughput with continuity on and off and the standby's lag, with the library's types in this process;
/// re-sends at failover and the value cache's queries, with the examples' release builds as processes.
struct ContinuityBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "continuity",
        abstract: "Continuity (issue 18): throughput on/off, standby lag, re-send at failover, cache queries around a failover.",
        discussion: """
            Parts (--parts, comma-separated): throughput (the same feed, at most --window messages ahead of the \
            sink, through three publishers in this process: `off`, a Member that appends each batch to the sink under its token, with no backlog, no \
            checkpoint and no standby; `on`, a ContinuityPublisher alone, which keeps its backlog and confirms through \
            the checkpoint; `on+standbys`, the same with standbys receiving the feed in this process), lag (a paced \
            feed through an active and standbys in this process, every instant on CLOCK_BOOTTIME), failover \
            (`feed-publisher demo`, release build), cache (three `value-cache serve`, release build, kill -9 of the \
            active between query rounds).
            """
    )

    @Option(help: "The parts to run (comma-separated).")
    var parts = "throughput,lag,failover,cache"

    @Option(help: "A PostgreSQL URL to use instead of a throwaway server.")
    var postgres: String?

    @Option(help: "Runs of each throughput mode (the modes alternate).")
    var runs = 3

    @Option(help: "Messages per throughput run.")
    var messages = 300_000

    @Option(help: "The most messages the throughput part's feed runs ahead of the sink's position.")
    var window = 5_000

    @Option(help: "Standbys in the `on+standbys` throughput mode and in the lag part.")
    var standbys = 2

    @Option(name: .customLong("batch-limit"), help: "The most records in one batch to the sink (both modes).")
    var batchLimit = 1_000

    @Option(name: .customLong("lag-rates"), help: "Feed rates of the lag part, messages/s, comma-separated.")
    var lagRates = "1000,10000"

    @Option(name: .customLong("lag-duration"), help: "How long the lag part feeds at each rate.")
    var lagDuration = "10s"

    @Option(name: .customLong("lag-feed"), help: "The lag part's feeds, comma-separated: memory (an in-process stream per member) or postgres (a LISTEN connection per member on one notification channel, as the examples' feed).")
    var lagFeed = "memory,postgres"

    @Option(help: "How often a standby reads the checkpoint (ContinuityPublisher's pollInterval).")
    var poll = "200ms"

    @Option(help: "Failovers of the failover part (SIGKILL, SIGSTOP past T, SIGTERM in turn).")
    var failovers = 30

    @Option(name: .customLong("failover-rate"), help: "Feed rate of the failover and cache parts, messages/s.")
    var failoverRate = 1_000

    @Option(name: .customLong("cache-rounds"), help: "kill -9 rounds of the cache part.")
    var cacheRounds = 3

    @Option(name: .customLong("cache-queries"), help: "Queries before and after each failover.")
    var cacheQueries = 300

    @Option(help: "The directory of the examples' release builds (default: the root's .build-release/release).")
    var examples: String?

    func run() async throws {
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.runAll() }
        let selected = Set(parts.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let known: Set<String> = ["throughput", "lag", "failover", "cache"]
        guard selected.isSubset(of: known) else { throw ValidationError("unknown parts: \(selected.subtracting(known).sorted())") }
        let examples = examples ?? Binaries.root + "/.build-release/release"
        if !selected.isDisjoint(with: ["failover", "cache"]) {
            for product in ["feed-publisher"] + (selected.contains("cache") ? ["value-cache"] : [])
            where !FileManager.default.isExecutableFile(atPath: examples + "/" + product) {
                throw BenchError("\(examples)/\(product) is missing: run `swift build -c release --scratch-path .build-release --product \(product)` at the root")
            }
        }
        let url = try postgres ?? ThrowawayPostgres.start()
        say("machine: \(MachineInfo.current().summary)")
        say("command: \(CommandLine.arguments.joined(separator: " "))")
        say("PostgreSQL \(postgres == nil ? "throwaway server on loopback, default settings (fsync on)" : "at the given URL"); " +
            "I = 200ms, T = 800ms; load average at start: \(loadAverage())\n")

        if selected.contains("throughput") { try await throughput(url) }
        if selected.contains("lag") { try await lag(url) }
        if selected.contains("failover") { try failover(url, examples: examples) }
        if selected.contains("cache") { try await cache(url, examples: examples) }
        say("load average at end: \(loadAverage())")
    }

    // MARK: throughput

    private enum Mode: String, CaseIterable {
        case off, on
        case onWithStandbys = "on+standbys"
    }

    private struct ThroughputRun {
        var mode: Mode
        var perSecond: Double
        /// Messages accepted by the sink in each whole second after the feed was offered.
        var windows: [Double]
        var cpuSeconds: Double
        var serverCPUSeconds: Double
        var batches: Int
        /// The longest time between two accepted batches, in ms.
        var longestStall: Double
        /// Activations seen during the run (1 without a failover).
        var activations: Int
    }

    private func throughput(_ url: String) async throws {
        let store = try await PostgresStore(url: url, logger: quietLogger)
        var results: [ThroughputRun] = []
        for run in 0..<runs {
            // Alternate the order, so a burst of load from elsewhere does not always fall on the same mode.
            let order = run % 2 == 0 ? Mode.allCases : Mode.allCases.reversed()
            for mode in order {
                note("continuity throughput: run \(run + 1)/\(runs), \(mode.rawValue)")
                results.append(try await throughputRun(mode, url: url, store: store))
            }
        }
        try? await store.close()
        say("## Throughput: \(messages) messages per run, the feed at most \(window) ahead of the sink, batches of at most \(batchLimit), \(runs) runs per mode")
        say("off: a Member appending each batch to the sink under its token (no backlog, no checkpoint, no standby); " +
            "on: ContinuityPublisher alone (backlog + confirmation); on+standbys: and \(standbys) standby ContinuityPublishers in this process\n")
        var rows: [[String]] = []
        for mode in Mode.allCases {
            let mine = results.filter { $0.mode == mode }
            guard let perRun = Distribution(milliseconds: mine.map(\.perSecond)) else { continue }
            let windows = Distribution(milliseconds: mine.flatMap(\.windows))
            let total = Double(messages * mine.count)
            rows.append([
                mode.rawValue, "\(mine.count)", rate(perRun.min), rate(perRun.p50), rate(perRun.max),
                "\(windows?.samples ?? 0)", windows.map { rate($0.min) } ?? "-", windows.map { rate($0.p50) } ?? "-", windows.map { rate($0.max) } ?? "-",
                String(format: "%.1f", 1e6 / perRun.p50),
                String(format: "%.1f", mine.map(\.cpuSeconds).reduce(0, +) / total * 1e6),
                String(format: "%.1f", mine.map(\.serverCPUSeconds).reduce(0, +) / total * 1e6),
                String(format: "%.0f", Double(mine.map(\.batches).reduce(0, +)) / Double(mine.count)),
                ms(mine.map(\.longestStall).max() ?? 0),
                "\(mine.map(\.activations).reduce(0, +) - mine.count)",
            ])
        }
        say(table(
            ["mode", "runs", "msg/s min", "p50", "max", "1-s windows", "min", "p50", "max", "wall µs/msg (p50)", "CPU µs/msg (bench)", "CPU µs/msg (PostgreSQL)", "batches/run", "longest stall (ms)", "failovers"],
            rows
        ))
        say("")
    }

    private func throughputRun(_ mode: Mode, url: String, store: PostgresStore) async throws -> ThroughputRun {
        let run = String(UUID().uuidString.lowercased().prefix(8))
        let group = try GroupName("cont-tp-\(run)")
        let base = try await PostgresContinuitySink(url: url, stream: "cont-tp-\(run)", logger: quietLogger)
        defer { base.close() }
        let sink = StampingSink(base)
        let members = mode == .onWithStandbys ? 1 + standbys : 1
        let feeds = (0..<members).map { _ in AsyncStream<FeedMessage>.makeStream() }
        var tasks: [Task<Void, any Error>] = []
        var leave: [Member] = []
        var watchers: [EventWatcher] = []
        defer {
            for member in leave { member.leave() }
        }
        switch mode {
        case .off:
            let member = try Member(group: configuration(group), id: MemberID("a"), store: store, logger: quietLogger)
            leave.append(member)
            let publisher = PlainPublisher(member: member, sink: sink, batchLimit: batchLimit)
            tasks.append(Task { try await publisher.run(feed: feeds[0].stream) })
            try await waitUntil("the plain publisher activates") { await publisher.isActive }
        case .on, .onWithStandbys:
            for index in 0..<members {
                let member = try Member(group: configuration(group), id: MemberID(index == 0 ? "a" : "s\(index)"), store: store, logger: quietLogger)
                leave.append(member)
                let publisher = try continuityPublisher(member, checkpoints: store, group: group, sink: sink)
                let watcher = EventWatcher(publisher)
                watchers.append(watcher)
                tasks.append(Task { try await publisher.run(feed: feeds[index].stream) })
                // The first one becomes the active; the others join as standbys.
                try await waitUntil(index == 0 ? "the publisher activates" : "standby \(index) joins") {
                    index == 0 ? watcher.activations > 0 : watcher.joined
                }
            }
        }
        let (cpu0, server0, start) = (processCPUSeconds(), cpuSeconds(ofProcessesNamed: "postgres"), boottime())
        // Closed loop: the feed runs at most `window` messages ahead of the sink, as fast as the sink takes them.
        var next: Int64 = 1
        let total = Int64(messages)
        while sink.position < total {
            let target = min(total, sink.position + Int64(window))
            while next <= target {
                let message = FeedMessage(sequence: next, payload: Array("m\(next)".utf8))
                for feed in feeds { feed.continuation.yield(message) }
                next += 1
                // A large --window must not keep this task on a thread of the (2-wide) cooperative pool.
                if next % 1_000 == 0 { await Task.yield() }
            }
            try await Task.sleep(for: .microseconds(200))
            guard boottime() - start < 120_000_000_000 else { throw BenchError("the sink did not reach \(messages) within 120 s") }
        }
        let (cpu1, server1) = (processCPUSeconds(), cpuSeconds(ofProcessesNamed: "postgres"))
        let stamps = sink.stamps
        let end = stamps.first { $0.position >= Int64(messages) }?.at ?? boottime()
        for member in leave { member.leave() }
        leave = []
        for feed in feeds { feed.continuation.finish() }
        for task in tasks { _ = try? await task.value }
        var windows: [Double] = []
        var second = start + 1_000_000_000
        var previous: Int64 = 0
        var index = 0
        var reached: Int64 = 0
        while second <= end {
            while index < stamps.count, stamps[index].at <= second {
                reached = stamps[index].position
                index += 1
            }
            windows.append(Double(reached - previous))
            previous = reached
            second += 1_000_000_000
        }
        let instants = [start] + stamps.map(\.at)
        let longestStall = zip(instants, instants.dropFirst()).map { Double($1 - $0) / 1e6 }.max() ?? 0
        return ThroughputRun(
            mode: mode, perSecond: Double(messages) / (Double(end - start) / 1e9), windows: windows,
            cpuSeconds: cpu1 - cpu0, serverCPUSeconds: server1 - server0, batches: stamps.count,
            longestStall: longestStall, activations: mode == .off ? 1 : watchers.map(\.activations).reduce(0, +)
        )
    }

    // MARK: lag

    private func lag(_ url: String) async throws {
        let store = try await PostgresStore(url: url, logger: quietLogger)
        let rates = lagRates.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let seconds = try parseDuration(lagDuration)
        say("## Standby lag: 1 active and \(standbys) standbys in this process, each with its own feed from one paced generator " +
            "(memory: an in-process stream each, fed every 1 ms; postgres: a LISTEN connection each on one notification channel, " +
            "pg_notify every 10 ms as the examples' generator does); " +
            "standbys read the checkpoint every \(poll); \(seconds.formatted) per rate; every instant on CLOCK_BOOTTIME")
        say("received: when the publisher's feed loop took message n (one queue hop before its state machine appends it to the backlog); " +
            "published: when the sink's answer accepting n returned to the active; confirmed: when the active's checkpoint write covering n returned accepted; " +
            "trimmed: when a standby's checkpoint read covering n returned (it then drops n from its backlog)\n")
        var rows: [[String]] = []
        let kinds = lagFeed.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard kinds.allSatisfy({ ["memory", "postgres"].contains($0) }) else { throw ValidationError("--lag-feed takes memory and postgres") }
        for kind in kinds {
            for rate in rates {
                note("continuity lag: \(kind) feed, \(rate) messages/s for \(seconds.formatted)")
                for (label, values) in try await lagRun(rate: rate, duration: seconds, url: url, store: store, channel: kind == "postgres") {
                    guard let d = Distribution(milliseconds: values) else { continue }
                    rows.append([kind, "\(rate)", label, "\(d.samples)", ms(d.min), ms(d.p50), ms(d.p90), ms(d.p99), ms(d.max)])
                }
            }
        }
        try? await store.close()
        say(table(["feed", "msg/s", "interval (ms)", "n", "min", "p50", "p90", "p99", "max"], rows))
        say("")
    }

    private func lagRun(rate: Int, duration: Duration, url: String, store: PostgresStore, channel: Bool) async throws -> [(String, [Double])] {
        let run = String(UUID().uuidString.lowercased().prefix(8))
        let group = try GroupName("cont-lag-\(run)")
        let base = try await PostgresContinuitySink(url: url, stream: "cont-lag-\(run)", logger: quietLogger)
        defer { base.close() }
        let sink = StampingSink(base)
        let count = Int(Double(rate) * duration.milliseconds / 1_000)
        let members = 1 + standbys
        let feeds = (0..<members).map { _ in AsyncStream<FeedMessage>.makeStream() }
        let receipts = (0..<members).map { _ in ReceiptStamps(count: count) }
        let channelName = "cont_lag_\(run)"
        let listeners: [NotificationListener] = try channel ? (0..<members).map { index in
            try NotificationListener(url: url, channel: channelName, into: feeds[index].continuation)
        } : []
        defer {
            for listener in listeners { listener.stop() }
        }
        for listener in listeners { try await listener.waitUntilListening() }
        let checkpoints = (0..<members).map { _ in StampingCheckpoints(store) }
        var tasks: [Task<Void, any Error>] = []
        var all: [Member] = []
        defer {
            for member in all { member.leave() }
        }
        for index in 0..<members {
            let member = try Member(group: configuration(group), id: MemberID(index == 0 ? "a" : "s\(index)"), store: store, logger: quietLogger)
            all.append(member)
            let publisher = try continuityPublisher(member, checkpoints: checkpoints[index], group: group, sink: sink)
            let watcher = EventWatcher(publisher)
            let feed = StampingFeed(base: feeds[index].stream, stamps: receipts[index])
            tasks.append(Task { try await publisher.run(feed: feed) })
            try await waitUntil(index == 0 ? "the publisher activates" : "standby \(index) joins") {
                index == 0 ? watcher.activations > 0 : watcher.joined
            }
        }
        if channel {
            try await notify(url: url, channel: channelName, rate: rate, count: count)
        } else {
            // The generator: every millisecond, the messages due by then, to every member's stream.
            let start = boottime()
            var next: Int64 = 1
            while next <= Int64(count) {
                let due = min(Int64(count), Int64(Double(boottime() - start) / 1e9 * Double(rate)) + 1)
                while next <= due {
                    let message = FeedMessage(sequence: next, payload: Array("m\(next)".utf8))
                    for feed in feeds { feed.continuation.yield(message) }
                    next += 1
                }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        try await waitUntil("the sink reaches \(count)", timeout: .seconds(120), every: .milliseconds(5)) { sink.position >= Int64(count) }
        // Until every standby has read a checkpoint covering the last message.
        try await waitUntil("the standbys trim", timeout: .seconds(30), every: .milliseconds(5)) {
            checkpoints.dropFirst().allSatisfy { ($0.reads.last?.position ?? 0) >= Int64(count) }
        }
        for member in all { member.leave() }
        all = []
        for feed in feeds { feed.continuation.finish() }
        for task in tasks { _ = try? await task.value }

        /// For each sequence 1…count, the first stamp whose position covers it.
        func covering(_ stamps: [PositionStamp]) -> [Int64?] {
            var result = [Int64?](repeating: nil, count: count + 1)
            var sequence = 1
            for stamp in stamps {
                while sequence <= count, Int64(sequence) <= stamp.position {
                    result[sequence] = stamp.at
                    sequence += 1
                }
            }
            return result
        }
        let published = covering(sink.stamps)
        let confirmed = covering(checkpoints[0].writes)
        let activeReceived = receipts[0].stamps
        func interval(_ from: [Int64?], _ to: [Int64?]) -> [Double] {
            (1...count).compactMap { n in
                guard let a = from[n], let b = to[n] else { return nil }
                return Double(b - a) / 1e6
            }
        }
        var result: [(String, [Double])] = [
            ("active: received → published", interval(activeReceived, published)),
            ("active: published → confirmed", interval(published, confirmed)),
        ]
        var standbyReceived: [Double] = [], beforePublished: [Double] = [], trimAfterConfirm: [Double] = [], held: [Double] = []
        for index in 1..<members {
            let received = receipts[index].stamps
            let trimmed = covering(checkpoints[index].reads)
            standbyReceived += interval(activeReceived, received)
            beforePublished += interval(published, received)
            trimAfterConfirm += interval(confirmed, trimmed)
            held += interval(received, trimmed)
        }
        result += [
            ("standby received − active received", standbyReceived),
            ("standby received − active published", beforePublished),
            ("standby trimmed − active confirmed", trimAfterConfirm),
            ("standby: received → trimmed (held)", held),
        ]
        return result
    }

    // MARK: failover

    private func failover(_ url: String, examples: String) throws {
        let directory = try makeTemporaryDirectory("understudy-bench-continuity")
        let log = directory + "/demo.log"
        note("continuity failover: feed-publisher demo, \(failovers) failovers at \(failoverRate) messages/s")
        let began = boottime()
        let pid = try spawn([
            examples + "/feed-publisher", "demo", "--postgres", url, "--failovers", "\(failovers)", "--rate", "\(failoverRate)",
            "--logs", directory + "/logs",
        ], log: log)
        let status = reap(pid, timeout: .seconds(1_800))
        let took = Double(boottime() - began) / 1e9
        let lines = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(fields)
        let rows = lines.filter { $0["failover"] != nil }
        let result = lines.last { $0["result"] != nil }
        say("## Re-send at failover: `feed-publisher demo` (release), 3 publishers, \(failovers) failovers at \(failoverRate) messages/s, " +
            "feed on a PostgreSQL notification channel; took \(String(format: "%.0f", took)) s, exit status \(status >> 8)")
        say("result: " + (result.map { r in ["result", "sent", "failovers", "resent", "fenced", "gaps"].map { "\($0)=\(r[$0] ?? "?")" }.joined(separator: " ") } ?? "none (see \(log))"))
        let mismatched = rows.filter { $0["resent"] != $0["window"] }.count
        say("re-sends that were not the whole unconfirmed window: \(mismatched)\n")
        var kinds: [[String]] = []
        for (kind, label) in [("kill", "SIGKILL"), ("stop", "SIGSTOP past T"), ("term", "SIGTERM (orderly handover)")] {
            let mine = rows.filter { $0["kind"] == kind }
            let times = mine.compactMap { $0["took"].flatMap(milliseconds) }
            let sizes = mine.compactMap { $0["resent"].flatMap(Double.init) }
            guard let t = Distribution(milliseconds: times), let s = Distribution(milliseconds: sizes) else { continue }
            kinds.append([label, "\(mine.count)", ms(t.p50), ms(t.p99), ms(t.max), count(s.p50), count(s.p99), count(s.max)])
        }
        say(table(["failover by", "n", "new active re-sending after p50 (ms)", "p99", "max", "re-sent p50 (messages)", "p99", "max"], kinds))
        say("")
    }

    // MARK: cache

    private func cache(_ url: String, examples: String) async throws {
        let directory = try makeTemporaryDirectory("understudy-bench-cache")
        let run = String(UUID().uuidString.lowercased().prefix(8))
        let shared = ["--postgres", url, "--channel", "cache_\(run)", "--store-schema", "cache_store_\(run)", "--group", "cache-\(run)"]
        var incarnation = 0
        func start() throws -> (pid: pid_t, port: Int) {
            incarnation += 1
            let port = freePort()
            let pid = try spawn([examples + "/value-cache", "serve"] + shared + ["--id", "m\(incarnation)", "--port", "\(port)"],
                                log: "\(directory)/m\(incarnation).log")
            return (pid, port)
        }
        var members = try (0..<3).map { _ in try start() }
        let generator = try spawn([examples + "/feed-publisher", "generate", "--postgres", url, "--channel", "cache_\(run)", "--rate", "\(failoverRate)"],
                                  log: "\(directory)/generator.log")
        defer {
            for member in members { kill(member.pid, SIGKILL); reap(member.pid) }
            kill(generator, SIGKILL)
            reap(generator)
        }
        note("continuity cache: \(cacheRounds) rounds of \(cacheQueries) queries, kill -9, \(cacheQueries) queries")
        var before: [Double] = [], after: [Double] = [], takeover: [Double] = [], failed = 0
        for round in 0..<cacheRounds {
            // An active that answers a subject, all members up, and a second of feed since the last restart.
            try await waitUntil("a value-cache member answers", timeout: .seconds(60), every: .milliseconds(50)) {
                members.contains { httpGet($0.port, "/value/s1")?.status == 200 }
            }
            try await Task.sleep(for: .seconds(1))
            guard let active = members.firstIndex(where: { httpGet($0.port, "/value/s1")?.status == 200 }) else { continue }
            note("continuity cache: round \(round + 1)/\(cacheRounds)")
            for query in 0..<cacheQueries {
                let (status, took) = timedGet(members[active].port, "/value/s\(query % 100)")
                if status == 200 { before.append(took) } else { failed += 1 }
            }
            let killed = boottime()
            kill(members[active].pid, SIGKILL)
            reap(members[active].pid)
            let others = members.indices.filter { $0 != active }
            var next: Int?
            while next == nil, boottime() - killed < 30_000_000_000 {
                next = others.first { httpGet(members[$0].port, "/value/s1")?.status == 200 }
                if next == nil { sleep(milliseconds: 5) }
            }
            guard let next else { throw BenchError("no value-cache member took over within 30 s; see \(directory)") }
            takeover.append(Double(boottime() - killed) / 1e6)
            for query in 0..<cacheQueries {
                let (status, took) = timedGet(members[next].port, "/value/s\(query % 100)")
                if status == 200 { after.append(took) } else { failed += 1 }
            }
            members[active] = try start()
        }
        say("## Value cache: 3 `value-cache serve` (release), feed at \(failoverRate) messages/s; \(cacheRounds) rounds of \(cacheQueries) queries " +
            "(`GET /value/s<k>`, a new TCP connection each, from this process) on the active, kill -9 of it, then \(cacheQueries) on the new active; " +
            "queries not answered 200: \(failed)\n")
        var rows: [[String]] = []
        for (label, values) in [("query on the active, before (ms)", before), ("query on the new active, right after (ms)", after), ("kill -9 → the new active answers (ms)", takeover)] {
            guard let d = Distribution(milliseconds: values) else { continue }
            rows.append([label, "\(d.samples)", String(format: "%.2f", d.p50), String(format: "%.2f", d.p99), String(format: "%.2f", d.max)])
        }
        say(table(["", "n", "p50", "p99", "max"], rows))
        say("")
    }

    // MARK: Helpers

    private var quietLogger: Logger {
        var logger = Logger(label: "understudy-bench")
        logger.logLevel = .error
        return logger
    }

    private func configuration(_ group: GroupName) throws -> GroupConfiguration {
        try GroupConfiguration(name: group, heartbeatInterval: .milliseconds(200), activationInterval: .milliseconds(800))
    }

    private func continuityPublisher(_ member: Member, checkpoints: any CheckpointStore, group: GroupName, sink: any ContinuitySink) throws -> ContinuityPublisher {
        ContinuityPublisher(
            member: member, checkpoints: checkpoints, checkpoint: try CheckpointName("output"), sink: sink,
            configuration: try ContinuityConfiguration(backlogLimit: max(100_000, messages), batchLimit: batchLimit),
            pollInterval: try parseDuration(poll),
            // Join at once: the benchmark starts the feed only once the active and the standbys are in place.
            warmUp: .milliseconds(1), logger: quietLogger
        )
    }

    private func waitUntil(_ what: String, timeout: Duration = .seconds(30), every: Duration = .milliseconds(5), _ condition: () async throws -> Bool) async throws {
        let deadline = boottime() + timeout.components.seconds * 1_000_000_000
        while try await !condition() {
            guard boottime() < deadline else { throw BenchError("timed out waiting until \(what)") }
            try await Task.sleep(for: every)
        }
    }

    private func rate(_ value: Double) -> String { value >= 1_000 ? String(format: "%.0f", value) : String(format: "%.1f", value) }
    private func ms(_ value: Double) -> String { String(format: value.magnitude >= 100 ? "%.0f" : "%.2f", value) }
    private func count(_ value: Double) -> String { String(format: "%.0f", value) }
}

// MARK: Instruments

/// An instant on CLOCK_BOOTTIME (ns) and the stream position it stands for.
struct PositionStamp: Sendable {
    var at: Int64
    var position: Int64
}

/// A sink that stamps each accepted batch with the instant its answer returned and the position it reached.
final class StampingSink: ContinuitySink {
    private let base: any ContinuitySink
    private let accepted = Mutex<[PositionStamp]>([])
    private let reached = Atomic<Int64>(0)

    init(_ base: any ContinuitySink) { self.base = base }

    func append(_ records: [ContinuityRecord], epoch: FencingToken) async throws -> ContinuityAppend {
        let answer = try await base.append(records, epoch: epoch)
        if case .accepted(let position, _) = answer {
            let now = boottime()
            accepted.withLock { $0.append(PositionStamp(at: now, position: position)) }
            reached.store(position, ordering: .releasing)
        }
        return answer
    }

    var stamps: [PositionStamp] { accepted.withLock { $0 } }
    var position: Int64 { reached.load(ordering: .acquiring) }
}

/// A checkpoint store that stamps the positions it returns to readers and the positions of accepted writes.
final class StampingCheckpoints: CheckpointStore {
    private let base: any CheckpointStore
    private let state = Mutex<(reads: [PositionStamp], writes: [PositionStamp])>(([], []))

    init(_ base: any CheckpointStore) { self.base = base }

    func checkpoint(of group: GroupName, named name: CheckpointName) async throws -> Checkpoint? {
        let checkpoint = try await base.checkpoint(of: group, named: name)
        if let position = ContinuityPosition.decode(checkpoint?.value) {
            let now = boottime()
            state.withLock { $0.reads.append(PositionStamp(at: now, position: position)) }
        }
        return checkpoint
    }

    func writeCheckpoint(of group: GroupName, named name: CheckpointName, value: [UInt8], token: FencingToken) async throws -> CheckpointWrite {
        let write = try await base.writeCheckpoint(of: group, named: name, value: value, token: token)
        if case .accepted = write, let position = ContinuityPosition.decode(value) {
            let now = boottime()
            state.withLock { $0.writes.append(PositionStamp(at: now, position: position)) }
        }
        return write
    }

    var reads: [PositionStamp] { state.withLock { $0.reads } }
    var writes: [PositionStamp] { state.withLock { $0.writes } }
}

/// The instant each sequence 1…count was taken from a feed.
final class ReceiptStamps: Sendable {
    private let instants: Mutex<[Int64?]>

    init(count: Int) { instants = Mutex([Int64?](repeating: nil, count: count + 1)) }

    func record(_ sequence: Int64, at instant: Int64) {
        instants.withLock { instants in
            if sequence >= 0, sequence < instants.count, instants[Int(sequence)] == nil { instants[Int(sequence)] = instant }
        }
    }

    var stamps: [Int64?] { instants.withLock { $0 } }
}

/// A feed that stamps each message as the publisher's feed loop takes it.
struct StampingFeed: AsyncSequence, Sendable {
    typealias Element = FeedMessage
    let base: AsyncStream<FeedMessage>
    let stamps: ReceiptStamps

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<FeedMessage>.AsyncIterator
        let stamps: ReceiptStamps

        mutating func next() async -> FeedMessage? {
            let message = await base.next()
            if let message { stamps.record(message.sequence, at: boottime()) }
            return message
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), stamps: stamps) }
}

/// Counts a publisher's activations and notes that it joined, consuming its events.
final class EventWatcher: Sendable {
    private let state = Mutex<(activations: Int, joined: Bool)>((0, false))

    init(_ publisher: ContinuityPublisher) {
        let events = publisher.events
        Task { await self.consume(events) }
    }

    private func consume(_ events: AsyncStream<ContinuityEvent>) async {
        for await event in events {
            switch event {
            case .resending: state.withLock { $0.activations += 1 }
            case .joined: state.withLock { $0.joined = true }
            case .gap, .fenced, .deactivated, .published: break
            }
        }
    }

    var activations: Int { state.withLock { $0.activations } }
    var joined: Bool { state.withLock { $0.joined } }
}

/// Continuity off: fenced publishing and nothing more. While its member is active, it appends what the feed
/// brought since the last batch (at most `batchLimit` records) to the sink under the member's token; it keeps no
/// backlog for a successor, writes no checkpoint, and a standby would have nothing to re-send. Inputs received
/// while it is not active are dropped. Like ``ContinuityPublisher``, its feed loop only queues (here under a lock)
/// and one writer sends a batch at a time.
final class PlainPublisher: Sendable {
    private struct State {
        var token: FencingToken?
        var pending: [FeedMessage] = []
    }

    private let member: Member
    private let sink: any ContinuitySink
    private let batchLimit: Int
    private let state = Mutex(State())
    private let doorbell: AsyncStream<Void>
    private let ring: AsyncStream<Void>.Continuation

    init(member: Member, sink: any ContinuitySink, batchLimit: Int) {
        self.member = member
        self.sink = sink
        self.batchLimit = batchLimit
        (doorbell, ring) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    var isActive: Bool { state.withLock { $0.token != nil } }

    func run(feed: AsyncStream<FeedMessage>) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                for await event in self.member.events {
                    self.state.withLock { state in
                        switch event {
                        case .activate(let token): state.token = token
                        case .deactivate: state.token = nil
                        case .prepareToActivate, .prepareWithdrawn: break
                        }
                    }
                }
            }
            group.addTask {
                for await message in feed {
                    self.state.withLock { state in
                        if state.token != nil { state.pending.append(message) }
                    }
                    self.ring.yield()
                }
            }
            group.addTask { await self.write() }
            try await member.run()
            group.cancelAll()
        }
    }

    /// One batch at a time, each with whatever is pending (at most `batchLimit`).
    private func write() async {
        for await _ in doorbell {
            while true {
                let (token, records): (FencingToken?, [ContinuityRecord]) = state.withLock { state in
                    let batch = state.pending.prefix(batchLimit)
                    state.pending.removeFirst(batch.count)
                    return (state.token, batch.map { ContinuityRecord.message(sequence: $0.sequence, payload: $0.payload) })
                }
                guard let token, !records.isEmpty else { break }
                let answer: Result<ContinuityAppend, any Error>
                do { answer = .success(try await sink.append(records, epoch: token)) } catch { answer = .failure(error) }
                guard case .success(.accepted) = answer else {
                    note("the plain publisher stops: the sink answered \(answer)")  // a benchmark does not retry
                    state.withLock { $0.token = nil }
                    return
                }
            }
        }
    }
}

// MARK: A feed on a notification channel

private func feedConfiguration(_ url: String) throws -> PostgresClient.Configuration {
    let location = try PostgresLocation(url)
    return PostgresClient.Configuration(
        host: location.host, port: location.port, username: location.user, password: location.password,
        database: location.database, tls: .disable
    )
}

/// Sends messages 1…count on `channel` at `rate`, one statement per 10 ms, as `feed-publisher generate` does.
private func notify(url: String, channel: String, rate: Int, count: Int) async throws {
    let client = PostgresClient(configuration: try feedConfiguration(url))
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await client.run() }
        defer { group.cancelAll() }
        let start = boottime()
        var next: Int64 = 1
        while next <= Int64(count) {
            let due = min(Int64(count), Int64(Double(boottime() - start) / 1e9 * Double(rate)) + 1)
            if due >= next {
                _ = try await client.query(
                    "SELECT pg_notify(\(channel), s::text || ':m' || s::text) FROM generate_series(\(next)::bigint, \(due)::bigint) AS s"
                )
                next = due + 1
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// One LISTEN connection on `channel`, yielding each `n:payload` notification as message n.
final class NotificationListener: Sendable {
    private final class Flag: Sendable {
        let value = Atomic<Bool>(false)
    }

    private let task: Task<Void, Never>
    private let listening = Flag()

    init(url: String, channel: String, into continuation: AsyncStream<FeedMessage>.Continuation) throws {
        let configuration = try feedConfiguration(url)
        let listening = listening
        task = Task {
            let client = PostgresClient(configuration: configuration)
            await withDiscardingTaskGroup { group in
                group.addTask { await client.run() }
                do {
                    try await client.withConnection { connection in
                        try await connection.listen(on: channel) { notifications in
                            listening.value.store(true, ordering: .releasing)
                            for try await notification in notifications {
                                let parts = notification.payload.split(separator: ":", maxSplits: 1)
                                guard parts.count == 2, let sequence = Int64(parts[0]) else { continue }
                                continuation.yield(FeedMessage(sequence: sequence, payload: Array(parts[1].utf8)))
                            }
                        }
                    }
                } catch {
                    if !Task.isCancelled { note("listening to \(channel) failed: \(error)") }
                }
                group.cancelAll()
            }
        }
    }

    func waitUntilListening() async throws {
        let deadline = boottime() + 10_000_000_000
        while !listening.value.load(ordering: .acquiring) {
            guard boottime() < deadline else { throw BenchError("LISTEN did not start within 10 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func stop() { task.cancel() }
}

// MARK: Processes' output and HTTP

/// The `key=value` fields of a line.
private func fields(_ line: Substring) -> [String: String] {
    Dictionary(line.split(separator: " ").compactMap { field -> (String, String)? in
        let parts = field.split(separator: "=", maxSplits: 1)
        return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
    }, uniquingKeysWith: { _, last in last })
}

/// `733ms`, `1.2s`, `950µs` in milliseconds.
private func milliseconds(_ text: String) -> Double? {
    for (suffix, scale) in [("ms", 1.0), ("µs", 1e-3), ("ns", 1e-6), ("s", 1e3)] where text.hasSuffix(suffix) {
        return Double(text.dropLast(suffix.count)).map { $0 * scale }
    }
    return nil
}

private func loadAverage() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
}

/// One GET on a new connection and how long it took, in ms (status 0 when it failed).
private func timedGet(_ port: Int, _ path: String) -> (status: Int, milliseconds: Double) {
    let start = boottime()
    let status = httpGet(port, path)?.status ?? 0
    return (status, Double(boottime() - start) / 1e6)
}

/// A plain HTTP/1.1 GET on 127.0.0.1, with `Connection: close`.
func httpGet(_ port: Int, _ path: String) -> (status: Int, body: String)? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16_384)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count > 0 else { break }
        response += buffer[..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let headerEnd = text.range(of: "\r\n\r\n"),
          let statusField = text[..<headerEnd.lowerBound].split(separator: " ").dropFirst().first,
          let status = Int(statusField)
    else { return nil }
    return (status, String(text[headerEnd.upperBound...]))
}

