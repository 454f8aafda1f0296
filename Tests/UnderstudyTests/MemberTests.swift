import Foundation
import ServiceLifecycleTestKit
import Synchronization
import Testing
import Understudy
import UnderstudyCore
import UnderstudyStore

/// The runtime against a real clock and an in-memory store (or SQLite, where announcements between processes are
/// tested). Tests await events; the lease (T = 10 s or more) is far longer than any of them should take, so a
/// handover that waited for expiry would show, and a busy machine cannot make a member fence itself by accident.
@Suite("Member runtime", .timeLimit(.minutes(2)))
struct MemberTests {
    static func configuration(_ name: String = "jobs", goal: Int = 1) throws -> GroupConfiguration {
        try GroupConfiguration(
            name: GroupName(name),
            activeGoal: goal,
            heartbeatInterval: .milliseconds(50),
            activationInterval: .seconds(10)
        )
    }

    /// The next event, or `nil` if none comes within the timeout.
    static func next(_ iterator: inout AsyncStream<MemberEvent>.Iterator, within timeout: Duration = .seconds(10)) async -> MemberEvent? {
        let holder = UnsafeIteratorBox(iterator)
        let event = await withTaskGroup(of: MemberEvent?.self) { group in
            group.addTask { await holder.next() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        iterator = holder.iterator
        return event
    }

    @Test func whileActive_runsTheBodyWithTheTokenAndCancelsItOnLeave() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let member = try Member(group: Self.configuration(), store: store)
        let tokens = Mutex<[FencingToken]>([])
        let cancelled = Mutex(false)
        var events = member.events.makeAsyncIterator()
        let running = Task {
            try await member.whileActive { token in
                tokens.withLock { $0.append(token) }
                do { try await Task.sleep(for: .seconds(3600)) } catch { cancelled.withLock { $0 = true }; throw error }
            }
        }
        #expect(await Self.next(&events) == .activate(FencingToken(rawValue: 1)))
        member.leave()
        #expect(await Self.next(&events) == .deactivate(.shutdown))
        try await running.value
        #expect(tokens.withLock { $0 } == [FencingToken(rawValue: 1)])
        #expect(cancelled.withLock { $0 })
        #expect(try await store.group(named: GroupName("jobs"))?.members.isEmpty == true)
    }

    @Test func gracefulShutdown_ofTheService_deactivatesReleasesAndLeaves() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let member = try Member(group: Self.configuration(), store: store)
        var events = member.events.makeAsyncIterator()
        try await testGracefulShutdown { trigger in
            let running = Task { try await member.run() }
            #expect(await Self.next(&events) == .activate(FencingToken(rawValue: 1)))
            trigger.triggerGracefulShutdown()
            #expect(await Self.next(&events) == .deactivate(.shutdown))
            try await running.value
        }
        let view = try #require(try await store.group(named: GroupName("jobs")))
        #expect(view.members.isEmpty && view.leases.isEmpty)
    }

    /// Two handles on one store, as two processes would have: the same in-memory store, or two SQLite stores on
    /// one file. I = 60 s, so a member that waited for its next heartbeat instead of hearing an announcement would
    /// take up to a minute to act.
    static func slowGroup(onSQLite: Bool, in directory: TemporaryDirectory) throws -> (GroupConfiguration, () throws -> any CoordinationStore) {
        let configuration = try GroupConfiguration(name: GroupName("jobs"), heartbeatInterval: .seconds(60), activationInterval: .seconds(150))
        let shared = InMemoryStore(wallMicroseconds: { 0 })
        return (configuration, { onSQLite ? try seasonedSQLiteStore(path: directory.file("u.db")) as any CoordinationStore : shared })
    }

    @Test(arguments: [false, true])
    func leave_ofTheActive_isAnnounced_soTheStandbyWaitsNeitherForExpiryNorForItsHeartbeat(onSQLite: Bool) async throws {
        let directory = try TemporaryDirectory()
        let (configuration, store) = try Self.slowGroup(onSQLite: onSQLite, in: directory)
        let first = try Member(group: configuration, id: MemberID("first"), store: store())
        let second = try Member(group: configuration, id: MemberID("second"), store: store())
        var firstEvents = first.events.makeAsyncIterator()
        var secondEvents = second.events.makeAsyncIterator()
        let firstRun = Task { try await first.run() }
        #expect(await Self.next(&firstEvents) == .activate(FencingToken(rawValue: 1)))
        let secondRun = Task { try await second.run() }
        let joined = try await waitUntil { (try await first.status()).members.count == 2 }
        #expect(joined)
        let leftAt = ContinuousClock.now
        first.leave()
        #expect(await Self.next(&secondEvents, within: .seconds(30)) == .activate(FencingToken(rawValue: 2)))
        let handover = ContinuousClock.now - leftAt
        #expect(handover < .seconds(5), "handover took \(handover)")
        try await firstRun.value
        second.leave()
        try await secondRun.value
    }

