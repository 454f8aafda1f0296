import Testing
import Understudy
import UnderstudyCore
import UnderstudyStore

@Suite("Heartbeat batcher", .timeLimit(.minutes(1)))
struct HeartbeatBatcherTests {
    @Test func aHeartbeatTheStoreLeavesUnanswered_failsInsteadOfWaiting() async throws {
        let batcher = HeartbeatBatcher(window: .zero)
        await #expect(throws: StoreError.self) {
            try await batcher.submit(heartbeat(member("m"), .none)) { _ in [] }
        }
    }
}
