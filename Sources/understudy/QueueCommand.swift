import ArgumentParser
import Foundation
import Logging
import Understudy
import UnderstudyCore
import UnderstudyStore
import UnderstudySupervisor
import UnixSignals

/// `understudy queue`: a durable work queue with competing consumers, for programs in any language.
struct Queue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push jobs to a durable queue, work them off with any command, and inspect the queue.",
        discussion: """
            Jobs survive every worker. A claim is a lease on the store's clock: a worker that dies or freezes loses \
            its claims when their lease expires, and they run elsewhere at once; a worker that cannot renew stops \
            its commands before then. Every claim carries a fencing token that increases per job.

            \(ExitStatus.help)
            """,
        subcommands: [Push.self, Work.self, Stats.self, List.self, Redrive.self, Cancel.self]
    )
}

/// The options every `queue` subcommand shares.
struct QueueStoreOptions: ParsableArguments {
    @Option(help: "sqlite:///path/to.db, a bare path, or postgres://user:password@host:5432/db (default: $UNDERSTUDY_STORE, else /var/lib/understudy/understudy.db).")
    var store: String?

    @Option(name: .customLong("password-file"), help: ArgumentHelp("A file whose first line is the PostgreSQL password.", valueName: "path"))
    var passwordFile: String?

    var location: StoreLocation {
        get throws(CLIError) {
            hidePasswordsInArguments()
            return try StoreLocation.parse(store).resolvingPassword(passwordFile: passwordFile, environment: ProcessInfo.processInfo.environment)
        }
    }

    /// The store, opened for writing (created if needed).
    func open() async throws(CLIError) -> (StoreLocation, any CommandStore) {
        let location = try location
        return (location, try await location.openForWriting())
    }

    static func queueName(_ text: String) throws(CLIError) -> QueueName {
        do { return try QueueName(text) } catch { throw CLIError(.invalidJob, error.description) }
    }
}

