import ArgumentParser
import Foundation
import UnderstudyCore
import UnderstudyStore

/// `understudy checkpoint`: a group's small named values that only its current active can advance.
struct CheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Read or write a fenced checkpoint of a group: a position, an offset, a short value.",
        discussion: """
            A write succeeds only with a token that holds a lease of the group, valid on the store's clock, and \
            not older than the token of the last accepted write; so a stale active, frozen past its lease or \
            already replaced, can never move the checkpoint back. `understudy run` gives COMMAND its token in \
            UNDERSTUDY_FENCING_TOKEN:

              understudy checkpoint put --group feed --name position --token "$UNDERSTUDY_FENCING_TOKEN" 1234

            \(ExitStatus.help)
            """,
        subcommands: [Get.self, Put.self]
    )

    struct Target: ParsableArguments {
        @OptionGroup var options: QueueStoreOptions

        @Option(help: "The group.")
        var group: String

        @Option(help: "The checkpoint's name (A-Z a-z 0-9 . _ -).")
        var name: String

        func names() throws(CLIError) -> (GroupName, CheckpointName) {
            do {
                return (try GroupName(group), try CheckpointName(name))
            } catch let error as ConfigurationError {
                throw CLIError(.invalidConfiguration, error.description)
            } catch let error as CheckpointError {
                throw CLIError(.invalidConfiguration, error.description)
            } catch {
                throw CLIError(.invalidConfiguration, "\(error)")
            }
        }

        func open() async throws(CLIError) -> (StoreLocation, any CoordinationStore & CheckpointStore) {
            let location = try options.location
            let store = try await location.openForWriting()
            guard let checkpoints = store as? any CoordinationStore & CheckpointStore else {
                throw CLIError(.storeUnavailable, "the store \(location) keeps no checkpoints")
            }
            return (location, checkpoints)
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the checkpoint's value (nothing when never written).")

        @OptionGroup var target: Target

        @Flag(help: "Also print the token and version it was written with, on standard error.")
        var verbose = false

        func run() async throws {
            let (group, name) = try target.names()
            let (location, store) = try await target.open()
            defer { Task { try? await store.close() } }
            let checkpoint: Checkpoint?
            do { checkpoint = try await store.checkpoint(of: group, named: name) } catch {
                throw CLIError(.statusError, "cannot read the store \(location): \(error)")
            }
            guard let checkpoint else { return }
            _ = checkpoint.value.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            if verbose { printError("token \(checkpoint.token) version \(checkpoint.version)") }
        }
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write the checkpoint under a fencing token; refused unless the token holds the group's lease.")

        @OptionGroup var target: Target

        @Option(help: "The fencing token of the writer's lease (UNDERSTUDY_FENCING_TOKEN).")
        var token: UInt64

        @Argument(help: "The value (default: standard input), at most 64 KiB.")
        var value: String?

        func run() async throws {
            let (group, name) = try target.names()
            let bytes = value.map { Array($0.utf8) } ?? Array(FileHandle.standardInput.readDataToEndOfFile())
            guard bytes.count <= Checkpoint.maximumSize else {
                throw CLIError(.invalidConfiguration, CheckpointError.valueTooLarge(bytes.count).description)
            }
            let (location, store) = try await target.open()
            defer { Task { try? await store.close() } }
            let write: CheckpointWrite
            do { write = try await store.writeCheckpoint(of: group, named: name, value: bytes, token: FencingToken(rawValue: token)) } catch {
                throw CLIError(.storeUnavailable, "cannot write to the store \(location): \(error)")
            }
            switch write {
            case .accepted(let checkpoint): printLine("version \(checkpoint.version)")
            case .rejected(let rejection): throw CLIError(.checkpointRefused, "checkpoint \(name) of group \(group) not written: \(rejection)")
            }
        }
    }
}
