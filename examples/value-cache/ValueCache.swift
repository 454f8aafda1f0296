// Parallel data state, as TIBCO Rendezvous's rvcache shows it: every member of the group consumes the same feed
// and keeps the latest value of each subject; only the active answers queries (and says so on /active, for a load
// balancer), so a failover needs no warm-up. A new member starts from a snapshot of a running member, then catches
// up with no gap between the snapshot and the live feed (`SnapshotCatchUp`).
//
//   value-cache serve --postgres URL --id a --port 8081                       # and b, c
//   value-cache serve --postgres URL --id d --port 8084 --bootstrap-from http://127.0.0.1:8081
//   feed-publisher generate --postgres URL                                    # message n sets subject s(n mod 100)
//   curl 127.0.0.1:8081/value/s7      # the active answers; a standby says 503 standby
import ArgumentParser
import ExampleFeed
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import Logging
import Synchronization
import Understudy
import UnderstudyCore
import UnderstudyPostgres

@main
struct ValueCache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A current-value cache with warm standbys: every member keeps every value; only the active answers.",
        subcommands: [Serve.self]
    )
}

/// The subject message `sequence` of the feed updates, among `subjects`.
func subject(of sequence: Int64, among subjects: Int) -> String { "s\(sequence % Int64(subjects))" }

/// What a snapshot carries: the values as of the feed's `sequence`.
struct Snapshot: Codable, Sendable {
    var sequence: Int64
    var values: [String: String]
}

/// The cache's data state, the same on every member that has caught up.
final class Cache: Sendable {
    let state: Mutex<CacheState>

    init(bootstrapping: Bool) { state = Mutex(CacheState(catchUp: SnapshotCatchUp(bootstrapping: bootstrapping))) }
}

struct CacheState: Sendable {
    var values: [String: String] = [:]
    var catchUp: SnapshotCatchUp<String>
    var active: FencingToken?
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one member of the cache group.")

    @Option(help: "The PostgreSQL server (feed and store).") var postgres: String
    @Option(help: "The store's schema.") var storeSchema = "value_cache_store"
    @Option(help: "The feed's notification channel.") var channel = "feed"
    @Option(help: "The group.") var group = "value-cache"
    @Option(help: "The member's id.") var id: String
    @Option(help: "The HTTP port on 127.0.0.1 (0: any free one, printed).") var port = 0
    @Option(help: "How many subjects the feed updates.") var subjects = 100
    @Option(help: "Start from a snapshot of this running member (http://host:port).") var bootstrapFrom: String?
    @Option(help: "Wait this long between fetching the snapshot and loading it (the feed it keeps meanwhile shows the catch-up).", transform: { try parseDuration($0) })
    var snapshotHold = Duration.zero
    @Option(help: "Heartbeat interval I.", transform: { try parseDuration($0) }) var heartbeat = Duration.milliseconds(200)
    @Option(help: "Activation interval T.", transform: { try parseDuration($0) }) var activation = Duration.milliseconds(800)

