import ArgumentParser
import Foundation
import Logging
import UnderstudyAgent
import UnderstudyStore
import UnderstudySupervisor
import UnixSignals

/// `understudy agent`: every member of one host from one TOML file (docs/agent.md).
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run every member of a host from one TOML file; reload it without disturbing the rest.",
        discussion: """
            `understudy agent --config FILE` runs each [[member]] of FILE under its own supervisor and watchdog. \
            SIGHUP (or `understudy agent reload`) reloads FILE: only edited members restart, added ones start, \
            removed ones stop; an invalid file changes nothing. SIGTERM or SIGINT stops every member and exits 0; \
            a second SIGINT kills every command's tree at once and exits 130. The other subcommands talk to a \
            running agent over its control socket (FILE's `control`, else FILE with the extension .sock).

            \(ExitStatus.help)
            """,
        subcommands: [AgentRun.self, AgentCheck.self, AgentPlanCommand.self, AgentReload.self, AgentStatusCommand.self, AgentDrain.self, AgentResume.self],
        defaultSubcommand: AgentRun.self
    )
}

/// The options every `agent` subcommand takes.
struct AgentFileOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: ArgumentHelp("The agent's TOML file.", valueName: "file"))
    var config: String

    @Option(name: .customLong("control"), help: ArgumentHelp("The control socket (default: the file's `control`, else FILE with the extension .sock).", valueName: "path"))
    var control: String?

    var path: String {
        config.hasPrefix("/") ? config : ((FileManager.default.currentDirectoryPath + "/" + config) as NSString).standardizingPath
    }

    /// The control socket: `--control`, the file's `control` (read even from an otherwise invalid file), or the
    /// file's path with the extension `.sock`.
    var socket: String {
        if let control { return control }
        if let configured = AgentConfiguration.controlPath(inFileAt: path) { return configured }
        return (path as NSString).deletingPathExtension + ".sock"
    }

    /// The checks of `understudy run`, applied to each member: a store URL it can use, a program it can run.
    var checks: AgentConfiguration.Checks {
        let directory = (path as NSString).deletingLastPathComponent
        return AgentConfiguration.Checks(
            defaultMemberID: Self.hostID(),
            store: { store in
                do throws(CLIError) {
                    _ = try StoreLocation.parse(Self.resolve(store, in: directory))
                    return nil
                } catch {
                    return error.message
                }
            },
            program: { program, workingDirectory in
                do throws(CLIError) {
                    _ = try Run.resolve(Self.resolve(program: program, in: workingDirectory))
                    return nil
                } catch {
                    return error.message
                }
            }
        )
    }

    /// A bare relative store path is relative to the file's directory, not to wherever the agent was started.
    static func resolve(_ store: String, in directory: String) -> String {
        store.contains("://") || store.hasPrefix("/") ? store : directory + "/" + store
    }

    /// A relative program path with a slash is relative to the member's working directory.
    static func resolve(program: String, in workingDirectory: String?) -> String {
        guard let workingDirectory, program.contains("/"), !program.hasPrefix("/") else { return program }
        return workingDirectory + "/" + program
    }

    /// The host's name as a member id (the default id of an agent's members).
    static func hostID() -> String {
        let host = ProcessInfo.processInfo.hostName.map { character in
            character.isASCII && (character.isLetter || character.isNumber || ".-_".contains(character)) ? character : "-"
        }
        return String(host.prefix(128))
    }

    func load() throws(CLIError) -> AgentConfiguration {
        do {
            return try AgentConfiguration.load(path, checks: checks)
        } catch {
            throw CLIError(.invalidAgentFile, error.description)
        }
    }

    /// Sends a request to the running agent; its body on success, else the agent's error as a ``CLIError``.
    func request(_ method: String, _ route: String) throws(CLIError) -> String {
        let reply: (status: Int, body: String)
        do {
            reply = try ControlClient.request(method, route, socket: socket)
        } catch {
            throw CLIError(.agentNotRunning, error.message)
        }
        let body = reply.body.hasSuffix("\n") ? String(reply.body.dropLast()) : reply.body
        switch reply.status {
        case 200: return body
        case 422: throw CLIError(.invalidAgentFile, body)
        case 404: throw CLIError(.unknownGroup, body)
        default: throw CLIError(.storeUnavailable, body)
        }
    }
}

