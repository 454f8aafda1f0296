import Foundation
import Testing

/// The continuity example under real failures: `feed-publisher demo` runs a feed generator (1,000 messages/s), a
/// publisher group of 3 and the checker as separate processes around the throwaway PostgreSQL server, and fails
/// the active over by SIGKILL, SIGSTOP past T (then SIGCONT) and SIGTERM in turn. With T = 800 ms a failover takes
/// about a second, so 30 take under a minute. `UNDERSTUDY_CHAOS_FAILOVERS` sizes a longer soak.
@Suite("Continuity chaos", .serialized, .timeLimit(.minutes(5)))
struct ContinuityChaosTests {
    /// The `feed-publisher` executable built next to `understudy`.
    static let feedPublisherPath = ((understudyPath as NSString).deletingLastPathComponent as NSString).appendingPathComponent("feed-publisher")

    static func fields(_ line: Substring) -> [String: String] {
        Dictionary(line.split(separator: " ").compactMap { field in
            let parts = field.split(separator: "=", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }, uniquingKeysWith: { _, last in last })
    }

    @Test func failovers_byKillStopAndTerm_theSinkSeesEverySequenceOnceInOrder_andEachResendIsTheUnconfirmedWindow() async throws {
        let postgres = try RunTests.freshPostgresSchemaURL()
        let failovers = Int(ProcessInfo.processInfo.environment["UNDERSTUDY_CHAOS_FAILOVERS"] ?? "") ?? 30
        let scratch = try Scratch()
        let demo = try Launched(
            [Self.feedPublisherPath, "demo", "--postgres", postgres, "--failovers", "\(failovers)", "--rate", "1000", "--logs", scratch.file("logs")],
            in: scratch, name: "demo", executable: true
        )
        let status = try await demo.exitStatus(within: .seconds(60 + 5 * failovers))
        let lines = demo.stdout.split(separator: "\n").map(Self.fields)
        #expect(status == 0, "\(demo.stdout)\n\(demo.stderr)")

        let rounds = lines.filter { $0["failover"] != nil }
        #expect(rounds.count == failovers, "\(demo.stdout)")
        for kind in ["kill", "stop", "term"] {
            #expect(rounds.filter { $0["kind"] == kind }.count == failovers / 3)
        }
        var previous: UInt64 = 0
        for round in rounds {
            // Each new active re-sent exactly the messages after the confirmed position it had received, under a
            // newer token than the one before.
            #expect(round["resent"] != nil && round["resent"] == round["window"], "\(round)")
            let token = try #require(UInt64(round["new_token"] ?? ""))
            #expect(token > previous && UInt64(round["old_token"] ?? "") ?? .max < token)
            previous = token
            // Killed or frozen, the old active stops confirming at once and its successor waits for the lease to
            // expire: something is always unconfirmed.
            if round["kind"] != "term" { #expect(Int(round["resent"] ?? "") ?? 0 > 0, "\(round)") }
        }
        // The sink: every sequence 1…sent exactly once, in order, with its payload, no gap, epochs never going back.
        let verdict = try #require(lines.first { $0["problems"] != nil })
        let result = try #require(lines.first { $0["result"] != nil })
        #expect(verdict["problems"] == "0" && verdict["position"] == result["sent"], "\(demo.stdout)")
        #expect(Int(verdict["epochs"] ?? "") ?? 0 >= failovers + 1)
        #expect(result["result"] == "ok" && result["gaps"] == "0", "\(demo.stdout)")
        // The stale first active's late writes are refused by the sink and by the checkpoint.
        #expect(lines.contains { $0["stale_write"] == "refused" } && lines.contains { $0["stale_checkpoint"] == "refused" })
    }
}
