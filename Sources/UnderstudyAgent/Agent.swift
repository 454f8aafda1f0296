import Foundation
import Logging
import Understudy
import UnderstudyCore
import UnderstudyStore
import UnderstudySupervisor

/// Runs every member of an ``AgentConfiguration``, one ``Supervisor`` each (a ``PartitionedSupervisor`` for a
/// partitioned member), and every queue worker with its periodic jobs, and reloads the file by difference.
///
/// Members that name the same store (and password file) share one store handle and its heartbeat batcher, so
/// their heartbeats, which fall on one grid in a process, travel together in one round trip per interval (the
/// executable opens stores with ``HeartbeatBatcher/sharedWindow``); every command has its own watchdog,
/// so killing the agent, even with SIGKILL, kills every command's tree before its lease can pass.
///
/// Like a supervisor it touches nothing process-wide: the executable turns signals into ``reload()``,
/// ``stop(reason:)`` and ``stopAtOnce(reason:)``.
public actor Agent {
    /// A store opened for members.
    public struct OpenedStore: Sendable {
        public var store: any CoordinationStore & PartitionLeaseStore & JobQueueStore
        /// The URL with its credentials, for the watchdogs' release of a dead agent's slots.
        public var releaseURL: String
        /// The environment of commands and hooks: the agent's own, without the store's credentials.
        public var environment: [String: String]

        public init(store: any CoordinationStore & PartitionLeaseStore & JobQueueStore, releaseURL: String, environment: [String: String]) {
            self.store = store
            self.releaseURL = releaseURL
            self.environment = environment
        }
    }

    /// What the executable provides: how stores are opened, programs found and files checked.
    public struct Host: Sendable {
        /// Opens a store by its text and password file.
        public var openStore: @Sendable (_ store: String, _ passwordFile: String?) async throws(AgentError) -> OpenedStore
        /// The path a command's program runs from (as the shell finds it).
        public var resolveProgram: @Sendable (_ program: String, _ workingDirectory: String?) -> String
        /// The checks a file must pass, at start and on every reload.
        public var checks: AgentConfiguration.Checks
        /// Chooses the containment of a member's commands.
        public var containment: @Sendable (Containment.Choice) throws(SupervisorError) -> Containment

        public init(
            openStore: @escaping @Sendable (String, String?) async throws(AgentError) -> OpenedStore,
            resolveProgram: @escaping @Sendable (String, String?) -> String,
            checks: AgentConfiguration.Checks,
            containment: @escaping @Sendable (Containment.Choice) throws(SupervisorError) -> Containment = { choice throws(SupervisorError) in try Containment.choose(choice) }
        ) {
            self.openStore = openStore
            self.resolveProgram = resolveProgram
            self.checks = checks
            self.containment = containment
        }
    }

    /// One running member.
    struct Running {
        var member: AgentConfiguration.Member
        var supervisor: MemberSupervisor
        var task: Task<Void, Never>
        var generation: Int
        var startedAt: Date
    }

    /// One running queue worker, with the enqueuer of its periodic jobs if it has any.
    struct RunningWorker {
        var worker: AgentConfiguration.Worker
        var queueWorker: QueueWorker
        var enqueuer: PeriodicEnqueuer?
        var task: Task<Void, Never>
        var generation: Int

        /// Asks the worker (its running jobs are given back within its stop grace) and the enqueuer to stop.
        func shutdown() {
            queueWorker.shutdown()
            enqueuer?.leave()
        }
    }

    private struct StoreKey: Hashable {
        var store: String
        var passwordFile: String?

        init(_ member: AgentConfiguration.Member) { (store, passwordFile) = (member.store, member.passwordFile) }
        init(_ worker: AgentConfiguration.Worker) { (store, passwordFile) = (worker.store, worker.passwordFile) }
    }

    /// The file's path, read again on every reload.
    public nonisolated let path: String
    private let host: Host
    private let logger: Logger
    private(set) var configuration: AgentConfiguration
    private(set) var running: [MemberKey: Running] = [:]
    /// Members that ended by themselves (gave up restarting, refused by the store), with why.
    private(set) var ended: [MemberKey: String] = [:]
    private(set) var runningWorkers: [MemberKey: RunningWorker] = [:]
    /// Workers that ended by themselves, with why.
    private(set) var endedWorkers: [MemberKey: String] = [:]
    /// Groups drained by an operator: their members stay standby, also across a restart of the member.
    private(set) var drainedGroups: Set<String> = []
    private var stores: [StoreKey: OpenedStore] = [:]
    private var generation = 0
    private var failovers = FailoverHistory()
    /// Each worker's queue as the store last counted it (about once a second).
    private(set) var queueStats: [MemberKey: QueueStats] = [:]
    private var observer: Task<Void, Never>?
    /// Serves the status page on the file's `http`; a reload moves it.
    private var statusPage: StatusPageServer?
    /// Reloads and stops one at a time.
    private var busy = false
    private var waitingForTurn: [CheckedContinuation<Void, Never>] = []

    public init(configuration: AgentConfiguration, path: String, host: Host, logger: Logger) {
        self.configuration = configuration
        self.path = path
        self.host = host
        self.logger = logger
    }

    /// Opens the stores and starts every member.
    ///
    /// - Throws: ``AgentError`` when a store cannot be opened or a containment had; nothing is left running.
    public func start() async throws(AgentError) {
        await takeTurn()
        defer { endTurn() }
        try await openStores(for: configuration.members.map(StoreKey.init) + configuration.workers.map(StoreKey.init))
        for member in configuration.members { startMember(member) }
        for worker in configuration.workers { startWorker(worker) }
        observer = Task { [weak self] in
            var round = 0
            while !Task.isCancelled {
                await self?.observeGroups()
                // Queue depths cost a store read each: once a second is enough for a status page.
                if round.isMultiple(of: 10) { await self?.countQueues() }
                round += 1
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        logger.notice("agent started", metadata: ["members": "\(configuration.members.count)", "file": "\(path)"])
    }

    /// The bearer token of the file as last loaded, which drain and resume over HTTP require.
    public var httpToken: String? { configuration.httpToken }

    /// Serves the status page with `server` on the file's `http` (when it has one), and on every reload moves it
    /// to the file's new `http`.
    ///
    /// - Throws: ``AgentError`` with ``AgentError/Kind/unavailable`` when the address cannot be listened on.
    public func serveStatusPage(with server: StatusPageServer) async throws(AgentError) {
        statusPage = server
        try await server.serve(configuration.http)
    }

    /// What a reload of the file would change, without changing anything.
    ///
    /// - Throws: ``AgentError`` with every problem of the file when it is invalid.
    public func plan() throws(AgentError) -> AgentPlan {
        let next = try load()
        return AgentPlan(from: configuration, to: next)
    }

    /// Reads the file again and applies the difference: stops the removed and changed members, then starts the
    /// added and changed ones; unchanged members keep running untouched. An invalid file, or a new store that
    /// cannot be opened, changes nothing.
    ///
    /// - Returns: what was applied.
    /// - Throws: ``AgentError``, the reason the file was refused.
    @discardableResult
    public func reload() async throws(AgentError) -> AgentPlan {
        await takeTurn()
        defer { endTurn() }
        let next: AgentConfiguration
        do {
            next = try load()
        } catch {
            logger.error("reload refused: the file is invalid; nothing changed", metadata: ["file": "\(path)"])
            for problem in error.message.split(separator: "\n") { logger.error("\(problem)") }
            throw error
        }
        let plan = AgentPlan(from: configuration, to: next)
        let starting = plan.starting.compactMap(next.member)
        let startingWorkers = (plan.addedWorkers + plan.changedWorkers).sorted().compactMap(next.worker)
        do {
            try await openStores(for: starting.map(StoreKey.init) + startingWorkers.map(StoreKey.init))
            try await statusPage?.serve(next.http)
        } catch {
            await closeUnusedStores()
            logger.error("reload refused; nothing changed", metadata: ["error": "\(error.message)"])
            throw error
        }
        await withTaskGroup(of: Void.self) { group in
            for key in plan.stopping {
                guard let running = running.removeValue(forKey: key) else { continue }
                group.addTask {
                    running.supervisor.shutdown(reason: "reload")
                    await running.task.value
                }
            }
            for key in plan.removedWorkers + plan.changedWorkers {
                guard let running = runningWorkers.removeValue(forKey: key) else { continue }
                group.addTask {
                    running.shutdown()
                    await running.task.value
                }
            }
        }
        for key in plan.stopping { ended[key] = nil }
        for key in plan.removedWorkers + plan.changedWorkers { endedWorkers[key] = nil }
        configuration = next
        for member in starting { startMember(member) }
        for worker in startingWorkers { startWorker(worker) }
        await closeUnusedStores()
        logger.notice("reloaded", metadata: [
            "added": "\(plan.added.count)", "removed": "\(plan.removed.count)", "changed": "\(plan.changed.count)",
            "unchanged": "\(plan.unchanged.count)",
        ])
        return plan
    }

    /// Steps every member of `group` down; they stay standby until ``resume(group:)``.
    ///
    /// - Throws: ``AgentError`` when the agent runs no member of `group`.
    public func drain(group: String) throws(AgentError) {
        let members = try runningMembers(of: group)
        drainedGroups.insert(group)
        for member in members { member.supervisor.drain() }
    }

    /// Ends a drain of `group`, and starts again members of it that gave up restarting.
    ///
    /// - Throws: ``AgentError`` when the file has no member of `group`.
    public func resume(group: String) throws(AgentError) {
        let members = configuration.members.filter { $0.key.group == group }
        guard !members.isEmpty else { throw AgentError(.unknownGroup, "the agent runs no member of group \"\(group)\"") }
        drainedGroups.remove(group)
        for member in members {
            if let running = running[member.key] {
                running.supervisor.resume()
            } else {
                ended[member.key] = nil
                startMember(member)
            }
        }
    }

    /// Stops every member gracefully (each command gets SIGTERM, then SIGKILL after its stop grace), waits for
    /// their slots to be released, and closes the stores.
    public func stop(reason: String) async {
        await takeTurn()
        defer { endTurn() }
        observer?.cancel()
        let stopping = running.values
        let workers = runningWorkers.values
        running = [:]
        runningWorkers = [:]
        await withTaskGroup(of: Void.self) { group in
            for member in stopping {
                group.addTask {
                    member.supervisor.shutdown(reason: reason)
                    await member.task.value
                }
            }
            for worker in workers {
                group.addTask {
                    worker.shutdown()
                    await worker.task.value
                }
            }
        }
        await closeUnusedStores()
    }

    /// Kills every command's tree at once, then releases the slots (see ``Supervisor/stopAtOnce(reason:)``).
    /// Queue workers are told to stop; the jobs they still run die with this process (their watchdogs).
    public func stopAtOnce(reason: String) async {
        for worker in runningWorkers.values { worker.shutdown() }
        let supervisors = running.values.map(\.supervisor)
        await withTaskGroup(of: Void.self) { group in
            for supervisor in supervisors { group.addTask { await supervisor.stopAtOnce(reason: reason) } }
        }
    }

    // MARK: Members

    private func startMember(_ member: AgentConfiguration.Member) {
        guard let opened = stores[StoreKey(member)] else { return }
        let containment: Containment
        do throws(SupervisorError) {
            containment = try host.containment(member.containment)
        } catch {
            ended[member.key] = error.message
            logger.error("member not started", metadata: ["group": "\(member.key.group)", "member": "\(member.key.id)", "error": "\(error.message)"])
            return
        }
        var environment = opened.environment
        environment.merge(member.environment) { _, own in own }
        let program = host.resolveProgram(member.command[0], member.workingDirectory)
        // Validated when the file was parsed.
        guard let memberID = try? MemberID(member.key.id) else { return }
        let settings = Supervisor.Settings(
            configuration: member.group,
            memberID: memberID,
            weight: member.weight,
            store: opened.store,
            releaseStoreURL: opened.releaseURL,
            containment: containment,
            environment: environment,
            command: [program] + member.command.dropFirst(),
            workingDirectory: member.workingDirectory,
            stopGrace: member.stopGrace,
            restart: member.restart,
            once: false,
            onActivate: member.onActivate,
            onDeactivate: member.onDeactivate,
            hookTimeout: member.hookTimeout,
            logFormat: member.logFormat,
            http: nil
        )
        let supervisor: MemberSupervisor
        if let partitions = member.partitions {
            do throws(SupervisorError) {
                let configuration: PartitionedGroupConfiguration
                do throws(ConfigurationError) {
                    configuration = try PartitionedGroupConfiguration(group: member.group, partitions: partitions)
                } catch {
                    throw SupervisorError(.invalidConfiguration, error.description)
                }
                supervisor = .partitioned(try PartitionedSupervisor(settings: settings, partitions: configuration))
            } catch {
                ended[member.key] = error.message
                logger.error("member not started", metadata: ["group": "\(member.key.group)", "member": "\(member.key.id)", "error": "\(error.message)"])
                return
            }
        } else {
            supervisor = .slots(Supervisor(settings: settings, metrics: nil))
        }
        if drainedGroups.contains(member.key.group) { supervisor.drain() }
        generation += 1
        let generation = generation
        let key = member.key
        let task = Task {
            let outcome: String?
            do throws(SupervisorError) {
                switch try await supervisor.run() {
                case .left, .stoppedAtOnce, .ranOnce: outcome = nil
                case .gaveUp(let exits): outcome = "gave up: the command exited \(exits) times within \(member.restart.window.formatted)"
                }
            } catch {
                outcome = error.message
            }
            self.memberEnded(key, generation: generation, outcome: outcome)
        }
        running[key] = Running(member: member, supervisor: supervisor, task: task, generation: generation, startedAt: Date())
    }

    private func startWorker(_ worker: AgentConfiguration.Worker) {
        guard let opened = stores[StoreKey(worker)] else { return }
        let configuration: QueueWorkerConfiguration
        let containment: Containment
        do {
            configuration = try worker.configuration(incarnation: UUID().uuidString.lowercased())
            containment = try host.containment(worker.containment)
        } catch {
            endedWorkers[worker.key] = "\(error)"
            return
        }
        var environment = opened.environment
        environment.merge(worker.environment) { _, own in own }
        let runner = JobCommand(
            command: [host.resolveProgram(worker.command[0], nil)] + worker.command.dropFirst(),
            environment: environment, worker: configuration.worker.id, containment: containment,
            stopGrace: worker.stopGrace, margin: configuration.timeline(sentAt: .zero).killMargin
        )
        let format = worker.logFormat
        let logger = Logger(label: "understudy") { _ in LineLogHandler(format: format) }
        let queueWorker = QueueWorker(configuration: configuration, store: opened.store, retention: worker.retention, logger: logger) { job in
            try await runner.run(job)
        }
        let enqueuer: PeriodicEnqueuer?
        do {
            // Validated when the file was read.
            let jobs = try worker.periodic.sorted { $0.key < $1.key }.map { name, schedule throws(JobError) in
                try PeriodicJob(name: name, schedule: schedule, queue: worker.queue)
            }
            enqueuer = jobs.isEmpty
                ? nil : try PeriodicEnqueuer(jobs: jobs, queue: worker.queue, store: opened.store, memberID: configuration.worker.id, logger: logger)
        } catch {
            endedWorkers[worker.key] = "\(error)"
            return
        }
        generation += 1
        let generation = generation
        let key = worker.key
        let task = Task {
            let outcome: String?
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await queueWorker.run() }
                    if let enqueuer { group.addTask { try await enqueuer.run() } }
                    try await group.waitForAll()
                }
                outcome = nil
            } catch {
                outcome = "\(error)"
            }
            self.workerEnded(key, generation: generation, outcome: outcome)
        }
        runningWorkers[key] = RunningWorker(worker: worker, queueWorker: queueWorker, enqueuer: enqueuer, task: task, generation: generation)
    }

    private func workerEnded(_ key: MemberKey, generation: Int, outcome: String?) {
        guard runningWorkers[key]?.generation == generation else { return }
        runningWorkers[key] = nil
        endedWorkers[key] = outcome ?? "stopped"
        logger.error("worker ended", metadata: ["queue": "\(key.group)", "worker": "\(key.id)", "reason": "\(outcome ?? "stopped")"])
    }

    /// A member's supervisor returned by itself (not stopped by a reload or stop): it is no longer running.
    private func memberEnded(_ key: MemberKey, generation: Int, outcome: String?) {
        guard running[key]?.generation == generation else { return }
        running[key] = nil
        ended[key] = outcome ?? "left its group"
        logger.error("member ended", metadata: ["group": "\(key.group)", "member": "\(key.id)", "reason": "\(outcome ?? "left")"])
    }

    /// Each group of the agent's members as the newest store answer to one of them shows it.
    func groupStatuses() async -> [String: GroupStatus] {
        var statuses: [String: GroupStatus] = [:]
        for running in running.values where statuses[running.member.key.group] == nil {
            if let status = await running.supervisor.groupStatus() { statuses[running.member.key.group] = status }
        }
        return statuses
    }

    /// The groups' failovers, newest first.
    var failoverHistory: [FailoverHistory.Failover] { failovers.failovers.reversed() }

    private func countQueues() async {
        for (key, running) in runningWorkers {
            guard let store = stores[StoreKey(running.worker)]?.store else { continue }
            if let stats = try? await store.stats(queue: running.worker.queue).first { queueStats[key] = stats }
        }
    }

    private func observeGroups() async {
        let now = Date()
        for status in await groupStatuses().values { failovers.observe(status, at: now) }
    }

    private func runningMembers(of group: String) throws(AgentError) -> [Running] {
        let members = running.values.filter { $0.member.key.group == group }
        guard !members.isEmpty else { throw AgentError(.unknownGroup, "the agent runs no member of group \"\(group)\"") }
        return members
    }

    // MARK: Stores and the file

    private func load() throws(AgentError) -> AgentConfiguration {
        do {
            return try AgentConfiguration.load(path, checks: host.checks)
        } catch {
            throw AgentError(.invalidConfiguration, error.description)
        }
    }

    /// Opens the stores not open yet; on failure closes those it opened.
    private func openStores(for keys: [StoreKey]) async throws(AgentError) {
        var opened: [StoreKey] = []
        for key in keys {
            guard stores[key] == nil else { continue }
            do {
                stores[key] = try await host.openStore(key.store, key.passwordFile)
                opened.append(key)
            } catch {
                for key in opened { try? await stores.removeValue(forKey: key)?.store.close() }
                throw error
            }
        }
    }

    private func closeUnusedStores() async {
        let used = Set(running.values.map { StoreKey($0.member) } + runningWorkers.values.map { StoreKey($0.worker) })
        for key in stores.keys where !used.contains(key) {
            try? await stores.removeValue(forKey: key)?.store.close()
        }
    }

    private func takeTurn() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waitingForTurn.append($0) }
    }

    private func endTurn() {
        if waitingForTurn.isEmpty { busy = false } else { waitingForTurn.removeFirst().resume() }
    }
}

/// Why the agent refused a request or could not start, with a one-line (or one line per problem) message.
public struct AgentError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// The file is invalid; the message lists every problem.
        case invalidConfiguration = "invalid-configuration"
        /// A store cannot be opened.
        case storeUnavailable = "store-unavailable"
        /// The agent runs no member of the group named.
        case unknownGroup = "unknown-group"
        /// The control socket or HTTP address cannot be used.
        case unavailable
        /// A request the control socket does not know.
        case badRequest = "bad-request"
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
