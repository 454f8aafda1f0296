// Continuity across failover: a feed generator, a publisher group and a checking sink, as separate processes
// around one PostgreSQL server (the feed is a notification channel, the store and the sink are schemas).
//
//   swift run feed-publisher demo --postgres postgres://user:password@127.0.0.1:5432/postgres
//
// runs the generator, three publishers and the checker, kills, freezes and stops the active one in turn, and
// prints what the sink saw (see README.md beside this file).
import ArgumentParser
import ExampleFeed
import Foundation
import Logging
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyPostgres

@main
struct FeedPublisher: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A continuous publisher group: its output crosses failover with no hole and no duplicate.",
        subcommands: [Demo.self, Generate.self, Publish.self, Check.self]
    )
}

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send messages 1, 2, … to the feed channel until SIGTERM; then print sent=N final=true.")

    @Option(help: "The PostgreSQL server of the feed channel.") var postgres: String
    @Option(help: "The notification channel.") var channel = "feed"
    @Option(help: "Messages per second.") var rate = 1_000

    func run() async throws {
        let stopping = Mutex(false)
        let signals = onSignals([SIGTERM, SIGINT]) { stopping.withLock { $0 = true } }
        let sent = try await Feed.generate(url: postgres, channel: channel, rate: rate, first: 1) { stopping.withLock { $0 } }
        report(["sent": "\(sent)", "final": "true"])
        withExtendedLifetime(signals) {}
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one member of the publisher group; print its activations, re-sends, gaps and fencing.")

    @Option(help: "The PostgreSQL server (feed, store and sink).") var postgres: String
    @Option(help: "The store's schema.") var storeSchema = "feed_store"
    @Option(help: "The sink's schema.") var sinkSchema = "feed_sink"
    @Option(help: "The notification channel.") var channel = "feed"
    @Option(help: "The group, which is also the sink's stream.") var group = "feed-publisher"
    @Option(help: "The member's id.") var id: String
    @Option(help: "Heartbeat interval I.", transform: duration) var heartbeat = Duration.milliseconds(200)
    @Option(help: "Activation interval T.", transform: duration) var activation = Duration.seconds(1)
    @Option(help: "The most unconfirmed messages a member keeps.") var backlog = 100_000

    func run() async throws {
        var logger = Logger(label: "feed-publisher")
        logger.logLevel = .warning
        let store = try await PostgresStore(url: schemaURL(postgres, storeSchema), logger: logger)
        let sink = try await PostgresContinuitySink(url: schemaURL(postgres, sinkSchema), stream: group, logger: logger)
        let configuration = try GroupConfiguration(name: GroupName(group), heartbeatInterval: heartbeat, activationInterval: activation)
        let member = try Member(group: configuration, id: MemberID(id), store: store, logger: logger)
        let publisher = ContinuityPublisher(
            member: member, checkpoints: store, checkpoint: try CheckpointName("output"), sink: sink,
            configuration: try ContinuityConfiguration(backlogLimit: backlog), pollInterval: .milliseconds(100), logger: logger
        )
        let feed = try Feed.listen(url: postgres, channel: channel, logger: logger) {
            report(["event": "listening"])
        }
        let signals = onSignals([SIGTERM, SIGINT]) { member.leave() }
        let reporter = Task {
            for await event in publisher.events {
                switch event {
                case .resending(let token, let from, let count, let lastInput):
                    report(["event": "active", "pid": "\(getpid())", "token": "\(token)", "from": "\(from)", "count": "\(count)", "last_input": "\(lastInput)"])
                case .gap(let first, let count):
                    report(["event": "gap", "first": "\(first)", "count": "\(count)"])
                case .fenced(let token, let reason):
                    report(["event": "fenced", "token": "\(token)", "reason": "\"\(reason)\""])
                case .joined(let caughtUp):
                    report(["event": "joined", "caught_up": "\(caughtUp)"])
                case .deactivated(let reason):
                    report(["event": "deactivated", "reason": "\(reason)"])
                case .published(let token, _, let duplicates) where duplicates > 0:
                    report(["event": "duplicates", "token": "\(token)", "count": "\(duplicates)"])
                case .published:
                    break
                }
            }
        }
        report(["event": "started", "pid": "\(getpid())", "id": id])
        try await publisher.run(feed: feed)
        await reporter.value
        report(["event": "left"])
        withExtendedLifetime(signals) {}
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the sink: every sequence 1…N exactly once, in order, with its payload, no gap, epochs never going back.",
        discussion: "Exits 0 when the stream is whole, 1 when it is not, 2 when it did not reach --expect within --wait."
    )

    @Option(help: "The PostgreSQL server of the sink.") var postgres: String
    @Option(help: "The sink's schema.") var sinkSchema = "feed_sink"
    @Option(help: "The stream (the group).") var stream = "feed-publisher"
    @Option(help: "The sequence the stream must reach.") var expect: Int64 = 0
    @Option(help: "How long to wait for it.", transform: duration) var wait = Duration.seconds(30)
    @Option(help: "Then try to append the next sequence under this (stale) epoch and print the answer.") var staleEpoch: UInt64?

    func run() async throws {
        let sink = try await PostgresContinuitySink(url: schemaURL(postgres, sinkSchema), stream: stream)
        defer { sink.close() }
        let verdict = try await Verdict(of: sink, expecting: expect, within: wait)
        verdict.report()
        if let staleEpoch { _ = try await probeStaleWrite(sink, epoch: FencingToken(rawValue: staleEpoch)) }
        if !verdict.problems.isEmpty { throw ExitCode(1) }
        if verdict.stream.position < expect { throw ExitCode(2) }
    }
}