/// `understudy agent [run] --config FILE`.
struct AgentRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the agent (the default subcommand).")

    @OptionGroup var file: AgentFileOptions

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let configuration = try file.load()
        let format = configuration.members.first?.logFormat ?? .text
        var logger = Logger(label: "understudy") { _ in LineLogHandler(format: format) }
        logger[metadataKey: "agent"] = "\(getpid())"
        let registry = bootstrapMetrics()
        let directory = (file.path as NSString).deletingLastPathComponent
        let environment = ProcessInfo.processInfo.environment
        let host = Agent.Host(
            openStore: { store, passwordFile throws(AgentError) in
                do throws(CLIError) {
                    let location = try StoreLocation.parse(AgentFileOptions.resolve(store, in: directory))
                        .resolvingPassword(passwordFile: passwordFile, environment: environment)
                    return Agent.OpenedStore(
                        store: try await location.openForWriting(batchWindow: HeartbeatBatcher.sharedWindow),
                        releaseURL: location.urlWithCredentials,
                        environment: location.strippingCredentials(from: environment)
                    )
                } catch {
                    throw AgentError(.storeUnavailable, error.message)
                }
            },
            resolveProgram: { program, workingDirectory in
                (try? Run.resolve(AgentFileOptions.resolve(program: program, in: workingDirectory))) ?? program
            },
            checks: file.checks
        )
        let agent = Agent(configuration: configuration, path: file.path, host: host, logger: logger)
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
        do throws(AgentError) {
            try await agent.start()
        } catch {
            throw CLIError(.storeUnavailable, error.message)
        }
        let control: HTTPEndpoint
        do throws(AgentError) {
            control = try await ControlSocket.start(agent: agent, at: file.socket, logger: logger)
        } catch {
            await agent.stop(reason: "start failed")
            throw CLIError(.controlSocketUnavailable, error.message)
        }
        logger.notice("control socket", metadata: ["path": "\(file.socket)"])
        let page = StatusPageServer(agent: agent, registry: registry, logger: logger)
        do throws(AgentError) {
            try await agent.serveStatusPage(with: page)
        } catch {
            await control.stop()
            unlink(file.socket)
            await agent.stop(reason: "start failed")
            throw CLIError(.httpUnavailable, error.message)
        }
        SystemdNotification.send("READY=1")

        var interrupts = 0
        var stopping = false
        for await signal in signals {
            if signal == .sighup {
                guard !stopping else { continue }
                SystemdNotification.send("RELOADING=1\nMONOTONIC_USEC=\(SystemdNotification.monotonicMicroseconds())")
                _ = try? await agent.reload()
                SystemdNotification.send("READY=1")
                continue
            }
            if signal == .sigint { interrupts += 1 }
            if interrupts >= 2 {
                await agent.stopAtOnce(reason: "second SIGINT")
                unlink(file.socket)
                Glibc.exit(ExitStatus.interrupted.rawValue)
            }
            guard !stopping else { continue }
            stopping = true
            SystemdNotification.send("STOPPING=1")
            // Stops beside this loop, so that a second SIGINT is still heard while the members stop.
            let socket = file.socket
            Task {
                await agent.stop(reason: "\(signal)")
                await page.stop()
                await control.stop()
                unlink(socket)
                Glibc.exit(0)
            }
        }
    }
}

/// `understudy agent check --config FILE`.
struct AgentCheck: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "Validate FILE: every problem with its line and key.")

    @OptionGroup var file: AgentFileOptions

    func run() throws {
        let configuration = try file.load()
        let workers = configuration.workers.count
        printLine("\(file.path): ok, \(configuration.members.count) member\(configuration.members.count == 1 ? "" : "s")"
            + (workers == 0 ? "" : ", \(workers) worker\(workers == 1 ? "" : "s")"))
    }
}

/// `understudy agent plan --config FILE`.
struct AgentPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "plan", abstract: "Show what a reload of FILE would change in the running agent.")

    @OptionGroup var file: AgentFileOptions

    func run() throws {
        printLine(try file.request("GET", "/plan"))
    }
}

/// `understudy agent reload --config FILE`.
struct AgentReload: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reload", abstract: "Reload FILE in the running agent; print what changed.")

    @OptionGroup var file: AgentFileOptions

    func run() throws {
        printLine(try file.request("POST", "/reload"))
    }
}

/// `understudy agent status --config FILE`.
struct AgentStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the running agent's members, groups and failovers.")

    @OptionGroup var file: AgentFileOptions

    @Flag(help: "The whole status document as JSON (docs/agent.md).")
    var json = false

    func run() throws {
        let document = try file.request("GET", "/status")
        guard !json else { return printLine(document) }
        printLine(Self.table(document))
    }

    /// One line per member of the agent, then each failover: what an operator reads first.
    static func table(_ document: String) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(document.utf8)) as? [String: Any] else { return document }
        var lines = ["agent pid \(object["pid"] ?? "-") \(object["file"] ?? "")"]
        for member in object["members"] as? [[String: Any]] ?? [] {
            var line = "\(member["group"] ?? "")/\(member["id"] ?? "")  \(member["state"] ?? "")"
            if let token = member["token"] as? NSNumber { line += "  token=\(token)" }
            if let partitions = member["partitions"] as? [[String: Any]] {
                let owned = partitions.map { "\($0["partition"] ?? "")=\($0["token"] ?? "")" }
                line += "  partitions \(owned.count)/\(member["partitionCount"] ?? "?")"
                if !owned.isEmpty { line += " (partition=token \(owned.joined(separator: " ")))" }
            }
            if member["drained"] as? Bool == true { line += "  drained" }
            if let ended = member["ended"] as? String { line += "  (\(ended))" }
            lines.append(line)
        }
        for failover in (object["failovers"] as? [[String: Any]] ?? []).prefix(5) {
            let from = (failover["from"] as? [String] ?? []).joined(separator: ",")
            let to = (failover["to"] as? [String] ?? []).joined(separator: ",")
            lines.append("failover \(failover["at"] ?? "") \(failover["group"] ?? ""): \(from.isEmpty ? "none" : from) -> \(to.isEmpty ? "none" : to) (\(failover["reason"] ?? ""))")
        }
        return lines.joined(separator: "\n")
    }
}

/// `understudy agent drain GROUP`.
struct AgentDrain: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "drain", abstract: "Step the agent's members of GROUP down; they stay standby until resumed.")

    @OptionGroup var file: AgentFileOptions

    @Argument(help: "The group.")
    var group: String

    func run() throws {
        printLine(try file.request("POST", AgentFileOptions.route("drain", group)))
    }
}

/// `understudy agent resume GROUP`.
struct AgentResume: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "End a drain of GROUP (and restart its members that gave up).")

    @OptionGroup var file: AgentFileOptions

    @Argument(help: "The group.")
    var group: String

    func run() throws {
        printLine(try file.request("POST", AgentFileOptions.route("resume", group)))
    }
}

extension AgentFileOptions {
    /// `/ACTION/GROUP`, the group percent-encoded.
    static func route(_ action: String, _ group: String) -> String {
        "/\(action)/\(group.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? group)"
    }
}
