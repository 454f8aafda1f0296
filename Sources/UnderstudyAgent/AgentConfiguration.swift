import Foundation
import TOMLKit
import Understudy
import UnderstudyCore
import UnderstudySupervisor

/// The validated contents of an agent's TOML file: agent-wide settings and every member it runs.
///
/// ```toml
/// store = "sqlite:///var/lib/understudy/understudy.db"   # or postgres://…; a member may override it
/// http = "127.0.0.1:9090"
///
/// [[member]]
/// group = "billing.scheduler"
/// command = ["/usr/local/bin/scheduler", "--config", "/etc/scheduler.yaml"]
/// weight = 100
/// heartbeat = "100ms"
/// activation = "500ms"
/// ```
///
/// Two configurations are equal when they mean the same: comments, order of keys and formatting do not count,
/// and each member's settings are resolved (defaults and agent-wide values filled in) before they are compared.
/// The reference of every key is docs/agent.md.
public struct AgentConfiguration: Sendable, Hashable {
    /// One member: its group, its command and everything its supervisor needs, defaults filled in.
    public struct Member: Sendable, Hashable {
        public var key: MemberKey
        public var group: GroupConfiguration
        /// P for a partitioned member (`partitions = P`): one command per partition it owns
        /// (``PartitionedSupervisor``); `nil` for a member of a group of slots.
        public var partitions: Int?
        public var weight: Int
        /// The store as written (a URL or a path), the member's own or the agent's.
        public var store: String
        public var passwordFile: String?
        public var command: [String]
        public var environment: [String: String]
        public var workingDirectory: String?
        public var stopGrace: Duration
        public var restart: Supervisor.RestartPolicy
        public var onActivate: String?
        public var onDeactivate: String?
        public var hookTimeout: Duration
        public var containment: Containment.Choice
        public var logFormat: LogFormat
    }

    /// A queue worker (`understudy queue work`): claims jobs of a queue and runs its command once per job, each
    /// under the watchdog. Its key's group is the queue.
    public struct Worker: Sendable, Hashable {
        public var key: MemberKey
        public var queue: QueueName
        public var store: String
        public var passwordFile: String?
        public var command: [String]
        public var environment: [String: String]
        public var concurrency: Int
        public var claimLease: Duration
        public var renewInterval: Duration?
        public var pollInterval: Duration
        public var stopGrace: Duration
        /// How long done and cancelled jobs are kept.
        public var retention: Duration
        /// Periodic jobs (`periodic = { NAME = "SCHEDULE" }`), by name: enqueued once per tick by the active
        /// member of the queue's group `QUEUE.periodic`, as `understudy queue work --periodic NAME=SCHEDULE`.
        public var periodic: [String: PeriodicSchedule] = [:]
        public var containment: Containment.Choice
        public var logFormat: LogFormat

        /// The worker's settings for one incarnation (validated when the file was read).
        public func configuration(incarnation: String) throws(ConfigurationError) -> QueueWorkerConfiguration {
            try QueueWorkerConfiguration(
                queue: queue, worker: WorkerID(id: MemberID(key.id), incarnation: incarnation), concurrency: concurrency,
                claimLease: claimLease, renewInterval: renewInterval, pollInterval: pollInterval, stopGrace: stopGrace
            )
        }
    }

    public var members: [Member]
    public var workers: [Worker] = []
    /// Where the status page, `/status` and `/metrics` are served.
    public var http: HTTPAddress?
    /// The bearer token that `POST /drain` and `POST /resume` on ``http`` require; without one they are refused.
    public var httpToken: String?
    /// The control socket's path, if the file names one.
    public var control: String?

    /// The member of `key`, if the file has it.
    public func member(_ key: MemberKey) -> Member? { members.first { $0.key == key } }

    /// The worker of `key`, if the file has it.
    public func worker(_ key: MemberKey) -> Worker? { workers.first { $0.key == key } }
}

/// A member's identity in an agent: its group and its id in the group. Reloads match members by key.
public struct MemberKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var group: String
    public var id: String

    public init(group: String, id: String) {
        self.group = group
        self.id = id
    }

    public static func < (lhs: MemberKey, rhs: MemberKey) -> Bool { (lhs.group, lhs.id) < (rhs.group, rhs.id) }
    public var description: String { "\(group)/\(id)" }
}

