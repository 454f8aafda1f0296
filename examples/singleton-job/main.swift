// A singleton job with failover: start this program several times (on one host, sharing the default SQLite
// store); exactly one copy does the work at a time, and when it dies another takes over within ~T.
// Each unit of work is stamped with the fencing token, so a downstream system can reject a stale active.
//
//   swift run singleton-job [weight]        # run it in 2–3 terminals, then kill -9 the active one
import Foundation
import Understudy
import UnderstudyCore
import UnderstudySQLite

let weight = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 50
let group = try GroupConfiguration(
    name: GroupName("example.singleton-job"),
    heartbeatInterval: .milliseconds(200),
    activationInterval: .seconds(1)
)
let member = try Member(group: group, weight: weight, store: SQLiteStore())
print("member \(member.id) (weight \(weight)) joined \(group.name); waiting for its turn…")

let interrupt = DispatchSource.makeSignalSource(signal: SIGINT)
signal(SIGINT, SIG_IGN)
interrupt.setEventHandler { member.leave() }  // Ctrl-C hands over at once instead of waiting for expiry.
interrupt.resume()

try await member.whileActive { token in
    print("active with fencing token \(token)")
    var unit = 0
    while true {
        unit += 1
        // Every write downstream carries the token; a receiver keeps the largest it has seen and rejects
        // anything older, so even a paused, stale active cannot corrupt its data.
        print("  unit \(unit) done under token \(token)")
        try await Task.sleep(for: .seconds(1))  // Throws CancellationError on deactivation.
    }
}
print("left the group")
