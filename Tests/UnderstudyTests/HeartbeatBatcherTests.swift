import Testing
import Understudy
import UnderstudyCore
import UnderstudyStore
import UnderstudyStoreConformance

@Suite("Heartbeat batcher", .timeLimit(.minutes(1)))
struct HeartbeatBatcherTests {
    @Test func aHeartbeatTheStoreLeavesUnanswered_failsInsteadOfWaiting() async throws {
        let batcher = HeartbeatBatcher(window: .zero) { _ in [] }
        await #expect(throws: StoreError.self) {
            try await batcher.submit(heartbeat(member("m"), .none))
        }
    }
}

extension HeartbeatBatcherTests {
    /// A member that leaves does not wait for a store that does not answer: its cancelled heartbeats return at
    /// once, and the batch still on its way is answered to nobody.
    @Test func aCancelledCaller_returnsAtOnce_whileItsBatchIsOnItsWay() async throws {
        let (sent, sentSignal) = AsyncStream<Void>.makeStream()
        let (release, releaseSignal) = AsyncStream<Void>.makeStream()
        let batcher = HeartbeatBatcher(window: .zero) { batch in
            sentSignal.yield()
            for await _ in release {}
            return batch.map { _ in .failure(StoreError(.unavailable, "answered too late")) }
        }
        let caller = Task {
            try await batcher.submit(heartbeat(member("m"), .none))
        }
        for await _ in sent { break }
        caller.cancel()
        await #expect(throws: CancellationError.self) { try await caller.value }
        releaseSignal.finish()
    }
}