/// One mistake in an agent's file, with the line of the key that holds it (or of its table).
public struct ConfigurationProblem: Sendable, Hashable, CustomStringConvertible {
    public var line: Int?
    /// The key as a path, `member[2].weight` (members counted from 1), or empty for the file as a whole.
    public var key: String
    public var message: String

    public var description: String {
        let place = line.map { "line \($0)" } ?? "file"
        return key.isEmpty ? "\(place): \(message)" : "\(place): \(key): \(message)"
    }
}

/// An agent's file that cannot be used: every problem in it, in line order.
public struct AgentConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var problems: [ConfigurationProblem]

    /// One line per problem, `FILE:LINE: KEY: MESSAGE`.
    public var description: String {
        problems.map { problem in
            problem.line.map { "\(file):\($0): " + (problem.key.isEmpty ? problem.message : "\(problem.key): \(problem.message)") }
                ?? "\(file): \(problem.description)"
        }.joined(separator: "\n")
    }
}

extension AgentConfiguration {
    /// What validation needs from outside the pure parser: the store and command checks of the executable.
    public struct Checks: Sendable {
        /// The id of a member whose file gives none (the host's name).
        public var defaultMemberID: String
        /// A problem with a store URL or path, `nil` when it is usable.
        public var store: @Sendable (String) -> String?
        /// A problem with a command's program, `nil` when it can be run.
        public var program: @Sendable (_ program: String, _ workingDirectory: String?) -> String?

        public init(
            defaultMemberID: String,
            store: @escaping @Sendable (String) -> String? = { _ in nil },
            program: @escaping @Sendable (String, String?) -> String? = { _, _ in nil }
        ) {
            self.defaultMemberID = defaultMemberID
            self.store = store
            self.program = program
        }
    }

    static let agentKeys: Set<String> = ["store", "password-file", "http", "http-token", "control", "containment", "log-format", "member", "worker"]
    static let workerKeys: Set<String> = [
        "queue", "id", "command", "store", "password-file", "concurrency", "claim-lease", "renew", "poll", "stop-grace",
        "retention", "environment", "periodic",
    ]
    static let memberKeys: Set<String> = [
        "group", "id", "command", "store", "password-file", "weight", "active-goal", "heartbeat", "activation",
        "preparation", "preempt", "stop-grace", "restart-backoff", "restart-backoff-max", "restart-burst",
        "restart-window", "environment", "working-directory", "on-activate", "on-deactivate", "hook-timeout",
        "partitions",
    ]

    /// Parses and validates `text`, the contents of `file`.
    ///
    /// - Throws: ``AgentConfigurationError`` with every problem found, each with its line and key.
    public static func parse(_ text: String, file: String, checks: Checks) throws(AgentConfigurationError) -> AgentConfiguration {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw AgentConfigurationError(
                file: file, problems: [ConfigurationProblem(line: error.source.begin.line, key: "", message: "not valid TOML: \(error.description)")]
            )
        } catch {
            throw AgentConfigurationError(file: file, problems: [ConfigurationProblem(line: nil, key: "", message: "not valid TOML: \(error)")])
        }
        var reader = Reader(lines: SourceLines(text), checks: checks)
        let configuration = reader.read(table)
        guard reader.problems.isEmpty else {
            throw AgentConfigurationError(file: file, problems: reader.problems.sorted { ($0.line ?? 0, $0.key) < ($1.line ?? 0, $1.key) })
        }
        return configuration
    }

    /// Reads `path` and parses it (``parse(_:file:checks:)``).
    public static func load(_ path: String, checks: Checks) throws(AgentConfigurationError) -> AgentConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AgentConfigurationError(file: path, problems: [ConfigurationProblem(line: nil, key: "", message: "cannot be read: \(String(cString: strerror(errno)))")])
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path, checks: checks)
    }
}

/// Turns a parsed TOML table into a configuration, collecting every problem instead of stopping at the first.
private struct Reader {
    let lines: SourceLines
    let checks: AgentConfiguration.Checks
    var problems: [ConfigurationProblem] = []

    init(lines: SourceLines, checks: AgentConfiguration.Checks) {
        self.lines = lines
        self.checks = checks
    }

