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
///   call, whatever their groups. A partition heartbeat is one call however many partitions it names.
/// - **Fast handover**: releases and joins are announced with `NOTIFY`; ``changes(of:)`` lets members act at
///   once instead of at their next heartbeat. Polling stays the safety net.
///
/// The role needs, on first start, `CREATE` on the database (to create the schema), or an existing schema it
/// owns; afterwards `USAGE` on the schema, `SELECT, INSERT, UPDATE, DELETE` on its tables and `EXECUTE` on its
/// functions.
public final class PostgresStore: LeaseStore, PartitionLeaseStore, ChangeAnnouncing, GroupDirectory, CustomStringConvertible {
    /// Where the server is, parsed from `postgres://user:password@host:5432/database?schema=understudy&sslmode=…`.
    public let location: PostgresLocation
    /// How long a heartbeat waits for others to share its round trip. Zero by default: heartbeats due together
    /// arrive together, and those that miss one round trip share the next.
    public let batchWindow: Duration
    /// How long connecting, or one round trip, may take before it counts as failed.
    public let timeout: Duration
    /// The most heartbeats one round trip carries; more due together travel in several, side by side.
    public static let maximumBatchSize = HeartbeatBatcher.maximumBatch

    /// The connection pool, which every query runs through; see ``PostgresConnection``.
    let connection: PostgresConnection
    /// The heartbeat round trips; the batcher's send function holds them (and the connection), not the store.
    private let leases: PostgresLeases
    private let listenerTask: Mutex<Task<Void, Never>?> = Mutex(nil)
    private let batcher: HeartbeatBatcher
    private let subscribers = ChangeSubscribers<GroupName>()
    /// Idle workers of each queue, woken by announced enqueues (see `PostgresStore+Queue.swift`).
    let queueSubscribers = ChangeSubscribers<QueueName>()
    /// This handle's identity in each queue's clock evidence (`queue_clients`): its claims and renewals carry
    /// their send instants on this process's monotonic clock, which only this handle's earlier calls compare with.
    let queueClient = UUID().uuidString.lowercased()
    let clock: (@Sendable () -> Instant)?

