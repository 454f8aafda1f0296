import Foundation
import Logging
import PostgresNIO
import Synchronization
import UnderstudyCore
import UnderstudyStore

/// The connections of a ``PostgresStore`` to its server: a pool, and the deadline every round trip runs under.
/// Every query of the store runs through it, and nothing else of the store, so what runs them (the store's
/// heartbeat batcher) can hold it without holding the store.
///
/// A round trip that times out may leave its connection waiting for a reply that never comes (postgres-nio cannot
/// cancel that wait), so the pool is then replaced: shutting the old one down closes all its connections, and the
/// new one connects afresh.
final class PostgresConnection: Sendable {
    /// Where the server is.
    let location: PostgresLocation
    /// How long connecting, or one round trip, may take before it counts as failed.
    let timeout: Duration
    /// The logger for queries and for the pool's own events, quiet below `critical`: connection failures surface
    /// as failed calls, which their callers log.
    let logger: Logger
    private let pool: Mutex<Pool>
    private let configuration: PostgresClient.Configuration

    /// Prepares a pool for `location`; it connects when a round trip needs a connection.
    init(location: PostgresLocation, timeout: Duration, logger: Logger) {
        self.location = location
        self.timeout = timeout
        var configuration = PostgresClient.Configuration(
            host: location.host,
            port: location.port,
            username: location.user,
            password: location.password,
            database: location.database,
            tls: location.tls
        )
        configuration.options.connectTimeout = .seconds(3)
        configuration.options.maximumConnections = 4
        // The schema's functions lock before they read, which is right under read committed only: under repeatable
        // read or serializable (a database's or role's default) concurrent heartbeats and first starts would fail.
        configuration.options.additionalStartupParameters = [("default_transaction_isolation", "read committed")]
        self.configuration = configuration
        // Connection failures surface as failed heartbeats, which the member logs (rate-limited); postgres-nio's own
        // per-attempt logs stay quiet, or an outage would flood the log.
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .critical)
        self.logger = quiet
        pool = Mutex(Pool(configuration: configuration, logger: quiet))
    }

    deinit {
        shutDown()
    }

    /// How many times a round trip timed out and the pool was replaced.
    var poolReplacements: Int { pool.withLock { $0.generation } }

    /// The client of the pool in use, for work that is not one round trip (listening for notifications).
    var client: PostgresClient { pool.withLock { $0.client } }

    /// Runs `body` on the pool in use, failing with ``StoreError`` once it has taken ``timeout``; then replaces
    /// that pool (unless another timeout already has).
    ///
    /// Errors of `body` are thrown as they are; ``storeError(_:location:opening:)`` turns them into ``StoreError``.
    func withPool<Value: Sendable>(_ body: @escaping @Sendable (PostgresClient) async throws -> Value) async throws -> Value {
        let current = pool.withLock { $0 }
        return try await withTimeout(timeout, location: location, onTimeout: { self.replacePool(current) }) {
            try await body(current.client)
        }
    }

    /// Runs one round trip of a capability's server-side functions, failing as ``StoreError``. When someone dropped
    /// the schema, it is created again and the round trip tried once more: its groups and queues are new, so they
    /// grant nothing for one lease, and every token is at least the wall clock in µs, so no lease of the old schema
    /// is granted twice.
    func call<Value: Sendable>(
        recreating: Bool = true,
        _ body: @escaping @Sendable (PostgresClient) async throws -> Value
    ) async throws -> Value {
        do {
            return try await withPool(body)
        } catch let error as StoreError {
            throw error
        } catch where recreating && Self.schemaIsMissing(error) {
            logger.debug("the schema is gone; creating it again", metadata: ["location": "\(location)"])
            do {
                try await migrate()
            } catch {
                throw Self.storeError(error, location: location, opening: true)
            }
            return try await call(recreating: false, body)
        } catch {
            throw Self.storeError(error, location: location, opening: false)
        }
    }

    /// Creates, checks or migrates the schema (``PostgresSchema``) at ``location``, in one round trip.
    func migrate() async throws {
        let (location, logger) = (location, logger)
        try await withPool { client in
            _ = try await client.query(PostgresQuery(unsafeSQL: PostgresSchema.migration(schema: location.schema)), logger: logger)
        }
    }

    /// Closes every connection, also those waiting for a reply; their round trips fail, and so does every later one.
    func shutDown() {
        pool.withLock { $0.shutDown() }
    }

    private func replacePool(_ stale: Pool) {
        let replaced = pool.withLock { pool -> Bool in
            guard pool.generation == stale.generation else { return false }
            pool = Pool(configuration: configuration, logger: logger, generation: stale.generation + 1)
            return true
        }
        guard replaced else { return }
        logger.debug("a round trip timed out; replacing the connection pool", metadata: ["replacements": "\(stale.generation + 1)"])
        stale.shutDown()
    }

    // MARK: Errors

    /// Whether the server failed a call because the schema or its functions are gone (dropped while members ran).
    static func schemaIsMissing(_ error: any Error) -> Bool {
        guard let state = (error as? PSQLError)?.serverInfo?[.sqlState] else { return false }
        return ["3F000", "42883", "42P01"].contains(state)  // invalid schema name, undefined function or table
    }

    /// `error` as a ``StoreError``: what the server said, or that it cannot be reached. `opening`: the error
    /// happened while connecting and preparing the schema, so a server's message means `unavailable`, not `corrupt`.
    static func storeError(_ error: any Error, location: PostgresLocation, opening: Bool) -> StoreError {
        if let error = error as? StoreError { return error }
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                // A server shutting down or restarting (57), a broken connection (08), a server out of resources
                // (53), a transaction rolled back for a deadlock or a serialization failure (40): the next call may
                // well succeed.
                if let state = error.serverInfo?[.sqlState], ["57", "08", "53", "40"].contains(String(state.prefix(2))) {
                    return StoreError(.unavailable, "PostgreSQL at \(location) is unavailable: \(message)")
                }
                if message.contains("newer than this Understudy") { return StoreError(.newerSchema, message.replacingOccurrences(of: "understudy: ", with: "")) }
                if message.contains("another application") { return StoreError(.foreign, message.replacingOccurrences(of: "understudy: ", with: "")) }
                return StoreError(opening ? .unavailable : .corrupt, "PostgreSQL at \(location): \(message)")
            }
            return StoreError(.unavailable, "cannot reach PostgreSQL at \(location): \(error.code.description)")
        }
        return StoreError(.unavailable, "cannot reach PostgreSQL at \(location): \(error)")
    }
}

