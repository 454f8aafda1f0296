import Foundation
import Logging
import NIOSSL
import PostgresNIO
import Synchronization
import UnderstudyStore
import UnderstudyCore

/// A store on a PostgreSQL server, for members on several machines.
///
/// - **One clock**: all lease arithmetic happens in SQL on the group's store clock, which follows the server's wall
///   clock but does not jump with it: it moves no further than the heartbeating member measured on its own clock
///   between two of its heartbeats (see "Clocks" in docs/design.md). Members never compare clocks.
/// - **Compare-and-set**: a heartbeat is one call of a server-side function that takes the group's row lock and
///   applies the rules of ``GroupLedger/apply(_:at:)``; the fencing token comes from the same transaction. Tokens
///   are at least the server's wall clock in microseconds, and a group grants nothing for T after its record may
///   have become incomplete (a failover, a restore, a dropped schema), so a token is never issued twice.
/// - **Few round trips**: the members of a process put their heartbeats on one grid, so they fall due together;
///   those that arrive while a round trip is under way (or within ``batchWindow``) travel together in the next
///   call, whatever their groups.
/// - **Fast handover**: releases and joins are announced with `NOTIFY`; ``changes(of:)`` lets members act at
///   once instead of at their next heartbeat. Polling stays the safety net.
///
/// The role needs, on first start, `CREATE` on the database (to create the schema), or an existing schema it
/// owns; afterwards `USAGE` on the schema, `SELECT, INSERT, UPDATE, DELETE` on its tables and `EXECUTE` on its
/// functions.
public final class PostgresStore: LeaseStore, ChangeAnnouncing, GroupDirectory, CustomStringConvertible {
    /// Where the server is, parsed from `postgres://user:password@host:5432/database?schema=understudy&sslmode=…`.
    public let location: PostgresLocation
    /// How long a heartbeat waits for others to share its round trip. Zero by default: heartbeats due together
    /// arrive together, and those that miss one round trip share the next.
    public let batchWindow: Duration
    /// How long connecting, or one round trip, may take before it counts as failed.
    public let timeout: Duration
    /// The most heartbeats one round trip carries; more due together travel in several, side by side.
    public static let maximumBatchSize = HeartbeatBatcher.maximumBatch

    /// The connection pool in use. A round trip that times out may leave its connection waiting for a reply that
    /// never comes (postgres-nio cannot cancel that wait), so the pool is then replaced: shutting the old one down
    /// closes all its connections, and the new one connects afresh.
    private let pool: Mutex<Pool>
    private let poolConfiguration: PostgresClient.Configuration
    private let listenerTask: Mutex<Task<Void, Never>?> = Mutex(nil)
    private let batcher: HeartbeatBatcher
    private let subscribers = ChangeSubscribers<GroupName>()
    private let clock: (@Sendable () -> Instant)?
    private let logger: Logger
    private let roundTripCount = Atomic<Int>(0)
    /// The largest token seen in each group's views: a heartbeat carries it, and a record that holds less has lost
    /// commits (see `PostgresSchema`).
    private let seenTokens = Mutex<[GroupName: FencingToken]>([:])

    /// How many heartbeat round trips this store has made so far (each may carry many heartbeats).
    public var roundTrips: Int { roundTripCount.load(ordering: .relaxed) }

    /// Connects, then creates or checks the schema.
    ///
    /// - Parameters:
    ///   - clock: for tests only: judge time on this clock instead of the groups' store clocks. Every user of one
    ///     schema MUST use the same clock.
    /// - Throws: ``StoreError`` when the URL is malformed, the server cannot be reached, the schema belongs to
    ///   another application, or it was written by a newer Understudy.
    public convenience init(
        url: String,
        batchWindow: Duration = .zero,
        timeout: Duration = .seconds(5),
        clock: (@Sendable () -> Instant)? = nil,
        logger: Logger = Logger(label: "understudy.postgres")
    ) async throws {
        try await self.init(location: try PostgresLocation(url), batchWindow: batchWindow, timeout: timeout, clock: clock, logger: logger)
    }

