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
