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

    /// The in-memory sink, with a switch that makes every write wait until it is cancelled (a sink that stopped
    /// answering the active).
    final class StallingSink: ContinuitySink {
        let inner = InMemoryContinuitySink()
        let stalled = Mutex(false)
        /// How many writes are waiting.
        let waiting = Mutex(0)

        func append(_ records: [ContinuityRecord], epoch: FencingToken) async throws -> ContinuityAppend {
            if stalled.withLock({ $0 }) {
                waiting.withLock { $0 += 1 }
                try await Task.sleep(for: .seconds(3_600))
            }
            return try await inner.append(records, epoch: epoch)
        }
    }

    static func publisher(_ id: String, weight: Int, store: InMemoryStore, sink: StallingSink) throws -> (Member, ContinuityPublisher) {
        let configuration = try GroupConfiguration(name: GroupName("feed"), heartbeatInterval: .milliseconds(50), activationInterval: .seconds(10))
        let member = try Member(group: configuration, id: MemberID(id), weight: weight, store: store)
        let publisher = ContinuityPublisher(member: member, checkpoints: store, checkpoint: try CheckpointName("out"), sink: sink, pollInterval: .milliseconds(20))
        return (member, publisher)
    }

    /// Waits until `condition` holds, checking every 10 ms, for up to 20 s.
    static func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<2_000 where try await !condition() { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try await condition(), "\(what)")
    }

    @Test func handover_theNewActiveResendsTheUnconfirmedWindow_andTheSinkHasEverySequenceOnceInOrder() async throws {
        let (store, sink, feed) = (InMemoryStore(wallMicroseconds: { 0 }), StallingSink(), Broadcast())
        let group = try GroupName("feed")
        let (first, firstPublisher) = try Self.publisher("a", weight: 90, store: store, sink: sink)
        let (_, secondPublisher) = try Self.publisher("b", weight: 10, store: store, sink: sink)
        var firstEvents = firstPublisher.events.makeAsyncIterator()
        var secondEvents = secondPublisher.events.makeAsyncIterator()
        let firstFeed = feed.subscribe()
        let firstRun = Task { try await firstPublisher.run(feed: firstFeed) }
        feed.send(1...500)
        // It joins once it has read the (empty) checkpoint, since its feed began at 1.
        #expect(await firstEvents.next() == .joined(caughtUp: true))
        guard case .resending(let token, from: 1, _, _) = await firstEvents.next() else { Issue.record("no activation"); return }
        #expect(token == FencingToken(rawValue: 1))
        try await Self.eventually("500 confirmed") {
            try await store.checkpoint(of: group, named: CheckpointName("out"))?.value == ContinuityPosition.encode(500)
        }
        // The second member starts now: it cannot catch up (join) before the feed goes on.
        let secondFeed = feed.subscribe()
        let secondRun = Task { try await secondPublisher.run(feed: secondFeed) }
        // The sink stops answering the active: 501…1,000 reach both members, and no one publishes them.
        sink.stalled.withLock { $0 = true }
        feed.send(501...1_000)
        #expect(await secondEvents.next() == .joined(caughtUp: true))
        try await Self.eventually("the standby keeps 501…1,000") { await secondPublisher.backlogCount == 500 }
        try await Self.eventually("both members joined") { try await store.group(named: group)?.members.count == 2 }
        try await Self.eventually("the active's write waits") { sink.waiting.withLock { $0 } == 1 }
        sink.stalled.withLock { $0 = false }
        first.leave()
        try await firstRun.value
        // The standby activates, re-sends exactly the unconfirmed window 501…1,000, then goes live.
        #expect(await secondEvents.next() == .resending(token: FencingToken(rawValue: 2), from: 501, count: 500, lastInput: 1_000))
        feed.send(1_001...1_200)
        try await Self.eventually("the sink reached 1,200") { sink.inner.stream.position == 1_200 }
        let expected: [ContinuityRecord] = (1...1_200).map { .message(sequence: $0, payload: Array("m\($0)".utf8)) }
        #expect(sink.inner.records.count == expected.count && sink.inner.records == expected, "\(sink.inner.records.count) records")
        #expect(sink.inner.stream.epoch == FencingToken(rawValue: 2))
        secondRun.cancel()
        try? await secondRun.value
    }

    @Test func newMember_waitsForTheWarmUp_whenItCannotCatchUp_andSaysSo() async throws {
        let (store, sink, feed) = (InMemoryStore(wallMicroseconds: { 0 }), StallingSink(), Broadcast())
        // A stream and checkpoint at 100 that no active advances, and a feed that starts at 200: 101…199 are lost.
        let configuration = try GroupConfiguration(name: GroupName("feed"), heartbeatInterval: .milliseconds(50), activationInterval: .seconds(10))
        let member = try Member(group: configuration, id: MemberID("late"), store: store)
        let publisher = ContinuityPublisher(
            member: member, checkpoints: store, checkpoint: try CheckpointName("out"), sink: sink, pollInterval: .milliseconds(20), warmUp: .milliseconds(300)
        )
        let writer = try Member(group: configuration, id: MemberID("writer"), store: store)
        var writerEvents = writer.events.makeAsyncIterator()
        let writing = Task { try await writer.run() }
        guard case .activate(let token) = await writerEvents.next() else { Issue.record("no activation"); return }
        _ = try await sink.append((1...100).map { .message(sequence: $0, payload: []) }, epoch: token)
        _ = try await store.writeCheckpoint(of: configuration.name, named: CheckpointName("out"), value: ContinuityPosition.encode(100), token: token)
        writer.leave()
        try await writing.value
        var events = publisher.events.makeAsyncIterator()
        let subscription = feed.subscribe()
        let running = Task { try await publisher.run(feed: subscription) }
        feed.send(200...210)
        #expect(await events.next() == .joined(caughtUp: false))
        guard case .resending(_, from: 101, count: 11, lastInput: 210) = await events.next() else { Issue.record("no activation"); return }
        #expect(await events.next() == .gap(first: 101, count: 99))
        try await Self.eventually("the sink reached 210") { sink.inner.stream.position == 210 }
        #expect(sink.inner.records.dropFirst(100).first == .gap(first: 101, count: 99))
        running.cancel()
        try? await running.value
    }
}