    /// Connects to a location already parsed, then creates or checks the schema.
    ///
    /// - Throws: ``StoreError`` when the server cannot be reached, the schema belongs to another application, or
    ///   it was written by a newer Understudy.
    public init(
        location: PostgresLocation,
        batchWindow: Duration = .zero,
        timeout: Duration = .seconds(5),
        clock: (@Sendable () -> Instant)? = nil,
        logger: Logger = Logger(label: "understudy.postgres")
    ) async throws {
        self.location = location
        self.batchWindow = batchWindow
        self.timeout = timeout
        self.clock = clock
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
        // Connection failures surface as failed heartbeats, which the member logs (rate-limited); postgres-nio's own
        // per-attempt logs stay quiet, or an outage would flood the log.
        let quietLogger = {
            var quiet = logger
            quiet.logLevel = max(logger.logLevel, .critical)
            return quiet
        }()
        self.logger = quietLogger
        poolConfiguration = configuration
        let pool = Pool(configuration: configuration, logger: quietLogger)
        self.pool = Mutex(pool)
        batcher = HeartbeatBatcher(window: batchWindow)
        do {
            try await withTimeout(timeout, location: location) { try await Self.migrate(pool.client, location: location, logger: quietLogger) }
        } catch {
            pool.shutDown()
            throw Self.storeError(error, location: location, opening: true)
        }
        await startListening()
    }

    deinit {
        pool.withLock { $0.shutDown() }
        listenerTask.withLock { $0?.cancel() }
    }

    /// Creates, checks or migrates the schema.
    private static func migrate(_ client: PostgresClient, location: PostgresLocation, logger: Logger) async throws {
        _ = try await client.query(PostgresQuery(unsafeSQL: PostgresSchema.migration(schema: location.schema)), logger: logger)
    }

    /// Whether the server failed a call because the schema or its functions are gone (dropped while members ran).
    private static func schemaIsMissing(_ error: any Error) -> Bool {
        guard let state = (error as? PSQLError)?.serverInfo?[.sqlState] else { return false }
        return ["3F000", "42883", "42P01"].contains(state)  // invalid schema name, undefined function or table
    }

    /// How many times a round trip timed out and the connection pool was replaced.
    public var poolReplacements: Int { pool.withLock { $0.generation } }

    private var client: PostgresClient { pool.withLock { $0.client } }

    /// Runs `body` on the current pool within ``timeout``; if it times out, replaces that pool (unless another
    /// timeout already has).
    private func withPool<Value: Sendable>(_ body: @escaping @Sendable (PostgresClient) async throws -> Value) async throws -> Value {
        let current = pool.withLock { $0 }
        return try await withTimeout(timeout, location: location, onTimeout: { [weak self] in
            self?.replacePool(current)
        }) {
            try await body(current.client)
        }
    }

    private func replacePool(_ stale: Pool) {
        let replaced = pool.withLock { pool -> Bool in
            guard pool.generation == stale.generation else { return false }
            pool = Pool(configuration: poolConfiguration, logger: logger, generation: stale.generation + 1)
            return true
        }
        guard replaced else { return }
        logger.debug("a round trip timed out; replacing the connection pool", metadata: ["replacements": "\(stale.generation + 1)"])
        stale.shutDown()
    }

    /// The store's URL without its password, as members log it at start.
    public var description: String { location.description }

