import ArgumentParser
import Foundation
import Logging
import Understudy
import UnderstudyCore
import UnderstudySupervisor
import UnixSignals

/// `understudy run`: takes part in a group and runs COMMAND while this member is active.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join a group and run COMMAND only while this member holds a lease.",
        discussion: """
            The command starts on activation with UNDERSTUDY_GROUP, UNDERSTUDY_MEMBER_ID and \
            UNDERSTUDY_FENCING_TOKEN in its environment (with --partitions, one command per partition owned, each \
            under its own watchdog and with its partition's token, UNDERSTUDY_PARTITION and UNDERSTUDY_PARTITIONS), in its own process group, with stdin, stdout and stderr \
            passed through, and without the store's credentials. On deactivation it gets SIGTERM, then SIGKILL \
            after --stop-grace; when the lease itself is at risk its whole tree is killed before the lease can \
            expire, whatever --stop-grace says. A watchdog process kills the tree if this supervisor dies or \
            freezes, proves it dead, and only then releases the slot. The tree is a cgroup v2 leaf when one can \
            be made (--containment).

            SIGTERM or SIGINT: stop the command, release the slot at once, exit 0. A second SIGINT kills the command's tree \
            at once, releases the slot once it is dead and exits (130).

            \(ExitStatus.help)
            """
    )

    @Option(help: "The group to join (A-Z a-z 0-9 . _ -).")
    var group: String

    @Option(help: "sqlite:///path/to.db, a bare path, or postgres://user:password@host:5432/db (default: $UNDERSTUDY_STORE, else /var/lib/understudy/understudy.db, one for every user of the host).")
    var store: String?

    @Option(name: .customLong("password-file"), help: ArgumentHelp("A file whose first line is the PostgreSQL password (else the URL's, PGPASSWORD, or a pgpass file: passfile=, PGPASSFILE, ~/.pgpass).", valueName: "path"))
    var passwordFile: String?

    @Option(help: "How the command's process tree is held: auto (a cgroup v2 leaf when one can be made), cgroup, or process-group (the fallback: process group and child subreapers).")
    var containment: Containment.Choice = .auto

    @Option(help: "This member's id in the group (default: PID@HOST).")
    var id: String?

    @Option(help: "Higher weights rank first and preempt lower ones (0...1000000).")
    var weight: Int = 50

    @Option(name: .customLong("active-goal"), help: "How many members are active at once.")
    var activeGoal: Int = 1

    @Option(help: ArgumentHelp("Partition the group into P partitions (1...4096): run one COMMAND per partition this member owns, with UNDERSTUDY_PARTITION and UNDERSTUDY_PARTITIONS.", valueName: "P"))
    var partitions: Int?

    @Option(parsing: .unconditional, help: "Heartbeat interval I.")
    var heartbeat: String = "100ms"

    @Option(parsing: .unconditional, help: "Activation interval T (lease length), greater than 2 x I.")
    var activation: String = "500ms"

    @Option(parsing: .unconditional, help: "Preparation interval P (0 < P < T): warn the next in line when the active is silent for P.")
    var preparation: String?

    @Flag(name: .customLong("no-preempt"), help: "Never hand over to a member of higher weight.")
    var noPreempt = false

    @Option(name: .customLong("stop-grace"), parsing: .unconditional, help: "Time between SIGTERM and SIGKILL when the lease is safe.")
    var stopGrace: String = "5s"

    @Option(name: .customLong("restart-backoff"), parsing: .unconditional, help: "Rest after the command exits by itself (default: max(T, 1s)).")
    var restartBackoff: String?

    @Flag(help: "Run the command once when active, then exit with its status.")
    var once = false

    @Option(name: .customLong("on-activate"), help: "Shell command run on activation, before COMMAND starts.")
    var onActivate: String?

    @Option(name: .customLong("on-deactivate"), help: "Shell command run on deactivation, after COMMAND has exited.")
    var onDeactivate: String?

    @Option(name: .customLong("hook-timeout"), parsing: .unconditional, help: "Hooks are killed after this long (default: T - I); always when the lease is at risk.")
    var hookTimeout: String?

    @Option(name: .customLong("log-format"), help: "text or json.")
    var logFormat: LogFormat = .text

    @Option(help: ArgumentHelp("Serve /healthz, /active, /status and /metrics on HOST:PORT (port 0: any free port).", valueName: "host:port"))
    var http: String?

    @Argument(parsing: .postTerminator, help: "The command to supervise, after `--`.")
    var command: [String] = []

    /// Rejects `understudy run …` without `--` before ArgumentParser reads the command as options.
    static func checkTerminator(_ arguments: [String]) throws(CLIError) {
        guard arguments.first == "run", !arguments.contains("--"),
              !arguments.contains(where: { ["-h", "--help", "help"].contains($0) })
        else { return }
        throw CLIError(.usage, "missing `--` before the command: understudy run --group NAME [OPTIONS] -- COMMAND [ARGS...]")
    }

    func run() async throws {
        hidePasswordsInArguments()
        // A closed pipe (an HTTP client gone, a log reader gone) is an error to handle, not a reason to die.
        signal(SIGPIPE, SIG_IGN)
        let settings = try await settings()
        let supervisor: any SupervisorShell
        if let partitions {
            let configuration: PartitionedGroupConfiguration
            do {
                configuration = try PartitionedGroupConfiguration(group: settings.configuration, partitions: partitions)
            } catch {
                throw CLIError(.invalidConfiguration, error.description)
            }
            do throws(SupervisorError) {
                supervisor = try PartitionedSupervisor(settings: settings, partitions: configuration)
            } catch {
                throw CLIError(error)
            }
        } else {
            supervisor = Supervisor(settings: settings, metrics: settings.http.map { _ in bootstrapMetrics() })
        }
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
        let handler = Task {
            var interrupts = 0
            for await signal in signals {
                if signal == .sigint { interrupts += 1 }
                if supervisor.shutdown(reason: "\(signal)") { continue }
                if interrupts == 2 {
                    await supervisor.stopAtOnce(reason: "second SIGINT")
                    Glibc.exit(ExitStatus.interrupted.rawValue)
                }
            }
        }
        defer { handler.cancel() }
        let outcome: Supervisor.Outcome
        do {
            outcome = try await supervisor.run()
        } catch {
            throw CLIError(error)
        }
        try? await settings.store.close()
        switch outcome {
        case .left, .gaveUp: throw ExitCode(0)
        case .ranOnce(let status): throw ExitCode(status)
        case .stoppedAtOnce: throw ExitCode(ExitStatus.interrupted.rawValue)
        }
    }

    /// Validates every option; each mistake is a ``CLIError`` with its own exit status.
    func settings() async throws(CLIError) -> Supervisor.Settings {
        guard let program = command.first, !program.isEmpty else {
            throw CLIError(.usage, "missing command after `--`: understudy run --group NAME [OPTIONS] -- COMMAND [ARGS...]")
        }
        if partitions != nil {
            let conflicts = [
                (once, "--once cannot be used with --partitions: every member of a partitioned group is active for its share"),
                (activeGoal != 1, "--active-goal cannot be used with --partitions: every member of a partitioned group is active for its share"),
                (http != nil, "--http cannot be used with --partitions yet: a partitioned member serves no HTTP endpoint"),
            ]
            if let (_, message) = conflicts.first(where: { $0.0 }) { throw CLIError(.usage, message) }
        }
        let executable = try Self.resolve(program)
        let heartbeat = try Self.duration(heartbeat, option: "heartbeat")
        let activation = try Self.duration(activation, option: "activation")
        let preparation = try preparation.map { text throws(CLIError) in try Self.duration(text, option: "preparation") }
        let grace = try Self.duration(stopGrace, option: "stop-grace", allowZero: true)
        let hookTimeout = try hookTimeout.map { text throws(CLIError) in try Self.duration(text, option: "hook-timeout") }
        let backoff = try restartBackoff.map { text throws(CLIError) in try Self.duration(text, option: "restart-backoff", allowZero: true) }
        let httpAddress = try http.map { text throws(CLIError) in
            do throws(SupervisorError) { return try HTTPAddress.parse(text) } catch { throw CLIError(error) }
        }
        let environment = ProcessInfo.processInfo.environment
        let location = try StoreLocation.parse(store).resolvingPassword(passwordFile: passwordFile, environment: environment)
        let configuration: GroupConfiguration
        let memberID: MemberID
        do {
            configuration = try GroupConfiguration(
                name: GroupName(group),
                activeGoal: activeGoal,
                heartbeatInterval: heartbeat,
                activationInterval: activation,
                preparationInterval: preparation,
                preemption: !noPreempt
            )
            memberID = try MemberID(id ?? Self.defaultID())
            _ = try MemberInfo(id: memberID, incarnation: "", weight: weight, host: "", pid: 0)
        } catch {
            throw CLIError(.invalidConfiguration, error.description)
        }
        let containment: Containment
        do throws(SupervisorError) { containment = try Containment.choose(self.containment) } catch { throw CLIError(error) }
        let store = try await location.openForWriting()
        return Supervisor.Settings(
            configuration: configuration,
            memberID: memberID,
            weight: weight,
            store: store,
            releaseStoreURL: location.urlWithCredentials,
            containment: containment,
            environment: location.strippingCredentials(from: environment),
            command: [executable] + command.dropFirst(),
            stopGrace: grace,
            restart: Supervisor.RestartPolicy(backoff: backoff ?? max(activation, .seconds(1))),
            once: once,
            onActivate: onActivate,
            onDeactivate: onDeactivate,
            hookTimeout: hookTimeout ?? activation - heartbeat,
            logFormat: logFormat,
            http: httpAddress
        )
    }

    /// A duration option, or a one-line error naming the option.
    static func duration(_ text: String, option: String, allowZero: Bool = false) throws(CLIError) -> Duration {
        let value: Duration
        do {
            value = try parseDuration(text)
        } catch {
            throw CLIError(.invalidDuration, "--\(option): \(error)")
        }
        guard value > .zero || (allowZero && value == .zero) else {
            throw CLIError(.invalidDuration, "invalid --\(option) \"\(text)\": it must be greater than zero")
        }
        return value
    }

    /// Finds `program` as the shell would; a path must name an executable file.
    static func resolve(_ program: String) throws(CLIError) -> String {
        func check(_ path: String) -> ExitStatus? {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return .commandNotFound }
            guard !isDirectory.boolValue, access(path, X_OK) == 0 else { return .commandNotExecutable }
            return nil
        }
        if program.contains("/") {
            switch check(program) {
            case nil: return program
            case .commandNotFound?: throw CLIError(.commandNotFound, "command not found: \(program)")
            case _?: throw CLIError(.commandNotExecutable, "command not executable: \(program) (check its permissions)")
            }
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        var sawNotExecutable: String?
        for directory in path.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = ((directory.isEmpty ? "." : String(directory)) as NSString).appendingPathComponent(program)
            switch check(candidate) {
            case nil: return candidate
            case .commandNotExecutable?: sawNotExecutable = sawNotExecutable ?? candidate
            case _?: continue
            }
        }
        if let sawNotExecutable {
            throw CLIError(.commandNotExecutable, "command not executable: \(sawNotExecutable) (check its permissions)")
        }
        throw CLIError(.commandNotFound, "command not found: \(program) (not in PATH)")
    }

    /// `PID@HOST`, with characters a member id cannot hold replaced by `-`.
    static func defaultID() -> String {
        let host = ProcessInfo.processInfo.hostName.map { character in
            character.isASCII && (character.isLetter || character.isNumber || ".-_".contains(character)) ? character : "-"
        }
        return "\(getpid())@\(String(host.prefix(100)))"
    }
}

/// What `run` needs of a supervisor, of a group of slots or a partitioned one.
protocol SupervisorShell: Sendable {
    func run() async throws(SupervisorError) -> Supervisor.Outcome
    @discardableResult func shutdown(reason: String) -> Bool
    func stopAtOnce(reason: String) async
}

extension Supervisor: SupervisorShell {}
extension PartitionedSupervisor: SupervisorShell {}

extension LogFormat: ExpressibleByArgument {}
extension Containment.Choice: ExpressibleByArgument {}
