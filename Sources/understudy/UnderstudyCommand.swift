import ArgumentParser
import Foundation

/// `understudy`: run a command on exactly as many hosts or processes as a group asks, with standbys ready.
struct UnderstudyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "understudy",
        abstract: "Logically singleton, physically many: supervise a command so that exactly N copies run.",
        discussion: ExitStatus.help,
        subcommands: [Run.self, AgentCommand.self, Status.self, Watch.self, Demo.self, Simulate.self, Queue.self, CheckpointCommand.self]
    )

    /// Parses the command line, runs the subcommand and exits; every error is one line on stderr.
    static func entry() async -> Never {
        let arguments = Array(CommandLine.arguments.dropFirst())
        do {
            try Run.checkTerminator(arguments)
            var command = try parseAsRoot(arguments)
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
            Glibc.exit(0)
        } catch let error as CLIError {
            printError("understudy: \(error.message)")
            Glibc.exit(error.status.rawValue)
        } catch let error as ExitCode {
            Glibc.exit(error.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            printError("understudy: \(message(for: error).split(separator: "\n").joined(separator: "; "))")
            Glibc.exit(code == .validationFailure ? ExitStatus.usage.rawValue : code.rawValue)
        }
    }
}