    @Test(arguments: [false, true])
    func higherWeightJoining_isAnnounced_soTheActiveHandsOverWithoutWaitingForItsHeartbeat(onSQLite: Bool) async throws {
        let directory = try TemporaryDirectory()
        let (configuration, store) = try Self.slowGroup(onSQLite: onSQLite, in: directory)
        let low = try Member(group: configuration, id: MemberID("low"), weight: 10, store: store())
        let high = try Member(group: configuration, id: MemberID("high"), weight: 90, store: store())
        var lowEvents = low.events.makeAsyncIterator()
        var highEvents = high.events.makeAsyncIterator()
        let lowRun = Task { try await low.run() }
        #expect(await Self.next(&lowEvents) == .activate(FencingToken(rawValue: 1)))
        let joinedAt = ContinuousClock.now
        let highRun = Task { try await high.run() }
        #expect(await Self.next(&lowEvents, within: .seconds(30)) == .deactivate(.preempted))
        var activated: MemberEvent?
        repeat { activated = await Self.next(&highEvents, within: .seconds(30)) } while activated == .prepareToActivate
        #expect(activated == .activate(FencingToken(rawValue: 2)))
        let handover = ContinuousClock.now - joinedAt
        #expect(handover < .seconds(5), "handover took \(handover)")
        high.leave()
        low.leave()
        try await highRun.value
        try await lowRun.value
    }

    @Test func higherWeight_preemptsThroughAnOrderlyHandover() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let low = try Member(group: Self.configuration(), id: MemberID("low"), weight: 10, store: store)
        let high = try Member(group: Self.configuration(), id: MemberID("high"), weight: 90, store: store)
        var lowEvents = low.events.makeAsyncIterator()
        var highEvents = high.events.makeAsyncIterator()
        let lowRun = Task { try await low.run() }
        #expect(await Self.next(&lowEvents) == .activate(FencingToken(rawValue: 1)))
        let highRun = Task { try await high.run() }
        #expect(await Self.next(&highEvents) == .prepareToActivate)
        #expect(await Self.next(&lowEvents) == .deactivate(.preempted))
        #expect(await Self.next(&highEvents) == .activate(FencingToken(rawValue: 2)))
        low.leave()
        high.leave()
        try await lowRun.value
        try await highRun.value
    }

    @Test func workEndingByItself_releasesTheSlotToTheStandby() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let quitter = try Member(group: Self.configuration(), id: MemberID("quitter"), weight: 90, store: store)
        let standby = try Member(group: Self.configuration(), id: MemberID("standby"), weight: 10, store: store)
        var quitterEvents = quitter.events.makeAsyncIterator()
        var standbyEvents = standby.events.makeAsyncIterator()
        let quitterRun = Task { try await quitter.whileActive { _ in } }
        #expect(await Self.next(&quitterEvents) == .activate(FencingToken(rawValue: 1)))
        #expect(await Self.next(&quitterEvents) == .deactivate(.resigned))
        let standbyRun = Task { try await standby.run() }
        #expect(await Self.next(&standbyEvents) == .activate(FencingToken(rawValue: 2)))
        quitter.leave()
        standby.leave()
        try await quitterRun.value
        try await standbyRun.value
    }

    @Test func sameIDAliveElsewhere_failsTheSecondMemberNamingTheFirst() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let original = try Member(group: Self.configuration(), id: MemberID("dup"), store: store)
        var events = original.events.makeAsyncIterator()
        let originalRun = Task { try await original.run() }
        #expect(await Self.next(&events) == .activate(FencingToken(rawValue: 1)))
        let impostor = try Member(group: Self.configuration(), id: MemberID("dup"), store: store)
        await #expect(throws: MemberError.self) { try await impostor.run() }
        original.leave()
        try await originalRun.value
    }

    @Test func goalOfTwo_activatesTwoMembers() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let members = try (0..<3).map { try Member(group: Self.configuration(goal: 2), id: MemberID("m\($0)"), store: store) }
        let runs = members.map { member in Task { try await member.run() } }
        let met = try await waitUntil {
            (try await store.group(named: GroupName("jobs"))).map { GroupStatus(view: $0) }?.activeCount == 2
        }
        #expect(met)
        // What a member serves is the view of its newest store answer: it catches up within a heartbeat.
        #expect(try await waitUntil {
            let status = try await members[0].status()
            return status.activeGoal == 2 && status.meetsGoal && status.members.count == 3
        })
        for member in members { member.leave() }
        for run in runs { try await run.value }
    }

    @Test func status_beforeJoining_saysTheGroupIsUnknown() async throws {
        let member = try Member(group: Self.configuration("nobody-here"), store: InMemoryStore(wallMicroseconds: { 0 }))
        await #expect(throws: StoreError.self) { try await member.status() }
    }
}

/// Polls an async condition for up to 10 s.
func waitUntil(_ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return false
}

/// Lets a task group child advance an iterator owned by the test.
private final class UnsafeIteratorBox: @unchecked Sendable {
    var iterator: AsyncStream<MemberEvent>.Iterator
    init(_ iterator: AsyncStream<MemberEvent>.Iterator) { self.iterator = iterator }
    func next() async -> MemberEvent? { await iterator.next() }
}
