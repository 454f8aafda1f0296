import Foundation
import Synchronization
import Testing
import Understudy
import UnderstudyCore
import UnderstudySQLite
import UnderstudyStore

/// Members of one process (an agent's) put their heartbeats on one grid; a store with a batch window sends each
/// interval's heartbeats in one round trip, where with none the first goes alone and the rest follow.
@Suite("Shared round trips", .timeLimit(.minutes(2)))
struct SharedRoundTripTests {
    /// Forwards to a store and counts the heartbeats, announcing each count.
    final class CountingStore: LeaseStore {
        let store: SQLiteStore
        let sent = Atomic<Int>(0)
        let counts: AsyncStream<Int>.Continuation
        let countStream: AsyncStream<Int>

        init(_ store: SQLiteStore) {
            self.store = store
            (countStream, counts) = AsyncStream<Int>.makeStream(bufferingPolicy: .bufferingNewest(1))
        }

        func heartbeat(_ heartbeat: Heartbeat) async throws -> HeartbeatReply {
            counts.yield(sent.add(1, ordering: .relaxed).newValue)
            return try await store.heartbeat(heartbeat)
        }

        func close() async throws {}
    }

    /// Round trips per interval of eight active members, steady, over 20 intervals.
    func roundTripsPerInterval(batchWindow: Duration) async throws -> Double {
        let directory = try TemporaryDirectory()
        let store = CountingStore(try seasonedSQLiteStore(path: directory.file("u.db"), batchWindow: batchWindow))
        let count = 8
        var members: [Member] = []
        for index in 0..<count {
            let group = try GroupConfiguration(
                name: GroupName("g\(index)"), heartbeatInterval: .milliseconds(100), activationInterval: .seconds(2)
            )
            members.append(try Member(group: group, id: MemberID("m\(index)"), store: store))
        }
        let (activeStream, actives) = AsyncStream<Void>.makeStream()
        let runs = members.map { member in
            Task {
                try? await member.whileActive { _ in
                    actives.yield()
                    try await Task.sleep(for: .seconds(3_600))
                }
            }
        }
        var active = 0
        for await _ in activeStream {
            active += 1
            if active == count { break }
        }
        let sentBefore = store.sent.load(ordering: .relaxed)
        let tripsBefore = store.store.roundTrips
        for await sent in store.countStream where sent >= sentBefore + count * 20 { break }
        let heartbeats = store.sent.load(ordering: .relaxed) - sentBefore
        let trips = store.store.roundTrips - tripsBefore
        for member in members { member.leave() }
        for run in runs { await run.value }
        try await store.store.close()
        return Double(trips) / (Double(heartbeats) / Double(count))
    }

    @Test func membersOfOneProcess_shareOneRoundTripPerInterval_withABatchWindow() async throws {
        let perInterval = try await roundTripsPerInterval(batchWindow: HeartbeatBatcher.sharedWindow)
        print("8 members, 20 intervals, the shared batch window: \(perInterval) round trips per interval")
        #expect(perInterval < 1.3)
    }
}