    func run() async throws {
        var logger = Logger(label: "value-cache")
        logger.logLevel = .warning
        let cache = Cache(bootstrapping: bootstrapFrom != nil)
        let subjects = subjects
        let apply: @Sendable ([SnapshotCatchUp<String>.Action]) -> Void = { actions in
            cache.state.withLock { state in
                for action in actions {
                    switch action {
                    case .apply(let updates):
                        for (sequence, value) in updates { state.values[subject(of: sequence, among: subjects)] = value }
                    case .reportGap(let first, let count):
                        report(["event": "gap", "first": "\(first)", "count": "\(count)"])
                    case .ignored:
                        break
                    }
                }
            }
        }
        // Listen first, so nothing between the snapshot and the live feed is missed.
        let (listening, signalListening) = AsyncStream<Void>.makeStream()
        let feed = try Feed.listen(url: postgres, channel: channel, logger: logger) { signalListening.yield() }
        let store = try await PostgresStore(url: schemaURL(postgres, storeSchema), logger: logger)
        let member = try Member(
            group: try GroupConfiguration(name: GroupName(group), heartbeatInterval: heartbeat, activationInterval: activation),
            id: MemberID(id), store: store, logger: logger
        )
        let signals = onSignals([SIGTERM, SIGINT]) { member.leave() }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                for await message in feed {
                    let value = String(decoding: message.payload, as: UTF8.self)
                    apply(cache.state.withLock { $0.catchUp.received(sequence: message.sequence, update: value) })
                }
            }
            _ = await listening.first { _ in true }
            report(["event": "listening"])
            if let bootstrapFrom {
                let snapshot = try await fetchSnapshot(from: bootstrapFrom)
                try await Task.sleep(for: snapshotHold)
                apply(cache.state.withLock { state in
                    state.values = snapshot.values
                    return state.catchUp.snapshotLoaded(at: snapshot.sequence)
                })
                report(["event": "bootstrapped", "sequence": "\(snapshot.sequence)"])
            }
            let port = try await serve(cache, group: &group, logger: logger)
            report(["event": "http", "port": "\(port)"])
            group.addTask {
                for await event in member.events {
                    switch event {
                    case .activate(let token):
                        cache.state.withLock { $0.active = token }
                        report(["event": "active", "token": "\(token)"])
                    case .deactivate(let reason):
                        cache.state.withLock { $0.active = nil }
                        report(["event": "deactivated", "reason": "\(reason)"])
                    case .prepareToActivate, .prepareWithdrawn:
                        break
                    }
                }
            }
            try await member.run()
            group.cancelAll()
        }
        withExtendedLifetime(signals) {}
    }

    /// Serves `/value/{subject}`, `/active` and `/snapshot` on 127.0.0.1; returns the port.
    func serve(_ cache: Cache, group: inout ThrowingDiscardingTaskGroup<any Error>, logger: Logger) async throws -> Int {
        let router = Router()
        router.get("value/:subject") { _, context -> Response in
            let subject = context.parameters.get("subject") ?? ""
            let (active, value) = cache.state.withLock { ($0.active, $0.values[subject]) }
            guard let active else { return text(.serviceUnavailable, "standby") }
            guard let value else { return text(.notFound, "no value for \(subject)") }
            return text(.ok, value, headers: [.init("Understudy-Token")!: "\(active)"])
        }
        router.get("active") { _, _ -> Response in
            guard let token = cache.state.withLock({ $0.active }) else { return text(.serviceUnavailable, "standby") }
            return text(.ok, "active token=\(token)")
        }
        // Any member that has caught up serves a snapshot; one still waiting for its own does not.
        router.get("snapshot") { _, _ -> Response in
            let snapshot = cache.state.withLock { state in state.catchUp.lastApplied.map { Snapshot(sequence: $0, values: state.values) } }
            guard let snapshot else { return text(.serviceUnavailable, "catching up") }
            let body = try JSONEncoder().encode(snapshot)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        var quiet = logger
        quiet.logLevel = .error
        let (bound, reportBound) = AsyncStream<Int>.makeStream()
        let application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { channel in
                reportBound.yield(channel.localAddress?.port ?? 0)
                reportBound.finish()
            },
            logger: quiet
        )
        group.addTask { try await application.runService() }
        return await bound.first { _ in true } ?? 0
    }
}

func text(_ status: HTTPResponse.Status, _ body: String, headers: HTTPFields = [:]) -> Response {
    var headers = headers
    headers[.contentType] = "text/plain; charset=utf-8"
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body + "\n")))
}

/// The snapshot of the member at `base`, retried until it has caught up itself.
func fetchSnapshot(from base: String) async throws -> Snapshot {
    guard let url = URL(string: base + "/snapshot") else { throw ValidationError("invalid --bootstrap-from \(base)") }
    for _ in 0..<100 {
        if let (data, response) = try? await URLSession.shared.data(from: url), (response as? HTTPURLResponse)?.statusCode == 200 {
            return try JSONDecoder().decode(Snapshot.self, from: data)
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw ValidationError("no snapshot from \(base) within 10 s")
}