    /// Where a value is read from: the top level, or the `[[member]]` or `[[worker]]` at an index (from 0).
    struct Place {
        var table: TOMLTable
        var member: Int?
        var array = "member"

        func path(_ key: String) -> String { member.map { "\(array)[\($0 + 1)].\(key)" } ?? key }
    }

    mutating func problem(_ place: Place, _ key: String, _ message: String) {
        problems.append(ConfigurationProblem(line: lines.line(place.array, place.member, key: key), key: place.path(key), message: message))
    }

    mutating func string(_ place: Place, _ key: String) -> String? {
        guard let value = place.table[key] else { return nil }
        guard let string = value.string else {
            problem(place, key, "expected a string, found \(value.type)")
            return nil
        }
        return string
    }

    mutating func nonEmptyString(_ place: Place, _ key: String) -> String? {
        guard let string = string(place, key) else { return nil }
        guard !string.isEmpty else {
            problem(place, key, "must not be empty")
            return nil
        }
        return string
    }

    /// The value of `key` when it has TOML type `type`; a problem naming `expected` otherwise.
    mutating func typed<Value>(_ place: Place, _ key: String, _ type: TOMLType, expected: String, _ get: (any TOMLValueConvertible) -> Value?) -> Value? {
        guard let value = place.table[key] else { return nil }
        guard value.type == type, let typed = get(value) else {
            problem(place, key, "expected \(expected), found \(value.type)")
            return nil
        }
        return typed
    }

    mutating func integer(_ place: Place, _ key: String) -> Int? { typed(place, key, .int, expected: "an integer") { $0.int } }

    mutating func bool(_ place: Place, _ key: String) -> Bool? { typed(place, key, .bool, expected: "true or false") { $0.bool } }

    mutating func duration(_ place: Place, _ key: String, allowZero: Bool = false) -> Duration? {
        guard let text = string(place, key) else { return nil }
        let value: Duration
        do {
            value = try parseDuration(text)
        } catch {
            problem(place, key, "\(error)")
            return nil
        }
        guard value > .zero || (allowZero && value == .zero) else {
            problem(place, key, "\"\(text)\" must be greater than zero")
            return nil
        }
        return value
    }