    /// How many heartbeat round trips this store has made so far (each may carry many heartbeats).
    public var roundTrips: Int { leases.roundTrips }

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
        let connection = PostgresConnection(location: location, timeout: timeout, logger: logger)
        self.connection = connection
        let leases = PostgresLeases(connection: connection, clock: clock)
        self.leases = leases
        batcher = HeartbeatBatcher(window: batchWindow) { batch in try await leases.send(batch) }
        do {
            try await connection.migrate()
        } catch {
            connection.shutDown()
            throw PostgresConnection.storeError(error, location: location, opening: true)
        }
        await startListening()
    }

    deinit {
        connection.shutDown()
        listenerTask.withLock { $0?.cancel() }
    }

    /// How many times a round trip timed out and the connection pool was replaced.
    public var poolReplacements: Int { connection.poolReplacements }

    /// The store's URL without its password, as members log it at start.
    public var description: String { location.description }

    public func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
        try await batcher.submit(heartbeat)
    }

    /// One round trip, one call of `understudy_partition_heartbeat` (``PostgresSchema/partitionFunctions(schema:)``),
    /// whatever the number of operations; it counts in ``roundTrips``.
    public func heartbeat(_ heartbeat: PartitionHeartbeat) async throws -> PartitionHeartbeatReply {
        try await leases.send(heartbeat)
    }

    /// One indexed read of the group's rows; a corrupt row of another group does not matter here.
    public func group(named name: GroupName) async throws -> GroupView? {
        let (schema, location, logger) = (location.schema, location, connection.logger)
        let now = clock.map { $0().nanoseconds / 1_000 }
        do {
            return try await connection.withPool { client in
                let rows = try await client.query(
                    """
                    SELECT "\(unescaped: schema)".understudy_view(name, coalesce(\(now), "\(unescaped: schema)".understudy_group_now(name)))::text
                    FROM "\(unescaped: schema)".groups WHERE name = \(name.rawValue)
                    """,
                    logger: logger
                )
                for try await text in rows.decode(String.self) { return try Self.decodeView(text, location: location) }
                return nil
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw PostgresConnection.storeError(error, location: location, opening: false)
        }
    }

    public func groupNames(after cursor: GroupName?, limit: Int) async throws -> [GroupName] {
        let (schema, location, logger) = (location.schema, location, connection.logger)
        let (after, limit) = (cursor?.rawValue ?? "", max(0, limit))
        do {
            return try await connection.withPool { client in
                let rows = try await client.query(
                    #"SELECT name FROM "\#(unescaped: schema)".groups WHERE name > \#(after) ORDER BY name LIMIT \#(limit)"#,
                    logger: logger
                )
                var names: [GroupName] = []
                for try await name in rows.decode(String.self) { if let name = try? GroupName(name) { names.append(name) } }
                return names
            }
        } catch {
            throw PostgresConnection.storeError(error, location: location, opening: false)
        }
    }

    public func changes(of group: GroupName) -> AsyncStream<Void> {
        subscribers.subscribe(to: group)
    }

    public func close() async throws {
        listenerTask.withLock { $0?.cancel() }
        subscribers.finishAll()
        queueSubscribers.finishAll()
        connection.shutDown()
    }

    /// Listens for announced changes on a connection of its own, reconnecting after failures; returns once the first
    /// `LISTEN` is in place (or has failed: polling still works without it). The task ends when it is cancelled (by
    /// ``close()`` or when the store is released).
    private func startListening() async {
        let channel = PostgresSchema.channel(schema: location.schema)
        let queueChannel = PostgresSchema.queueChannel(schema: location.schema)
        let (connection, subscribers, queueSubscribers, logger) = (connection, subscribers, queueSubscribers, connection.logger)
        let (ready, signalReady) = AsyncStream<Void>.makeStream()
        let task = Task {
            while !Task.isCancelled {
                do {
                    try await connection.client.withConnection { connection in
                        try await connection.listen(on: channel) { groupNotifications in
                            try await connection.listen(on: queueChannel) { queueNotifications in
                                signalReady.yield()
                                // Both channels on the one connection; when either sequence ends, listen again.
                                try await withThrowingTaskGroup(of: Void.self) { group in
                                    group.addTask {
                                        for try await notification in groupNotifications {
                                            guard let group = try? GroupName(notification.payload) else { continue }
                                            subscribers.announce(group)
                                        }
                                    }
                                    group.addTask {
                                        for try await notification in queueNotifications {
                                            guard let queue = try? QueueName(notification.payload) else { continue }
                                            queueSubscribers.announce(queue)
                                        }
                                    }
                                    try await group.next()
                                    group.cancelAll()
                                }
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

    // MARK: Decoding

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
        /// A partition heartbeat's outcomes, and the token of each `granted` one.
        var outcomes: [String]?
        var tokens: [Int64?]?
        var left: Bool?
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
        var partitioned: Bool?
        var lastToken: Int64
        var members: [Member]
        var leases: [Lease]
    }

    private static func reply(_ json: ReplyJSON, to heartbeat: Heartbeat, location: PostgresLocation) throws -> HeartbeatReply {
        func corrupt(_ what: String) -> StoreError {
            StoreError(.corrupt, "group \"\(heartbeat.group)\" in \(location): \(what)")
        }
        let view = try admitted(
            json, group: heartbeat.group, member: heartbeat.member.id, size: heartbeat.activeGoal, partitioned: false,
            location: location, corrupt: corrupt
        )
        let outcome: HeartbeatReply.Outcome
        switch json.outcome {
        case "none": outcome = .none
        case "granted": outcome = .granted(try grantedToken(json.token, in: view, corrupt: corrupt))
        case "not-granted": outcome = .notGranted
        case "renewed": outcome = .renewed
        case "lost": outcome = .lost
        case "released": outcome = .released
        case "left": outcome = .left
        default: throw corrupt("the server sent an unknown outcome \(json.outcome ?? "nil")")
        }
        return HeartbeatReply(outcome: outcome, view: view)
    }

    /// The server's answer `text` to a partition heartbeat: one outcome per operation, or its rejection.
    static func reply(_ text: String, to heartbeat: PartitionHeartbeat, location: PostgresLocation) throws -> PartitionHeartbeatReply {
        func corrupt(_ what: String) -> StoreError {
            StoreError(.corrupt, "group \"\(heartbeat.group)\" in \(location): \(what)")
        }
        let json: ReplyJSON
        do {
            json = try JSONDecoder().decode(ReplyJSON.self, from: Data(text.utf8))
        } catch {
            throw corrupt("the reply cannot be read: \(error)")
        }
        let view = try admitted(
            json, group: heartbeat.group, member: heartbeat.member.id, size: heartbeat.partitions, partitioned: true,
            location: location, corrupt: corrupt
        )
        guard view.partitioned else { throw corrupt("the server answered with the view of a group of slots") }
        let count = heartbeat.operations.count
        guard let outcomes = json.outcomes, let tokens = json.tokens, outcomes.count == count, tokens.count == count else {
            throw corrupt("the server answered \(json.outcomes?.count ?? 0) of \(count) operations")
        }
        return PartitionHeartbeatReply(
            outcomes: try zip(outcomes, tokens).map { outcome, token in
                switch outcome {
                case "granted": .granted(try grantedToken(token, in: view, corrupt: corrupt))
                case "not-granted": .notGranted
                case "renewed": .renewed
                case "lost": .lost
                case "released": .released
                default: throw corrupt("the server sent an unknown outcome \(outcome)")
                }
            },
            left: json.left ?? false,
            view: view
        )
    }

    /// The view of a heartbeat's reply, once the reply is neither an error nor a rejection. `size` and
    /// `partitioned`: the group's shape as the heartbeat asked for it.
    private static func admitted(
        _ json: ReplyJSON,
        group: GroupName,
        member: MemberID,
        size: Int,
        partitioned: Bool,
        location: PostgresLocation,
        corrupt: (String) -> StoreError
    ) throws -> GroupView {
        if let error = json.error { throw corrupt(error) }
        switch json.rejection {
        case "member-id-in-use":
            throw HeartbeatRejection.memberIDInUse(member, host: json.host ?? "?", pid: json.pid ?? 0)
        case "active-goal-mismatch":
            throw HeartbeatRejection.activeGoalMismatch(group: group, stored: json.stored ?? 0, requested: size)
        case "partitions-mismatch":
            throw HeartbeatRejection.partitionsMismatch(group: group, stored: json.stored, requested: partitioned ? size : nil)
        case nil:
            break
        case let other?:
            throw corrupt("the server sent an unknown rejection \"\(other)\"")
        }
        guard let viewJSON = json.view else { throw corrupt("the server sent a reply without a group view") }
        let view = try view(viewJSON, location: location)
        guard view.group == group else { throw corrupt("the server answered with the view of group \"\(view.group)\"") }
        return view
    }

    /// A granted token, which the group's counter must have counted.
    private static func grantedToken(_ token: Int64?, in view: GroupView, corrupt: (String) -> StoreError) throws -> FencingToken {
        guard let token, token >= 1, UInt64(token) <= view.lastToken?.rawValue ?? 0 else {
            throw corrupt("granted token \(token.map(String.init) ?? "nil") is not a token of the group")
        }
        return FencingToken(rawValue: UInt64(token))
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
        let partitioned = json.partitioned ?? false
        guard (1...(partitioned ? PartitionAssignment.maximumPartitions : GroupConfiguration.maximumActiveGoal)).contains(json.goal) else {
            throw corrupt(partitioned ? "partitions \(json.goal)" : "active goal \(json.goal)")
        }
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
            partitioned: partitioned,
            lastToken: json.lastToken == 0 ? nil : FencingToken(rawValue: UInt64(json.lastToken)),
            members: members,
            leases: leases
        )
    }
}
