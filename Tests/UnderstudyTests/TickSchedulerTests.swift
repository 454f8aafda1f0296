import Testing
import UnderstudyCore
import UnderstudyStore
@testable import Understudy

@Suite("Tick scheduler", .timeLimit(.minutes(1)))
struct TickSchedulerTests {
    private func fired(_ scheduler: TickScheduler, _ label: String, into sink: AsyncStream<String>.Continuation) -> TickScheduler.Registration {
        scheduler.register { sink.yield(label) }
    }

    @Test func ticksDueTogether_allFire_inDeadlineOrder() async {
        let scheduler = TickScheduler(clock: MonotonicClock.now)
        let (fires, sink) = AsyncStream<String>.makeStream()
        let soon = MonotonicClock.now() + .milliseconds(20)
        for (label, offset) in [("c", 2), ("a", 0), ("b", 1)] {
            scheduler.schedule(fired(scheduler, label, into: sink), at: soon + .nanoseconds(Int64(offset)))
        }
        var order: [String] = []
        for await label in fires {
            order.append(label)
            if order.count == 3 { break }
        }
        #expect(order == ["a", "b", "c"])
        #expect(scheduler.scheduledCount == 0)
    }

    @Test func rescheduling_replacesThePendingTick_andAnEarlierOneWakesTheSchedulerEarly() async {
        let scheduler = TickScheduler(clock: MonotonicClock.now)
        let (fires, sink) = AsyncStream<String>.makeStream()
        let now = MonotonicClock.now()
        let late = fired(scheduler, "late", into: sink)
        let moved = fired(scheduler, "moved", into: sink)
        scheduler.schedule(late, at: now + .seconds(3_600))
        scheduler.schedule(moved, at: now + .seconds(3_600))
        // Moved an hour earlier: it fires now, once, and `late` stays pending.
        scheduler.schedule(moved, at: now + .milliseconds(10))
        var iterator = fires.makeAsyncIterator()
        #expect(await iterator.next() == "moved")
        #expect(scheduler.scheduledCount == 1)
        // A second, later firing would show that the first deadline of `moved` was not replaced.
        let marker = fired(scheduler, "marker", into: sink)
        scheduler.schedule(marker, at: MonotonicClock.now() + .milliseconds(10))
        #expect(await iterator.next() == "marker")
    }

    @Test func unregistered_neverFires() async {
        let scheduler = TickScheduler(clock: MonotonicClock.now)
        let (fires, sink) = AsyncStream<String>.makeStream()
        let soon = MonotonicClock.now() + .milliseconds(10)
        let gone = fired(scheduler, "gone", into: sink)
        scheduler.schedule(gone, at: soon)
        scheduler.unregister(gone)
        scheduler.schedule(fired(scheduler, "kept", into: sink), at: soon + .milliseconds(5))
        var iterator = fires.makeAsyncIterator()
        #expect(await iterator.next() == "kept")
        #expect(scheduler.scheduledCount == 0)
    }
}