/// Runs `body`, failing with ``StoreError`` once it has taken `timeout`, whether or not `body` has ended by then.
///
/// Not every wait inside postgres-nio reacts to cancellation (a query's reply is awaited on an NIO future), so a
/// task group, which waits for all its children, could hold a heartbeat far past its deadline. Here the caller
/// resumes at the deadline; `body` is cancelled and left to end on its own, its result discarded.
private func withTimeout<Value: Sendable>(
    _ timeout: Duration,
    location: PostgresLocation,
    onTimeout: @escaping @Sendable () -> Void = {},
    _ body: @escaping @Sendable () async throws -> Value
) async throws -> Value {
    let outcome = FirstOutcome<Value>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
            let work = Task {
                do { outcome.settle(.success(try await body())) } catch { outcome.settle(.failure(error)) }
            }
            let deadline = Task {
                guard (try? await Task.sleep(for: timeout)) != nil else { return }
                if outcome.settle(.failure(StoreError(.unavailable, "PostgreSQL at \(location) did not answer within \(timeout.formatted)"))) {
                    onTimeout()
                }
            }
            outcome.deliver(to: continuation, cancelling: [work, deadline])
        }
    } onCancel: {
        outcome.settle(.failure(CancellationError()))
    }
}

/// The first of several results to arrive, handed to one continuation exactly once; the tasks that raced for it
/// are cancelled then.
private final class FirstOutcome<Value: Sendable>: Sendable {
    private struct State {
        var result: Result<Value, any Error>?
        var continuation: CheckedContinuation<Value, any Error>?
        var racers: [Task<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Resumes `continuation` with the first result, now if it has already arrived.
    func deliver(to continuation: CheckedContinuation<Value, any Error>, cancelling racers: [Task<Void, Never>]) {
        let ready = state.withLock { state -> Result<Value, any Error>? in
            if let result = state.result { return result }
            state.continuation = continuation
            state.racers = racers
            return nil
        }
        if let ready {
            racers.forEach { $0.cancel() }
            continuation.resume(with: ready)
        }
    }

    /// Records `result` if it is the first, and says whether it was; later ones are dropped.
    @discardableResult
    func settle(_ result: Result<Value, any Error>) -> Bool {
        let waiting = state.withLock { state -> (CheckedContinuation<Value, any Error>, [Task<Void, Never>])?? in
            guard state.result == nil else { return nil }
            state.result = result
            guard let continuation = state.continuation else { return .some(nil) }
            state.continuation = nil
            defer { state.racers = [] }
            return (continuation, state.racers)
        }
        guard let first = waiting else { return false }
        if let (continuation, racers) = first {
            racers.forEach { $0.cancel() }
            continuation.resume(with: result)
        }
        return true
    }
}

/// A `PostgresClient` and the task that runs it.
private struct Pool: Sendable {
    let client: PostgresClient
    let run: Task<Void, Never>
    /// 0 for the store's first pool, then one more for each replacement.
    let generation: Int

    init(configuration: PostgresClient.Configuration, logger: Logger, generation: Int = 0) {
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        run = Task { await client.run() }
        self.generation = generation
    }

    /// Closes every connection, also those waiting for a reply; their queries fail.
    func shutDown() { run.cancel() }
}
