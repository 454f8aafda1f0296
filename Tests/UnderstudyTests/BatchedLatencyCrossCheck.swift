import Foundation
import Synchronization
import Testing
import Understudy
@testable import Understudy
import UnderstudyCore
import UnderstudyStore
import UnderstudyStoreConformance

/// A cross-check of the simulator's store client against the real one: real ``Member``s, each behind its own
/// ``HeartbeatBatcher`` (as every SQLite and PostgreSQL store is), sharing one in-memory ledger reached through a
/// round trip of a fixed range of latencies. Opt-in (it takes real seconds): `UNDERSTUDY_CROSSCHECK=1 swift test
/// --filter BatchedLatencyCrossCheck`. It prints activations and deactivations to compare with
/// `understudy simulate --faults none` at the same intervals and latency.
@Suite("Batched latency cross-check", .enabled(if: ProcessInfo.processInfo.environment["UNDERSTUDY_CROSSCHECK"] == "1"))
struct BatchedLatencyCrossCheck {
    /// One member process's store: its own batcher, then half a round trip there and half back.
    final class DelayedStore: LeaseStore {
        let ledger: InMemoryStore
        let latency: ClosedRange<Int64>
        let batcher: HeartbeatBatcher

        init(ledger: InMemoryStore, latencyMilliseconds: ClosedRange<Int64>) {
            self.ledger = ledger
            self.latency = latencyMilliseconds
            let range = latencyMilliseconds
            batcher = HeartbeatBatcher(window: .zero) { batch in
                let roundTrip = Int64.random(in: range)
                try await Task.sleep(for: .milliseconds(roundTrip / 2))
                var results: [Result<HeartbeatReply, any Error>] = []
                for heartbeat in batch {
                    do { results.append(.success(try await ledger.heartbeat(heartbeat))) } catch { results.append(.failure(error)) }
                }
                try await Task.sleep(for: .milliseconds(roundTrip - roundTrip / 2))
                return results
            }
        }

        func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
            try await batcher.submit(heartbeat)
        }

        func close() async throws {}
    }

    final class Counts: Sendable {
        let activations = Atomic<Int>(0)
        let deactivations = Atomic<Int>(0)
    }

    @Test(arguments: [(100, 500, 300, 390), (100, 2_000, 300, 390), (100, 1_000, 300, 390)])
    func test_threeMembers_faultFree_countActivations(setting: (Int64, Int64, Int64, Int64)) async throws {
        let (interval, activation, low, high) = setting
        let configuration = try GroupConfiguration(
            name: GroupName("crosscheck"),
            activeGoal: 1,
            heartbeatInterval: .milliseconds(interval),
            activationInterval: .milliseconds(activation)
        )
        let ledger = InMemoryStore()
        let counts = Counts()
        var members: [Member] = []
        for index in 1...3 {
            members.append(try Member(
                group: configuration,
                id: MemberID("m\(index)"),
                store: DelayedStore(ledger: ledger, latencyMilliseconds: low...high)
            ))
        }
        let runs = members.map { member in Task { try? await member.run() } }
        let watchers = members.map { member in
            Task {
                for await event in member.events {
                    switch event {
                    case .activate: counts.activations.add(1, ordering: .relaxed)
                    case .deactivate: counts.deactivations.add(1, ordering: .relaxed)
                    case .prepareToActivate, .prepareWithdrawn: break
                    }
                }
            }
        }
        try await Task.sleep(for: .seconds(10))
        for member in members { member.leave() }
        for run in runs { _ = await run.value }
        for watcher in watchers { watcher.cancel() }
        let activations = counts.activations.load(ordering: .relaxed)
        let deactivations = counts.deactivations.load(ordering: .relaxed)
        print("cross-check I=\(interval)ms T=\(activation)ms RTT \(low)..\(high)ms, 10 s, 3 members: \(activations) activations, \(deactivations) deactivations (incl. the final leave)")
    }
}