/// What the sink holds, checked record by record: every sequence 1…position exactly once, in order, with the
/// payload the generator sent, no gap, and the epoch never going back.
struct Verdict {
    var stream: ContinuityStream
    /// How many times the epoch changed along the stream.
    var epochs = 0
    var problems: [String] = []

    /// Waits up to `wait` for the stream to reach `expect`, then reads and checks it all.
    init(of sink: PostgresContinuitySink, expecting expect: Int64, within wait: Duration) async throws {
        let deadline = ContinuousClock.now + wait
        while try await sink.position().position < expect, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        stream = try await sink.position()
        var (next, epoch): (Int64, UInt64) = (1, 0)
        while true {
            let page = try await sink.records(after: next - 1)
            if page.isEmpty { break }
            for stored in page {
                switch stored.record {
                case .message(let sequence, let payload):
                    if sequence != next { problems.append("expected \(next), found \(sequence)") }
                    if payload != Feed.payload(sequence) { problems.append("\(sequence) has the wrong payload") }
                case .gap(let first, let count):
                    problems.append("gap of \(count) from \(first)")
                }
                if stored.epoch.rawValue < epoch { problems.append("\(stored.record.first) written under epoch \(stored.epoch) after \(epoch)") }
                if stored.epoch.rawValue > epoch { epochs += 1 }
                epoch = max(epoch, stored.epoch.rawValue)
                next = stored.record.last + 1
            }
        }
        if next - 1 != stream.position { problems.append("the records end at \(next - 1), the stream's position is \(stream.position)") }
        if stream.position < expect { problems.append("the stream reached \(stream.position) of \(expect)") }
    }

    func report() {
        ExampleFeed.report(["position": "\(stream.position)", "epoch": "\(stream.epoch)", "epochs": "\(epochs)", "problems": "\(problems.count)"])
        for problem in problems.prefix(20) { ExampleFeed.report(["problem": "\"\(problem)\""]) }
    }
}

/// Appends the next sequence under `epoch` and prints the sink's answer (`stale_write=refused` for a stale one);
/// whether it was refused.
@discardableResult
func probeStaleWrite(_ sink: PostgresContinuitySink, epoch: FencingToken) async throws -> Bool {
    let next = try await sink.position().position + 1
    let answer = try await sink.append([.message(sequence: next, payload: Feed.payload(next))], epoch: epoch)
    let refused = if case .staleEpoch = answer { true } else { false }
    report(["stale_write": refused ? "refused" : "accepted", "answer": "\"\(answer)\""])
    return refused
}

func duration(_ text: String) throws -> Duration {
    do { return try parseDuration(text) } catch { throw ValidationError("\(error)") }
}
