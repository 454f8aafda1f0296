import Foundation
import Logging
import PostgresNIO
import Synchronization
import UnderstudyCore
import UnderstudyStore

/// The heartbeat round trips of a ``PostgresStore``: what its heartbeat batcher sends each batch with. It holds the
/// store's connection, not the store.
///
/// A batch is one call of `understudy_heartbeats`; the server's answer is read by
/// ``PostgresStore/replies(_:to:location:)``.
final class PostgresLeases: Sendable {
    private let connection: PostgresConnection
    private let clock: (@Sendable () -> Instant)?
    private let roundTripCount = Atomic<Int>(0)
    /// The largest token seen in each group's views: a heartbeat carries it, and a record that holds less has lost
    /// commits (see `PostgresSchema`).
    private let seenTokens = Mutex<[GroupName: FencingToken]>([:])

    /// How many heartbeat round trips have been made so far (each may carry many heartbeats).
    var roundTrips: Int { roundTripCount.load(ordering: .relaxed) }

    /// - Parameter clock: for tests only: judge time on this clock instead of the groups' store clocks.
    init(connection: PostgresConnection, clock: (@Sendable () -> Instant)?) {
        self.connection = connection
        self.clock = clock
    }

    /// Applies `batch` in one round trip (two if the server fails it as a whole: then each heartbeat on its own),
    /// answering each heartbeat with its reply or its error.
    func send(_ batch: [Heartbeat]) async throws -> [Result<HeartbeatReply, any Error>] {
        let seen = seenTokens.withLock { seen in batch.map { seen[$0.group] } }
        let items = batch.enumerated().map { index, heartbeat in BatchItem(index: index, heartbeat, seen: seen[index]) }
        let payload = String(decoding: try JSONEncoder().encode(items), as: UTF8.self)
        let text: String
        do {
            text = try await apply(payload, isolated: false)
        } catch let error as StoreError where error.kind == .corrupt {
            // The server raised an error for some heartbeat, and the whole batch was rolled back: apply it again,
            // each heartbeat on its own, so only the heartbeats at fault fail.
            connection.logger.debug("a batch failed on the server; applying its heartbeats one by one", metadata: ["error": "\(error)"])
            text = try await apply(payload, isolated: true)
        }
        let replies = PostgresStore.replies(text, to: batch, location: connection.location)
        saw(replies.compactMap { try? $0.get().view })
        return replies
    }

    /// Applies a partition heartbeat in one round trip: one call of `understudy_partition_heartbeat`, whatever the
    /// number of its operations. It travels alone: it is a batch already.
    func send(_ heartbeat: PartitionHeartbeat) async throws -> PartitionHeartbeatReply {
        let (schema, logger) = (connection.location.schema, connection.logger)
        let seen = seenTokens.withLock { $0[heartbeat.group] }.map { Int64($0.rawValue) }
        let now = clock.map { $0().nanoseconds / 1_000 }
        let (group, partitions, ttl) = (heartbeat.group.rawValue, Int32(clamping: heartbeat.partitions), heartbeat.activationInterval.nanoseconds / 1_000)
        let member = heartbeat.member
        let (id, incarnation, weight, host, pid) = (member.id.rawValue, member.incarnation, Int32(clamping: member.weight), member.host, member.pid)
        let (phase, leaving, sent) = (heartbeat.phase.rawValue, heartbeat.leaving, heartbeat.sentAt.map { $0.nanoseconds / 1_000 })
        let indexes = heartbeat.operations.map { Int32(clamping: $0.partition) }
        let (kinds, tokens) = (heartbeat.operations.map(Self.kind), heartbeat.operations.map(Self.token))
        roundTripCount.add(1, ordering: .relaxed)
        let text = try await connection.call { client in
            let rows = try await client.query(
                """
                SELECT "\(unescaped: schema)".understudy_partition_heartbeat(
                    \(group), \(partitions), \(ttl), \(id), \(incarnation), \(weight), \(host), \(pid), \(phase),
                    \(kinds)::text[], \(indexes)::int[], \(tokens)::bigint[], \(leaving), \(sent)::bigint, \(seen)::bigint,
                    \(now)::bigint)::text
                """,
                logger: logger
            )
            guard let first = try await rows.decode(String.self).first(where: { _ in true }) else {
                throw StoreError(.corrupt, "the server answered a partition heartbeat with no row")
            }
            return first
        }
        let reply = try PostgresStore.reply(text, to: heartbeat, location: connection.location)
        saw([reply.view])
        return reply
    }

    private static func kind(_ operation: PartitionHeartbeat.Operation) -> String {
        switch operation {
        case .acquire: "acquire"
        case .renew: "renew"
        case .release: "release"
        }
    }

    /// The operation's token, 0 for an acquire.
    private static func token(_ operation: PartitionHeartbeat.Operation) -> Int64 {
        switch operation {
        case .acquire: 0
        case .renew(_, let token), .release(_, let token): Int64(clamping: token.rawValue)
        }
    }

    /// Remembers the largest token of each group in `views`.
    private func saw(_ views: [GroupView]) {
        seenTokens.withLock { seen in
            for view in views {
                guard let token = view.lastToken else { continue }
                seen[view.group] = max(seen[view.group] ?? token, token)
            }
        }
    }

    /// One round trip: the batch applied by `understudy_heartbeats`, with its answer as JSON text.
    private func apply(_ payload: String, isolated: Bool) async throws -> String {
        let (schema, logger) = (connection.location.schema, connection.logger)
        let now = clock.map { $0().nanoseconds / 1_000 }
        roundTripCount.add(1, ordering: .relaxed)
        return try await connection.call { client in
            let rows = try await client.query(
                "SELECT \"\(unescaped: schema)\".understudy_heartbeats(\(payload)::jsonb, \(now), \(isolated))::text",
                logger: logger
            )
            guard let first = try await rows.decode(String.self).first(where: { _ in true }) else {
                throw StoreError(.corrupt, "the server answered a heartbeat with no row")
            }
            return first
        }
    }

    // MARK: Encoding

    private struct BatchItem: Encodable {
        var i: Int
        var group: String
        var goal: Int
        var ttl: Int64
        var member: String
        var incarnation: String
        var weight: Int
        var host: String
        var pid: Int32
        var phase: String
        var intent: String
        var token: Int64?
        /// The member's send instant in µs on its own monotonic clock: the evidence that bounds the store clock.
        var sent: Int64?
        /// The largest token of the group this store has seen.
        var seen: Int64?

        init(index: Int, _ heartbeat: Heartbeat, seen: FencingToken?) {
            i = index
            group = heartbeat.group.rawValue
            goal = heartbeat.activeGoal
            ttl = heartbeat.activationInterval.nanoseconds / 1_000
            member = heartbeat.member.id.rawValue
            incarnation = heartbeat.member.incarnation
            weight = heartbeat.member.weight
            host = heartbeat.member.host
            pid = heartbeat.member.pid
            phase = heartbeat.phase.rawValue
            sent = heartbeat.sentAt.map { $0.nanoseconds / 1_000 }
            self.seen = seen.map { Int64($0.rawValue) }
            switch heartbeat.intent {
            case .none: intent = "none"
            case .acquire: intent = "acquire"
            case .renew(let token): intent = "renew"; self.token = Int64(token.rawValue)
            case .release(let token): intent = "release"; self.token = Int64(token.rawValue)
            case .leave(let token): intent = "leave"; self.token = token.map { Int64($0.rawValue) }
            }
        }
    }
}
