import Foundation
import Logging
import PostgresNIO
import Understudy
import UnderstudyPostgres

/// The input feed of the examples: a PostgreSQL notification channel. The generator sends message n as the payload `n:m<n>`;
/// every listener receives every notification, in commit order, as a broadcast would deliver it.
public enum Feed {
    public static func configuration(_ url: String) throws -> PostgresClient.Configuration {
        let location = try PostgresLocation(url)
        return PostgresClient.Configuration(
            host: location.host, port: location.port, username: location.user, password: location.password,
            database: location.database, tls: .disable
        )
    }

    /// The payload of message `sequence`, which the checker expects to find at the sink.
    public static func payload(_ sequence: Int64) -> [UInt8] { Array("m\(sequence)".utf8) }

    /// Sends messages `first…` at `rate` per second, in one statement per 10 ms, until `stop` holds (checked
    /// between statements, so none is cut off half-way); returns the last sequence sent.
    public static func generate(url: String, channel: String, rate: Int, first: Int64, stop: @escaping @Sendable () -> Bool) async throws -> Int64 {
        let client = PostgresClient(configuration: try configuration(url))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            let start = ContinuousClock.now
            var next = first
            while !stop() {
                let due = first + Int64(Double(rate) * (ContinuousClock.now - start).seconds)
                if due >= next {
                    _ = try await client.query(
                        "SELECT pg_notify(\(channel), s::text || ':m' || s::text) FROM generate_series(\(next)::bigint, \(due)::bigint) AS s"
                    )
                    next = due + 1
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            return next - 1
        }
    }

    /// The messages of `channel`, listening again after a failure (what arrives meanwhile is lost for this
    /// listener, and shows as a gap if it activates before the messages are confirmed).
    /// `listening` is called each time the `LISTEN` is in place.
    public static func listen(url: String, channel: String, logger: Logger, listening: @escaping @Sendable () -> Void) throws -> AsyncStream<FeedMessage> {
        let configuration = try configuration(url)
        return AsyncStream(bufferingPolicy: .unbounded) { continuation in
            let task = Task {
                let client = PostgresClient(configuration: configuration)
                await withDiscardingTaskGroup { group in
                    group.addTask { await client.run() }
                    while !Task.isCancelled {
                        do {
                            try await client.withConnection { connection in
                                try await connection.listen(on: channel) { notifications in
                                    listening()
                                    for try await notification in notifications {
                                        let parts = notification.payload.split(separator: ":", maxSplits: 1)
                                        guard parts.count == 2, let sequence = Int64(parts[0]) else { continue }
                                        continuation.yield(FeedMessage(sequence: sequence, payload: Array(parts[1].utf8)))
                                    }
                                }
                            }
                        } catch {
                            if Task.isCancelled { break }
                            logger.warning("listening to the feed failed; listening again", metadata: ["error": "\(error)"])
                            try? await Task.sleep(for: .milliseconds(200))
                        }
                    }
                    group.cancelAll()
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
