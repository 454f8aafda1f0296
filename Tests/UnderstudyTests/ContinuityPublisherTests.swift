import Foundation
import Synchronization
import Testing
import Understudy
import UnderstudyCore
import UnderstudyStore

/// Publishers on one in-memory store and one in-memory sink, fed the same messages; the lease (T = 10 s) is far
/// longer than a test, so every handover here is an orderly one.
@Suite("Continuity publisher", .timeLimit(.minutes(2)))
struct ContinuityPublisherTests {
    /// A feed every subscriber receives in full, as a broadcast would deliver it.
    final class Broadcast: Sendable {
        private let subscribers = Mutex<[AsyncStream<FeedMessage>.Continuation]>([])

        func subscribe() -> AsyncStream<FeedMessage> {
            let (stream, continuation) = AsyncStream<FeedMessage>.makeStream()
            subscribers.withLock { $0.append(continuation) }
            return stream
        }

        func send(_ sequences: ClosedRange<Int64>) {
            let subscribers = subscribers.withLock { $0 }
            for sequence in sequences {
                for subscriber in subscribers { subscriber.yield(FeedMessage(sequence: sequence, payload: Array("m\(sequence)".utf8))) }
            }
        }
    }

    static func publisher(_ id: String, weight: Int, store: InMemoryStore, sink: InMemoryContinuitySink) throws -> (Member, ContinuityPublisher) {
        let configuration = try GroupConfiguration(name: GroupName("feed"), heartbeatInterval: .milliseconds(50), activationInterval: .seconds(10))
        let member = try Member(group: configuration, id: MemberID(id), weight: weight, store: store)
        let publisher = ContinuityPublisher(member: member, checkpoints: store, checkpoint: try CheckpointName("out"), sink: sink, pollInterval: .milliseconds(20))
        return (member, publisher)
    }

    /// Waits until `condition` holds of the sink, checking every 10 ms, for up to 20 s.
    static func eventually(_ sink: InMemoryContinuitySink, _ condition: (ContinuityStream) -> Bool) async throws {
        for _ in 0..<2_000 where !condition(sink.stream) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(condition(sink.stream), "the sink is at \(sink.stream)")
    }

    @Test func handover_theNewActiveResendsTheUnconfirmedWindow_andTheSinkHasEverySequenceOnceInOrder() async throws {
        let (store, sink, feed) = (InMemoryStore(wallMicroseconds: { 0 }), InMemoryContinuitySink(), Broadcast())
        let (first, firstPublisher) = try Self.publisher("a", weight: 90, store: store, sink: sink)
        let (_, secondPublisher) = try Self.publisher("b", weight: 10, store: store, sink: sink)
        let firstRun = Task { try await firstPublisher.run(feed: feed.subscribe()) }
        let secondRun = Task { try await secondPublisher.run(feed: feed.subscribe()) }
        var secondEvents = secondPublisher.events.makeAsyncIterator()
        while try await store.group(named: GroupName("feed"))?.members.count != 2 { try await Task.sleep(for: .milliseconds(10)) }
        feed.send(1...500)
        try await Self.eventually(sink) { $0.position == 500 }
        first.leave()
        try await firstRun.value
        feed.send(501...1_000)
        // The standby activates, re-sends what is unconfirmed (at least 501…1,000, which no one published), then
        // goes live.
        var resent: ContinuityEvent?
        while let event = await secondEvents.next() {
            if case .resending = event { resent = event; break }
        }
        guard case .resending(_, let from, let count, let lastInput) = resent else { Issue.record("no re-send"); return }
        #expect(from <= 501 && Int64(count) == lastInput - from + 1)
        feed.send(1_001...1_200)
        try await Self.eventually(sink) { $0.position == 1_200 }
        #expect(sink.records == (1...1_200).map { .message(sequence: $0, payload: Array("m\($0)".utf8)) })
        secondRun.cancel()
        try? await secondRun.value
    }
}