    mutating func choice<Choice: RawRepresentable & CaseIterable>(_ place: Place, _ key: String, as: Choice.Type) -> Choice? where Choice.RawValue == String {
        guard let text = string(place, key) else { return nil }
        guard let choice = Choice(rawValue: text) else {
            problem(place, key, "\"\(text)\" is none of \(Choice.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return choice
    }

    mutating func unknownKeys(_ place: Place, known: Set<String>) {
        for key in place.table.keys.sorted() where !known.contains(key) {
            problem(place, key, "unknown key (see docs/agent.md)")
        }
    }

    mutating func read(_ table: TOMLTable) -> AgentConfiguration {
        let top = Place(table: table, member: nil)
        unknownKeys(top, known: AgentConfiguration.agentKeys)
        let store = nonEmptyString(top, "store")
        if let store, let problem = checks.store(store) { self.problem(top, "store", problem) }
        let passwordFile = nonEmptyString(top, "password-file")
        var http: HTTPAddress?
        if let text = string(top, "http") {
            do throws(SupervisorError) { http = try HTTPAddress.parse(text) } catch {
                problem(top, "http", "expected HOST:PORT such as 127.0.0.1:9090 or [::1]:9090, found \"\(text)\"")
            }
        }
        let httpToken = nonEmptyString(top, "http-token")
        let control = nonEmptyString(top, "control")
        let containment = choice(top, "containment", as: Containment.Choice.self) ?? .auto
        let logFormat = choice(top, "log-format", as: LogFormat.self) ?? .text

        var members: [AgentConfiguration.Member] = []
        var seen: [MemberKey: Int] = [:]
        if let value = table["member"] {
            if let array = value.array, array.allSatisfy({ $0.table != nil }) {
                for (index, element) in array.enumerated() {
                    guard let memberTable = element.table else { continue }
                    let place = Place(table: memberTable, member: index)
                    guard let member = readMember(place, store: store, passwordFile: passwordFile, containment: containment, logFormat: logFormat) else { continue }
                    if let first = seen[member.key] {
                        problem(place, "id", "member \"\(member.key.id)\" of group \"\(member.key.group)\" is already member[\(first + 1)]; give each an `id`")
                        continue
                    }
                    if let other = members.first(where: { $0.key.group == member.key.group && $0.partitions != member.partitions }) {
                        let described = other.partitions.map { "partitions = \($0)" } ?? "no partitions"
                        problem(place, memberTable["partitions"] == nil ? "group" : "partitions",
                                "member[\((seen[other.key] ?? 0) + 1)] of group \"\(member.key.group)\" has \(described): the members of one group must agree on `partitions`")
                        continue
                    }
                    seen[member.key] = index
                    members.append(member)
                }
            } else {
                problem(top, "member", "expected [[member]] tables")
            }
        }
        var workers: [AgentConfiguration.Worker] = []
        if let value = table["worker"] {
            if let array = value.array, array.allSatisfy({ $0.table != nil }) {
                for (index, element) in array.enumerated() {
                    guard let workerTable = element.table else { continue }
                    let place = Place(table: workerTable, member: index, array: "worker")
                    guard let worker = readWorker(place, store: store, passwordFile: passwordFile, containment: containment, logFormat: logFormat) else { continue }
                    if workers.contains(where: { $0.key == worker.key }) {
                        problem(place, "id", "worker \"\(worker.key.id)\" of queue \"\(worker.key.group)\" is already in the file; give each an `id`")
                        continue
                    }
                    workers.append(worker)
                }
            } else {
                problem(top, "worker", "expected [[worker]] tables")
            }
        }
        if members.isEmpty, workers.isEmpty, problems.isEmpty {
            problem(top, "member", "no [[member]] and no [[worker]]: the agent would run nothing")
        }
        return AgentConfiguration(members: members, workers: workers, http: http, httpToken: httpToken, control: control)
    }

    /// The command of a member or worker: a non-empty array of strings whose program can be run.
    mutating func command(_ place: Place, workingDirectory: String?) -> [String]? {
        guard let value = place.table["command"] else {
            problem(place, "command", "missing: a command to run, [\"/path/to/program\", \"argument\", …]")
            return nil
        }
        guard let array = value.array, !array.isEmpty, array.allSatisfy({ $0.string != nil }), let program = array[0].string, !program.isEmpty else {
            problem(place, "command", "expected a non-empty array of strings, [\"/path/to/program\", \"argument\", …]")
            return nil
        }
        if let problem = checks.program(program, workingDirectory) { self.problem(place, "command", problem) }
        return array.compactMap(\.string)
    }

    /// A table of strings, `{ NAME = "value" }`.
    mutating func environment(_ place: Place) -> [String: String] {
        guard let value = place.table["environment"] else { return [:] }
        guard let table = value.table, table.keys.allSatisfy({ table[$0]?.string != nil }) else {
            problem(place, "environment", "expected a table of strings, { NAME = \"value\" }")
            return [:]
        }
        for key in table.keys where key.isEmpty || key.contains("=") {
            problem(place, "environment", "\"\(key)\" is not a variable name")
        }
        return table.keys.reduce(into: [:]) { $0[$1] = table[$1]?.string }
    }

    /// The store of a member or worker: its own (checked), else the top level's; and the password file that goes with it.
    mutating func store(_ place: Place, agentStore: String?, agentPasswordFile: String?) -> (store: String?, passwordFile: String?) {
        let own = nonEmptyString(place, "store")
        if let own, let problem = checks.store(own) { self.problem(place, "store", problem) }
        // A member's own store does not take the agent's password file.
        let passwordFile = nonEmptyString(place, "password-file") ?? (own == nil ? agentPasswordFile : nil)
        let store = own ?? agentStore
        if store == nil { problem(place, "store", "missing: set `store` at the top of the file or here") }
        return (store, passwordFile)
    }

    mutating func readWorker(
        _ place: Place, store agentStore: String?, passwordFile agentPasswordFile: String?,
        containment: Containment.Choice, logFormat: LogFormat
    ) -> AgentConfiguration.Worker? {
        unknownKeys(place, known: AgentConfiguration.workerKeys)
        let before = problems.count
        var queue: QueueName?
        if let name = nonEmptyString(place, "queue") {
            do throws(JobError) { queue = try QueueName(name) } catch { problem(place, "queue", "\(error)") }
        } else if place.table["queue"] == nil {
            problem(place, "queue", "missing: every worker names its queue")
        }
        let id = nonEmptyString(place, "id") ?? checks.defaultMemberID
        let command = command(place, workingDirectory: nil)
        let (store, passwordFile) = store(place, agentStore: agentStore, agentPasswordFile: agentPasswordFile)
        let environment = environment(place)
        let retention = duration(place, "retention", allowZero: true) ?? .seconds(3_600)
        let periodic = queue.map { periodicJobs(place, queue: $0, retention: retention) } ?? [:]
        guard let queue, let command, let store else { return nil }
        let worker = AgentConfiguration.Worker(
            key: MemberKey(group: queue.rawValue, id: id), queue: queue, store: store, passwordFile: passwordFile,
            command: command, environment: environment, concurrency: integer(place, "concurrency") ?? 1,
            claimLease: duration(place, "claim-lease") ?? .seconds(30), renewInterval: duration(place, "renew"),
            pollInterval: duration(place, "poll") ?? .seconds(1), stopGrace: duration(place, "stop-grace", allowZero: true) ?? .seconds(10),
            retention: retention, periodic: periodic, containment: containment, logFormat: logFormat
        )
        do {
            _ = try worker.configuration(incarnation: "")
        } catch {
            problem(place, Self.workerKey(of: error), error.description)
        }
        return problems.count == before ? worker : nil
    }

    /// A worker's periodic jobs, `{ NAME = "SCHEDULE" }`, each validated as `queue work --periodic NAME=SCHEDULE`.
    mutating func periodicJobs(_ place: Place, queue: QueueName, retention: Duration) -> [String: PeriodicSchedule] {
        guard let value = place.table["periodic"] else { return [:] }
        guard let table = value.table, table.keys.allSatisfy({ table[$0]?.string != nil }) else {
            problem(place, "periodic", "expected a table of schedules, { NAME = \"@every 30s\" } or { NAME = \"*/5 * * * *\" }")
            return [:]
        }
        var jobs: [String: PeriodicSchedule] = [:]
        for name in table.keys.sorted() {
            guard let text = table[name]?.string else { continue }
            do throws(JobError) {
                let schedule = try PeriodicSchedule(parsing: text)
                _ = try PeriodicJob(name: name, schedule: schedule, queue: queue)
                jobs[name] = schedule
            } catch {
                problem(place, "periodic", "\(name): \(error)")
            }
        }
        if !jobs.isEmpty {
            do throws(ConfigurationError) {
                _ = try GroupName(PeriodicEnqueuer.groupName(of: queue))
            } catch {
                problem(place, "periodic", "the queue's name is too long to name its enqueuers' group: \(error)")
            }
            let catchUp = PeriodicEnqueuer.catchUp(activationInterval: PeriodicEnqueuer.defaultActivationInterval)
            if retention < catchUp {
                problem(place, "retention", "must be at least \(catchUp.formatted) with periodic jobs: a new enqueuer enqueues the ticks of the last \(catchUp.formatted) again, and only kept jobs make that a no-op")
            }
        }
        return jobs
    }

    static func workerKey(of error: ConfigurationError) -> String {
        switch error {
        case .concurrencyOutOfRange: "concurrency"
        case .invalidMemberID: "id"
        case .nonPositiveInterval(let name, _): name == "poll" ? "poll" : name == "renew" ? "renew" : "claim-lease"
        case .activationNotAboveTwiceHeartbeat: "claim-lease"
        case .invalidGroupName, .activeGoalOutOfRange, .weightOutOfRange, .preparationOutOfRange, .partitionsOutOfRange,
             .nonPositiveLimit:
            "worker"
        }
    }

    mutating func readMember(
        _ place: Place, store agentStore: String?, passwordFile agentPasswordFile: String?,
        containment: Containment.Choice, logFormat: LogFormat
    ) -> AgentConfiguration.Member? {
        unknownKeys(place, known: AgentConfiguration.memberKeys)
        let before = problems.count
        let groupName = nonEmptyString(place, "group")
        if place.table["group"] == nil { problem(place, "group", "missing: every member names its group") }
        let id = nonEmptyString(place, "id") ?? checks.defaultMemberID
        let (store, passwordFile) = store(place, agentStore: agentStore, agentPasswordFile: agentPasswordFile)
        let weight = integer(place, "weight") ?? 50
        let activeGoal = integer(place, "active-goal") ?? 1
        let heartbeat = duration(place, "heartbeat") ?? .milliseconds(100)
        let activation = duration(place, "activation") ?? .milliseconds(500)
        let preparation = duration(place, "preparation")
        let preempt = bool(place, "preempt") ?? true
        let stopGrace = duration(place, "stop-grace", allowZero: true) ?? .seconds(5)
        let backoff = duration(place, "restart-backoff", allowZero: true) ?? max(activation, .seconds(1))
        let maximumBackoff = duration(place, "restart-backoff-max", allowZero: true)
        if let maximumBackoff, maximumBackoff < backoff { problem(place, "restart-backoff-max", "must not be less than restart-backoff (\(backoff.formatted))") }
        let burst = integer(place, "restart-burst")
        if let burst, burst < 1 { problem(place, "restart-burst", "must be at least 1") }
        let window = duration(place, "restart-window") ?? .seconds(60)
        let environment = environment(place)
        let workingDirectory = nonEmptyString(place, "working-directory")
        if let workingDirectory {
            var isDirectory: ObjCBool = false
            if !workingDirectory.hasPrefix("/") {
                problem(place, "working-directory", "must be an absolute path")
            } else if !FileManager.default.fileExists(atPath: workingDirectory, isDirectory: &isDirectory) || !isDirectory.boolValue {
                problem(place, "working-directory", "no such directory: \(workingDirectory)")
            }
        }
        let command = command(place, workingDirectory: workingDirectory)
        let onActivate = nonEmptyString(place, "on-activate")
        let onDeactivate = nonEmptyString(place, "on-deactivate")
        let hookTimeout = duration(place, "hook-timeout")
        let partitions = integer(place, "partitions")
        if partitions != nil {
            if place.table["active-goal"] != nil {
                problem(place, "active-goal", "cannot be used with `partitions`: every member of a partitioned group is active for its share")
            }
            for key in ["restart-backoff-max", "restart-burst", "restart-window"] where place.table[key] != nil {
                problem(place, key, "cannot be used with `partitions` yet: a partition whose command exits by itself is taken again after restart-backoff, without a limit")
            }
        }

        var group: GroupConfiguration?
        if let groupName {
            do {
                group = try GroupConfiguration(
                    name: GroupName(groupName), activeGoal: activeGoal, heartbeatInterval: heartbeat,
                    activationInterval: activation, preparationInterval: preparation, preemption: preempt
                )
            } catch {
                problem(place, Self.key(of: error), error.description)
            }
        }
        if let group, let partitions {
            do throws(ConfigurationError) {
                _ = try PartitionedGroupConfiguration(group: group, partitions: partitions)
            } catch {
                problem(place, Self.key(of: error), error.description)
            }
        }
        do {
            _ = try MemberInfo(id: MemberID(id), incarnation: "", weight: weight, host: "", pid: 0)
        } catch {
            problem(place, Self.key(of: error), error.description)
        }
        guard problems.count == before, let group, let command, let store else { return nil }
        return AgentConfiguration.Member(
            key: MemberKey(group: group.name.rawValue, id: id),
            group: group,
            partitions: partitions,
            weight: weight,
            store: store,
            passwordFile: passwordFile,
            command: command,
            environment: environment,
            workingDirectory: workingDirectory,
            stopGrace: stopGrace,
            restart: Supervisor.RestartPolicy(backoff: backoff, maximumBackoff: maximumBackoff, burst: burst, window: window),
            onActivate: onActivate,
            onDeactivate: onDeactivate,
            hookTimeout: hookTimeout ?? activation - heartbeat,
            containment: containment,
            logFormat: logFormat
        )
    }

    /// The key a core validation error is about.
    static func key(of error: ConfigurationError) -> String {
        switch error {
        case .invalidGroupName: "group"
        case .invalidMemberID: "id"
        case .activeGoalOutOfRange: "active-goal"
        case .weightOutOfRange: "weight"
        case .nonPositiveInterval, .activationNotAboveTwiceHeartbeat: "activation"
        case .preparationOutOfRange: "preparation"
        case .partitionsOutOfRange: "partitions"
        case .concurrencyOutOfRange, .nonPositiveLimit: "member"
        }
    }
}

/// The lines of a TOML file's keys, found in its text (TOMLKit reports positions only for syntax errors): each
/// `key =` line, under the top level or under the n-th `[[member]]` (and its sub-tables).
struct SourceLines {
    private var top: [String: Int] = [:]
    /// The `[[member]]` and `[[worker]]` tables, by array name, in order.
    private var arrays: [String: [(header: Int, keys: [String: Int])]] = [:]

    init(_ text: String) {
        var member: (array: String, index: Int)?
        // Inside a value that spans lines (an array, an inline table, a multi-line string) no line starts a key.
        var open = Openness()
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = index + 1
            let trimmed = raw.trimmingCharacters(in: .whitespaces)
            if open.isOpen {
                open.scan(Substring(trimmed))
                continue
            }
            if trimmed.hasPrefix("[[") {
                let name = trimmed.dropFirst(2).prefix { $0 != "]" }.trimmingCharacters(in: .whitespaces)
                arrays[name, default: []].append((line, [:]))
                member = (name, arrays[name, default: []].count - 1)
                continue
            }
            if trimmed.hasPrefix("[") {
                let name = trimmed.dropFirst().prefix { $0 != "]" }.trimmingCharacters(in: .whitespaces)
                if let member, name.hasPrefix(member.array + ".") {
                    let key = String(name.dropFirst(member.array.count + 1))
                    if arrays[member.array]?[member.index].keys[key] == nil { arrays[member.array]?[member.index].keys[key] = line }
                } else {
                    member = nil
                    if top[name] == nil { top[name] = line }
                }
                continue
            }
            guard let equals = trimmed.firstIndex(of: "="), !trimmed.hasPrefix("#") else { continue }
            open.scan(trimmed[trimmed.index(after: equals)...])
            let key = trimmed[..<equals].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
            let first = String(key.split(separator: ".").first ?? Substring(key))
            if let member {
                if arrays[member.array]?[member.index].keys[first] == nil { arrays[member.array]?[member.index].keys[first] = line }
            } else if top[first] == nil {
                top[first] = line
            }
        }
    }

    /// How far a value is from closing: unclosed brackets and braces outside strings, and whether a multi-line
    /// string is open.
    private struct Openness {
        var depth = 0
        var multiLineString: Character?

        var isOpen: Bool { depth > 0 || multiLineString != nil }

        mutating func scan(_ text: Substring) {
            var rest = text
            var quote: Character?
            while let character = rest.first {
                if let delimiter = multiLineString {
                    if rest.hasPrefix(String(repeating: delimiter, count: 3)) {
                        multiLineString = nil
                        rest = rest.dropFirst(3)
                    } else {
                        rest = rest.dropFirst(character == "\\" ? 2 : 1)
                    }
                    continue
                }
                if let open = quote {
                    if character == open { quote = nil }
                    rest = rest.dropFirst(character == "\\" && open == "\"" ? 2 : 1)
                    continue
                }
                switch character {
                case "\"", "'":
                    if rest.hasPrefix(String(repeating: character, count: 3)) {
                        multiLineString = character
                        rest = rest.dropFirst(3)
                        continue
                    }
                    quote = character
                case "[", "{": depth += 1
                case "]", "}": depth -= 1
                case "#": return
                default: break
                }
                rest = rest.dropFirst()
            }
        }
    }

    /// The line of `key` at the top level (`index` nil) or in the `index`-th table of `array`, else of that
    /// table's header.
    func line(_ array: String, _ index: Int?, key: String) -> Int? {
        guard let index else { return top[key] ?? arrays[key]?.first?.header }
        guard let tables = arrays[array], tables.indices.contains(index) else { return nil }
        return tables[index].keys[key] ?? tables[index].header
    }
}

extension AgentConfiguration {
    /// The `control` key of the file at `path`, read even when the rest of the file is invalid (so that `plan`
    /// can still reach the agent to show what is wrong); `nil` when the file sets none or cannot be parsed.
    public static func controlPath(inFileAt path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path),
              let table = try? TOMLTable(string: String(decoding: data, as: UTF8.self))
        else { return nil }
        return table["control"]?.string
    }
}
