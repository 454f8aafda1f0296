import ArgumentParser
import Foundation
import Understudy
import UnderstudyCore
import UnderstudySupervisor

/// `understudy watch`: a stream of changes to groups, as they happen.
struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream joins, leaves, activations and deactivations as they happen.",
        discussion: """
            The store is polled every --interval; the first lines describe the groups as they stand. \
            Deactivation reasons are inferred from what the store shows: preempted (a member of higher weight \
            took over), resigned (the command exited), expired (the lease ran out), released (handed back), \
            left (the member left with it).

            JSON: one object per line: {"time": "…", "group": "g", "event": "join|leave|activate|deactivate", \
            "member": "a", "token": 7 | null, "reason": "…" | null, "weight": 50 | null}
            """
    )

    @OptionGroup var reading: StoreReading

    @Flag(help: "One JSON object per line.")
    var json = false

    @Option(help: "How often to read the store.")
    var interval: String = "50ms"

    func run() async throws {
        let period: Duration
        do { period = try parseDuration(interval) } catch { throw CLIError(.statusError, "--interval: \(error)") }
        guard period > .zero else { throw CLIError(.statusError, "--interval must be greater than zero") }
        let (location, opened, group) = try await reading.open()
        var tracker = ChangeTracker()
        while true {
            for change in tracker.update(try await StoreReading.groups(of: opened, at: location, only: group).views) {
                printLine(json ? change.json : change.text)
            }
            try await Task.sleep(for: period)
        }
    }
}