extension Queue {
    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Enqueue a job (or, with --lines, one job per line of standard input); print each job's id.",
            discussion: "The payload is PAYLOAD, else standard input. With --idempotency-key, a key that a job of the queue still holds returns that job's id instead of a new one."
        )

        @OptionGroup var options: QueueStoreOptions

        @Option(help: "The queue (A-Z a-z 0-9 . _ -).")
        var queue: String

        @Option(help: "Higher runs first (-1000...1000).")
        var priority: Int = 0

        @Option(parsing: .unconditional, help: "Claimable only after this long (e.g. 30s).")
        var delay: String?

        @Option(name: .customLong("max-attempts"), help: "Attempts before the job goes to the dead letter (1...1000).")
        var maxAttempts: Int = 5

        @Option(name: .customLong("idempotency-key"), help: "Deduplicates: at most one job of the queue holds it (up to 255 bytes).")
        var idempotencyKey: String?

        @Option(name: .customLong("ordering-key"), help: "Jobs with one key run one at a time, in enqueue order (up to 255 bytes).")
        var orderingKey: String?

        @Flag(help: "Enqueue one job per line of standard input, in batches.")
        var lines = false

        @Argument(help: "The payload (default: standard input).")
        var payload: String?

        func run() async throws {
            let delay = try delay.map { text throws(CLIError) in try Run.duration(text, option: "delay", allowZero: true) } ?? .zero
            let queue = try QueueStoreOptions.queueName(queue)
            if lines, payload != nil { throw CLIError(.usage, "give either PAYLOAD or --lines, not both") }
            if lines, idempotencyKey != nil { throw CLIError(.usage, "--idempotency-key names one job: it cannot go with --lines") }
            let payloads: [[UInt8]]
            if let payload {
                payloads = [Array(payload.utf8)]
            } else {
                let input = Array(FileHandle.standardInput.readDataToEndOfFile())
                payloads = lines ? input.split(separator: UInt8(ascii: "\n")).map(Array.init) : [input]
            }
            let specs: [JobSpec]
            do {
                specs = try payloads.map { bytes throws(JobError) in
                    try JobSpec(
                        queue: queue, payload: bytes, priority: priority, delay: delay, maxAttempts: maxAttempts,
                        idempotencyKey: idempotencyKey, orderingKey: orderingKey
                    )
                }
            } catch {
                throw CLIError(.invalidJob, error.description)
            }
            let (location, store) = try await options.open()
            defer { Task { try? await store.close() } }
            do {
                for enqueued in try await WorkQueue(store: store).enqueue(specs) { printLine(String(enqueued.id.rawValue)) }
            } catch {
                throw CLIError(.storeUnavailable, "cannot enqueue on \(location): \(error)")
            }
        }
    }

    struct Work: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Claim jobs of a queue and run COMMAND once per job, under the watchdog.",
            discussion: """
                COMMAND gets the payload on standard input and UNDERSTUDY_QUEUE, UNDERSTUDY_JOB_ID, \
                UNDERSTUDY_JOB_ATTEMPT, UNDERSTUDY_FENCING_TOKEN and UNDERSTUDY_WORKER_ID in its environment \
                (without the store's credentials). Exit status 0 completes the job; any other fails it: it is retried after an \
                exponential backoff with jitter, and goes to the dead letter after its last attempt. COMMAND never \
                outlives its claim: it is killed before the claim can expire, even if this worker freezes or dies.

                SIGTERM or SIGINT: claim nothing more, let running commands finish within --stop-grace, then stop \
                them and give their jobs back at once; exit 0.
                """
        )

        @OptionGroup var options: QueueStoreOptions

        @Option(help: "The queue (A-Z a-z 0-9 . _ -).")
        var queue: String

        @Option(help: "How many commands run at once (1...1000).")
        var concurrency: Int = 1

        @Option(name: .customLong("claim-lease"), parsing: .unconditional, help: "How long a claim lasts on the store's clock without renewal.")
        var claimLease: String = "30s"

        @Option(parsing: .unconditional, help: "How often all claims are renewed, in one round trip (default: a third of --claim-lease).")
        var renew: String?

        @Option(parsing: .unconditional, help: "How often an idle worker looks for jobs when no announcement wakes it.")
        var poll: String = "1s"

        @Option(name: .customLong("stop-grace"), parsing: .unconditional, help: "On shutdown, how long running commands may go on; then SIGTERM, and SIGKILL after as long again.")
        var stopGrace: String = "10s"

        @Option(parsing: .unconditional, help: "How long done and cancelled jobs are kept (their idempotency keys with them).")
        var retention: String = "1h"

        @Option(help: "This worker's id (default: PID@HOST).")
        var id: String?

        @Option(help: "How each command's process tree is held: auto, cgroup, or process-group.")
        var containment: Containment.Choice = .auto

        @Option(name: .customLong("log-format"), help: "text or json.")
        var logFormat: LogFormat = .text

        @Option(help: ArgumentHelp("Enqueue a job named NAME (its payload) on SCHEDULE: \"@every 30s\" or a cron expression in UTC (\"*/5 * * * *\"). Exactly once per tick: the workers elect one enqueuer (group QUEUE.periodic), and each tick's job has its own idempotency key. Repeatable.", valueName: "NAME=SCHEDULE"))
        var periodic: [String] = []

        @Argument(parsing: .postTerminator, help: "The command to run per job, after `--`.")
        var command: [String] = []

        func run() async throws {
            hidePasswordsInArguments()
            signal(SIGPIPE, SIG_IGN)
            guard let program = command.first, !program.isEmpty else {
                throw CLIError(.usage, "missing command after `--`: understudy queue work --queue NAME [OPTIONS] -- COMMAND [ARGS...]")
            }
            let executable = try Run.resolve(program)
            let lease = try Run.duration(claimLease, option: "claim-lease")
            let renewal = try renew.map { text throws(CLIError) in try Run.duration(text, option: "renew") }
            let poll = try Run.duration(poll, option: "poll")
            let grace = try Run.duration(stopGrace, option: "stop-grace", allowZero: true)
            let retention = try Run.duration(retention, option: "retention", allowZero: true)
            let queue = try QueueStoreOptions.queueName(queue)
            let configuration: QueueWorkerConfiguration
            do {
                let worker = WorkerID(id: try MemberID(id ?? Run.defaultID()), incarnation: UUID().uuidString.lowercased())
                configuration = try QueueWorkerConfiguration(
                    queue: queue, worker: worker, concurrency: concurrency, claimLease: lease, renewInterval: renewal,
                    pollInterval: poll, stopGrace: grace
                )
            } catch {
                throw CLIError(.invalidConfiguration, error.description)
            }
            let periodicJobs = try periodic.map { text throws(CLIError) in
                guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
                    throw CLIError(.invalidJob, "invalid --periodic \"\(text)\": use NAME=SCHEDULE, e.g. cleanup=*/5 * * * *")
                }
                do {
                    let schedule = try PeriodicSchedule(parsing: String(text[text.index(after: equals)...]))
                    return try PeriodicJob(name: String(text[..<equals]), schedule: schedule, queue: queue)
                } catch {
                    throw CLIError(.invalidJob, "--periodic: \(error)")
                }
            }
            let chosen: Containment
            do throws(SupervisorError) { chosen = try Containment.choose(containment) } catch { throw CLIError(error) }
            let location = try options.location
            let store = try await location.openForWriting()
            let timeline = configuration.timeline(sentAt: .zero)
            let runner = JobCommand(
                command: [executable] + command.dropFirst(),
                environment: location.strippingCredentials(from: ProcessInfo.processInfo.environment),
                worker: configuration.worker.id, containment: chosen, stopGrace: grace, margin: timeline.killMargin
            )
            let format = logFormat
            let logger = Logger(label: "understudy") { _ in LineLogHandler(format: format) }
            let worker = QueueWorker(configuration: configuration, store: store, retention: retention, logger: logger) { job in
                try await runner.run(job)
            }
            let enqueuer: PeriodicEnqueuer?
            do {
                enqueuer = periodicJobs.isEmpty
                    ? nil : try PeriodicEnqueuer(jobs: periodicJobs, queue: queue, store: store, memberID: configuration.worker.id, logger: logger)
            } catch {
                throw CLIError(.invalidConfiguration, error.description)
            }
            let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
            let handler = Task {
                for await _ in signals {
                    worker.shutdown()
                    enqueuer?.leave()
                }
            }
            defer { handler.cancel() }
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await worker.run() }
                    if let enqueuer { group.addTask { try await enqueuer.run() } }
                    try await group.waitForAll()
                }
            } catch MemberError.rejected(let rejection) {
                let status: ExitStatus = switch rejection {
                case .memberIDInUse: .memberIDInUse
                case .activeGoalMismatch, .partitionsMismatch: .activeGoalMismatch
                }
                throw CLIError(status, "the periodic enqueuer was refused: \(rejection)")
            }
            try? await store.close()
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Count the jobs of each queue by state, with the age of the oldest pending one.",
            discussion: """
                JSON (version 1; fields are only ever added): {"schemaVersion": 1, "store": "…", "queues": \
                [{"queue": "q", "scheduled": 0, "pending": 0, "running": 0, "done": 0, "dead": 0, "cancelled": 0, \
                "oldestPendingAgeMs": 12.5 | null}]}
                """
        )

        @OptionGroup var options: QueueStoreOptions

        @Option(help: "Only this queue.")
        var queue: String?

        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            let queue = try queue.map { text throws(CLIError) in try QueueStoreOptions.queueName(text) }
            let (location, store) = try await options.open()
            defer { Task { try? await store.close() } }
            let stats: [QueueStats]
            do { stats = try await store.stats(queue: queue) } catch {
                throw CLIError(.statusError, "cannot read the store \(location): \(error)")
            }
            if json {
                let queues: [[String: Any]] = stats.map { stats in
                    var entry: [String: Any] = ["queue": stats.queue.rawValue]
                    for state in JobState.allCases { entry[state.rawValue] = stats.count(state) }
                    entry["oldestPendingAgeMs"] = stats.oldestPendingAge.map { Double($0.nanoseconds) / 1e6 } ?? NSNull()
                    return entry
                }
                let document: [String: Any] = ["schemaVersion": 1, "store": location.description, "queues": queues]
                let data = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
                printLine(String(decoding: data, as: UTF8.self))
                return
            }
            printLine("store \(location)")
            if stats.isEmpty { printLine("no jobs in the store") }
            for stats in stats {
                let counts = JobState.allCases.map { "\($0) \(stats.count($0))" }.joined(separator: ", ")
                let oldest = stats.oldestPendingAge.map { ", oldest pending \($0.formatted)" } ?? ""
                printLine("queue \(stats.queue): \(counts)\(oldest)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the jobs in one state, oldest first.")

        @OptionGroup var options: QueueStoreOptions

        @Option(help: "Only this queue.")
        var queue: String?

        @Option(help: "scheduled, pending, running, done, dead or cancelled.")
        var state: JobState = .dead

        @Option(help: "At most this many jobs.")
        var limit: Int = 100

        @Flag(help: "Print JSON, one object per job and line.")
        var json = false

        func run() async throws {
            let queue = try queue.map { text throws(CLIError) in try QueueStoreOptions.queueName(text) }
            guard limit > 0 else { throw CLIError(.usage, "invalid --limit \(limit): it must be greater than zero") }
            let (location, store) = try await options.open()
            defer { Task { try? await store.close() } }
            let jobs: [JobRecord]
            do { jobs = try await store.jobs(queue: queue, state: state, after: nil, limit: limit) } catch {
                throw CLIError(.statusError, "cannot read the store \(location): \(error)")
            }
            for job in jobs {
                if json {
                    let object: [String: Any] = [
                        "id": job.id.rawValue, "queue": job.queue.rawValue, "state": job.state.rawValue,
                        "priority": job.priority, "attempt": job.attempt, "maxAttempts": job.maxAttempts,
                        "idempotencyKey": job.idempotencyKey ?? NSNull(), "orderingKey": job.orderingKey ?? NSNull(),
                        "lastError": job.lastError ?? NSNull(), "payloadBytes": job.payloadSize,
                        "ageMs": Double(job.age.nanoseconds) / 1e6,
                    ]
                    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                    printLine(String(decoding: data, as: UTF8.self))
                } else {
                    let error = job.lastError.map { " error: \($0)" } ?? ""
                    printLine("\(job.id) \(job.queue) \(job.state) attempt \(job.attempt)/\(job.maxAttempts) age \(job.age.formatted)\(error)")
                }
            }
        }
    }

    struct Redrive: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make dead jobs pending again, with their attempts reset; print how many.")

        @OptionGroup var options: QueueStoreOptions

        @Option(help: "The queue.")
        var queue: String

        @Argument(help: "Only these jobs (default: every dead job of the queue).")
        var jobs: [Int64] = []

        func run() async throws {
            let queue = try QueueStoreOptions.queueName(queue)
            let (location, store) = try await options.open()
            defer { Task { try? await store.close() } }
            do {
                let count = try await store.redrive(queue: queue, ids: jobs.isEmpty ? nil : jobs.map(JobID.init(rawValue:)))
                printLine(String(count))
            } catch {
                throw CLIError(.storeUnavailable, "cannot redrive on \(location): \(error)")
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel a job that is not done; a running one loses its claim and its command is stopped."
        )

        @OptionGroup var options: QueueStoreOptions

        @Argument(help: "The job's id.")
        var job: Int64

        func run() async throws {
            let (location, store) = try await options.open()
            defer { Task { try? await store.close() } }
            let state: JobState?
            do { state = try await store.cancel(JobID(rawValue: job)) } catch {
                throw CLIError(.storeUnavailable, "cannot cancel on \(location): \(error)")
            }
            switch state {
            case nil: throw CLIError(.jobNotFound, "no job \(job) in the store \(location)")
            case .done?: throw CLIError(.jobNotFound, "job \(job) is done already: it cannot be cancelled")
            case let state?: printLine("\(job) \(state)")
            }
        }
    }
}

extension JobState: ExpressibleByArgument {}
