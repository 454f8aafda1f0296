import Foundation
import Testing

/// `understudy simulate` with the options of the runtime's store client.
@Suite(.serialized)
struct SimulateTests {
    @Test func test_slowMemberAndCallTimeout_areSimulatedAndReplayed() async throws {
        let scratch = try Scratch()
        let arguments = [
            "simulate", "--seeds", "5", "--heartbeat", "100ms", "--activation", "500ms", "--store-latency", "5ms..50ms",
            "--slow-member-latency", "300ms..390ms", "--call-timeout", "5s", "--faults", "crash,resign,shutdown",
        ]
        let result = try await understudy(arguments, in: scratch)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("store latency 5ms..50ms (m1: 300ms..390ms), call timeout 5s"), "\(result.stdout)")
        #expect(result.stdout.contains("grants given back unused (too late):"), "\(result.stdout)")
    }

    @Test func test_tooSlowForTheActivationInterval_isReportedWithAReplayCommand() async throws {
        let scratch = try Scratch()
        let arguments = [
            "simulate", "--seeds", "3", "--heartbeat", "100ms", "--activation", "500ms", "--store-latency", "300ms..390ms",
            "--faults", "none",
        ]
        let result = try await understudy(arguments, in: scratch)
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("liveness             VIOLATED"), "\(result.stdout)")
        #expect(result.stdout.contains("--store-latency 300ms..390ms --call-timeout 5s"), "\(result.stdout)")
    }

    @Test func test_partitions_showMovementBalanceAndTakeover_andRefuseABadCount() async throws {
        let scratch = try Scratch()
        let arguments = ["simulate", "--partitions", "16", "--members", "4", "--seeds", "2", "--faults", "join,crash,leave"]
        let result = try await understudy(arguments, in: scratch)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("of a partitioned group: 4 members, 16 partitions"), "\(result.stdout)")
        #expect(result.stdout.contains("recovery (last fault's effect to settled): p50"), "\(result.stdout)")
        #expect(result.stdout.contains("balance: at most 0 above a share rounded up"), "\(result.stdout)")
        let refused = try await understudy(["simulate", "--partitions", "0"], in: scratch)
        #expect(refused.status != 0 && refused.status != 1, "\(refused.stderr)")
        #expect(refused.stderr.contains("partitions"), "\(refused.stderr)")
        let unknown = try await understudy(["simulate", "--partitions", "4", "--faults", "resign"], in: scratch)
        #expect(unknown.stderr.contains("unknown partition fault \"resign\""), "\(unknown.stderr)")
    }

    @Test func test_badSlowLatencyOrTimeout_isRefused() async throws {
        let scratch = try Scratch()
        let cases = [
            (["simulate", "--slow-member-latency", "400ms"], "--slow-member-latency: invalid range"),
            (["simulate", "--call-timeout", "0s"], "call timeout must be positive"),
        ]
        for (arguments, mentions) in cases {
            let result = try await understudy(arguments, in: scratch)
            #expect(result.status != 0 && result.status != 1, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(mentions), "\(arguments): \(result.stderr)")
        }
    }
}