    public func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
        try await batcher.submit(heartbeat) { batch in try await self.send(batch) }
    }

    /// One indexed read of the group's rows; a corrupt row of another group does not matter here.
    public func group(named name: GroupName) async throws -> GroupView? {
        let (schema, location) = (location.schema, location)
        let now = clock.map { $0().nanoseconds / 1_000 }
        do {
            return try await withPool { client in
                let rows = try await client.query(
                    """
                    SELECT "\(unescaped: schema)".understudy_view(name, coalesce(\(now), "\(unescaped: schema)".understudy_group_now(name)))::text
                    FROM "\(unescaped: schema)".groups WHERE name = \(name.rawValue)
                    """,
                    logger: self.logger
                )
                for try await text in rows.decode(String.self) { return try Self.decodeView(text, location: location) }
                return nil
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw Self.storeError(error, location: location, opening: false)
        }
    }

    public func groupNames(after cursor: GroupName?, limit: Int) async throws -> [GroupName] {
        let (schema, location) = (location.schema, location)
        let (after, limit) = (cursor?.rawValue ?? "", max(0, limit))
        do {
            return try await withPool { client in
                let rows = try await client.query(
                    #"SELECT name FROM "\#(unescaped: schema)".groups WHERE name > \#(after) ORDER BY name LIMIT \#(limit)"#,
                    logger: self.logger
                )
                var names: [GroupName] = []
                for try await name in rows.decode(String.self) { if let name = try? GroupName(name) { names.append(name) } }
                return names
            }
        } catch {
            throw Self.storeError(error, location: location, opening: false)
        }
    }

    public func changes(of group: GroupName) -> AsyncStream<Void> {
        subscribers.subscribe(to: group)
    }

    public func close() async throws {
        listenerTask.withLock { $0?.cancel() }
        subscribers.finishAll()
        pool.withLock { $0.shutDown() }
    }

    // MARK: Round trips

    private func send(_ batch: [Heartbeat]) async throws -> [Result<HeartbeatReply, any Error>] {
        let seen = seenTokens.withLock { seen in batch.map { seen[$0.group] } }
        let items = batch.enumerated().map { index, heartbeat in BatchItem(index: index, heartbeat, seen: seen[index]) }
        let payload = String(decoding: try JSONEncoder().encode(items), as: UTF8.self)
        let text: String
        do {
            text = try await apply(payload, isolated: false)
        } catch let error as StoreError where error.kind == .corrupt {
            // The server raised an error for some heartbeat, and the whole batch was rolled back: apply it again,
            // each heartbeat on its own, so only the heartbeats at fault fail.
            logger.debug("a batch failed on the server; applying its heartbeats one by one", metadata: ["error": "\(error)"])
            text = try await apply(payload, isolated: true)
        }
        let replies = Self.replies(text, to: batch, location: location)
        seenTokens.withLock { seen in
            for case .success(let reply) in replies {
                guard let token = reply.view.lastToken else { continue }
                seen[reply.view.group] = max(seen[reply.view.group] ?? token, token)
            }
        }
        return replies
    }

    /// The replies to `batch` in the server's answer `text`: a reply, or the error of a heartbeat whose part of the
    /// answer is missing or out of range. Never traps, whatever the text.
    static func replies(_ text: String, to batch: [Heartbeat], location: PostgresLocation) -> [Result<HeartbeatReply, any Error>] {
        var replies = [Result<HeartbeatReply, any Error>](
            repeating: .failure(StoreError(.corrupt, "the server left a heartbeat unanswered")),
            count: batch.count
        )
        let results: [BatchResult]
        do {
            results = try JSONDecoder().decode([BatchResult].self, from: Data(text.utf8))
        } catch {
            return replies.map { _ in .failure(StoreError(.corrupt, "the answer of PostgreSQL at \(location) cannot be read: \(error)")) }
        }
        for result in results where replies.indices.contains(result.i) {
            let heartbeat = batch[result.i]
            replies[result.i] = Result {
                switch result.result {
                case .success(let json): try Self.reply(json, to: heartbeat, location: location)
                case .failure(let error):
                    throw StoreError(.corrupt, "group \"\(heartbeat.group)\" in \(location): the reply cannot be read: \(error)")
                }
            }
        }
        return replies
    }

    /// One round trip: the batch applied by `understudy_heartbeats`, with its answer as JSON text.
    private func apply(_ payload: String, isolated: Bool, recreating: Bool = true) async throws -> String {
        let schema = location.schema
        let now = clock.map { $0().nanoseconds / 1_000 }
        roundTripCount.add(1, ordering: .relaxed)
        do {
            return try await withPool { client in
                let rows = try await client.query(
                    "SELECT \"\(unescaped: schema)\".understudy_heartbeats(\(payload)::jsonb, \(now), \(isolated))::text",
                    logger: self.logger
                )
                guard let first = try await rows.decode(String.self).first(where: { _ in true }) else {
                    throw StoreError(.corrupt, "the server answered a heartbeat with no row")
                }
                return first
            }
        } catch let error as StoreError {
            throw error
        } catch where recreating && Self.schemaIsMissing(error) {
            // Someone dropped the schema: create it again. Its groups are new and so grant nothing for T, and every
            // token is at least the wall clock in µs: no lease the old schema held can be granted twice.
            logger.debug("the schema is gone; creating it again", metadata: ["location": "\(location)"])
            let location = location, logger = logger
            do {
                try await withPool { client in try await Self.migrate(client, location: location, logger: logger) }
            } catch {
                throw Self.storeError(error, location: location, opening: true)
            }
            return try await apply(payload, isolated: isolated, recreating: false)
        } catch {
            throw Self.storeError(error, location: location, opening: false)
        }
    }

    /// Listens for announced changes on a connection of its own, reconnecting after failures; returns once the first
    /// `LISTEN` is in place (or has failed: polling still works without it).
    private func startListening() async {
        let channel = PostgresSchema.channel(schema: location.schema)
        let logger = self.logger
        let (ready, signalReady) = AsyncStream<Void>.makeStream()
        let task = Task { [weak self] in
            while !Task.isCancelled {
                do {
                    guard let client = self?.client else { return }
                    try await client.withConnection { connection in
                        try await connection.listen(on: channel) { notifications in
                            signalReady.yield()
                            for try await notification in notifications {
                                guard let group = try? GroupName(notification.payload) else { continue }
                                self?.subscribers.announce(group)
                            }
                        }
                    }
                } catch {
                    signalReady.yield()
                    if Task.isCancelled { return }
                    logger.debug("listening for announced changes failed; retrying", metadata: ["error": "\(String(reflecting: error))"])
                }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        listenerTask.withLock { $0 = task }
        var iterator = ready.makeAsyncIterator()
        _ = await iterator.next()
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

    /// One heartbeat's part of the answer; a part that cannot be decoded fails that heartbeat only.
    private struct BatchResult: Decodable {
        var i: Int
        var result: Result<ReplyJSON, any Error>

        enum CodingKeys: String, CodingKey { case i, result }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            i = try container.decode(Int.self, forKey: .i)
            result = Result { try container.decode(ReplyJSON.self, forKey: .result) }
        }
    }

    private struct ReplyJSON: Decodable {
        var outcome: String?
        var token: Int64?
        var view: ViewJSON?
        var rejection: String?
        var host: String?
        var pid: Int32?
        var stored: Int?
        var error: String?
    }

    struct ViewJSON: Decodable {
        struct Member: Decodable {
            var id: String
            var incarnation: String
            var weight: Int
            var host: String
            var pid: Int32
            var join: Int64
            var phase: String
            var age: Int64
        }

        struct Lease: Decodable {
            var slot: Int
            var holder: String
            var token: Int64
            var remaining: Int64
        }

        var group: String
        var goal: Int
        var lastToken: Int64
        var members: [Member]
        var leases: [Lease]
    }

    private static func reply(_ json: ReplyJSON, to heartbeat: Heartbeat, location: PostgresLocation) throws -> HeartbeatReply {
        func corrupt(_ what: String) -> StoreError {
            StoreError(.corrupt, "group \"\(heartbeat.group)\" in \(location): \(what)")
        }
        if let error = json.error { throw corrupt(error) }
        switch json.rejection {
        case "member-id-in-use":
            throw HeartbeatRejection.memberIDInUse(heartbeat.member.id, host: json.host ?? "?", pid: json.pid ?? 0)
        case "active-goal-mismatch":
            throw HeartbeatRejection.activeGoalMismatch(group: heartbeat.group, stored: json.stored ?? 0, requested: heartbeat.activeGoal)
        case nil:
            break
        case let other?:
            throw corrupt("the server sent an unknown rejection \"\(other)\"")
        }
        guard let viewJSON = json.view else { throw corrupt("the server sent a reply without a group view") }
        let view = try view(viewJSON, location: location)
        guard view.group == heartbeat.group else { throw corrupt("the server answered with the view of group \"\(view.group)\"") }
        let outcome: HeartbeatReply.Outcome
        switch (json.outcome, json.token) {
        case ("none", _): outcome = .none
        case ("granted", let token?) where token >= 1 && UInt64(token) <= view.lastToken?.rawValue ?? 0:
            outcome = .granted(FencingToken(rawValue: UInt64(token)))
        case ("granted", let token): throw corrupt("granted token \(token.map(String.init) ?? "nil") is not a token of the group")
        case ("not-granted", _): outcome = .notGranted
        case ("renewed", _): outcome = .renewed
        case ("lost", _): outcome = .lost
        case ("released", _): outcome = .released
        case ("left", _): outcome = .left
        default: throw corrupt("the server sent an unknown outcome \(json.outcome ?? "nil")")
        }
        return HeartbeatReply(outcome: outcome, view: view)
    }

    static func decodeView(_ text: String, location: PostgresLocation) throws -> GroupView {
        do {
            return try view(JSONDecoder().decode(ViewJSON.self, from: Data(text.utf8)), location: location)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.corrupt, "a group row in \(location) cannot be read: \(error)")
        }
    }

    /// The view in `json`, every value range-checked: a row no heartbeat can have written fails as corrupt, naming
    /// the group and the value.
    private static func view(_ json: ViewJSON, location: PostgresLocation) throws -> GroupView {
        func corrupt(_ what: String) -> StoreError {
            StoreError(.corrupt, "group \"\(json.group)\" in \(location) has a corrupt row: \(what)")
        }
        guard let group = try? GroupName(json.group) else { throw corrupt("invalid group name") }
        guard (1...GroupConfiguration.maximumActiveGoal).contains(json.goal) else { throw corrupt("active goal \(json.goal)") }
        guard json.lastToken >= 0 else { throw corrupt("last token \(json.lastToken)") }
        var ids = Set<MemberID>()
        let members = try json.members.map { member in
            guard let id = try? MemberID(member.id), ids.insert(id).inserted,
                  let info = try? MemberInfo(id: id, incarnation: member.incarnation, weight: member.weight, host: member.host, pid: member.pid),
                  let phase = MemberPhase(rawValue: member.phase)
            else { throw corrupt("member \(member.id) (weight \(member.weight), phase \(member.phase))") }
            guard member.pid > 0, member.join >= 1, member.age >= 0 else {
                throw corrupt("member \(member.id) (pid \(member.pid), join sequence \(member.join), heartbeat age \(member.age) µs)")
            }
            return GroupView.Member(info: info, joinSequence: member.join, phase: phase, heartbeatAge: .microseconds(member.age))
        }
        var slots = Set<Int>(), tokens = Set<Int64>()
        let leases = try json.leases.map { lease in
            guard let holder = try? MemberID(lease.holder), (0..<json.goal).contains(lease.slot), slots.insert(lease.slot).inserted,
                  lease.token >= 1, lease.token <= json.lastToken, tokens.insert(lease.token).inserted, lease.remaining > 0
            else {
                throw corrupt("lease of slot \(lease.slot) (holder \(lease.holder), token \(lease.token), remaining \(lease.remaining) µs)")
            }
            return GroupView.Lease(slot: lease.slot, holder: holder, token: FencingToken(rawValue: UInt64(lease.token)), remaining: .microseconds(lease.remaining))
        }
        return GroupView(
            group: group,
            activeGoal: json.goal,
            lastToken: json.lastToken == 0 ? nil : FencingToken(rawValue: UInt64(json.lastToken)),
            members: members,
            leases: leases
        )
    }

    // MARK: Errors

    private static func storeError(_ error: any Error, location: PostgresLocation, opening: Bool) -> StoreError {
        if let error = error as? StoreError { return error }
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
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
