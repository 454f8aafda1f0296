import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySQLite
import UnderstudyStore

/// A store with every capability: leases, the directory and announcements.
typealias AnnouncingStore = LeaseStore & GroupDirectory & ChangeAnnouncing

/// The behaviour every backend must show, capability by capability. Each backend runs with a store clock the test
/// moves by hand, so expiry is tested exactly and without waiting.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case inMemory = "in-memory"
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    /// `count` handles on one store of this backend (separate connections, as separate processes would have).
    func makeStores(count: Int = 1, clock: ManualClock, directory: TemporaryDirectory) async throws -> [any AnnouncingStore] {
        switch self {
        case .inMemory:
            let store = InMemoryStore(clock: clock.read, wallMicroseconds: { 0 })
            return Array(repeating: store, count: count)
        case .sqlite:
            let stores = try (0..<count).map { _ in
                try SQLiteStore(path: directory.file("understudy.db"), clock: clock.host())
            }
            // A new file grants nothing for T (it may replace one whose leases still run); these tests start later.
            clock.advance(by: .seconds(600))
            return stores
        case .postgres:
            let url = try TestPostgres.freshSchemaURL()
            var stores: [any AnnouncingStore] = []
            for _ in 0..<count { stores.append(try await PostgresStore(url: url, clock: clock.read)) }
            // The ledger as the other backends apply it: no token floor, no wait after a new record (both have
            // tests of their own in PostgresHistoryTests).
            try await TestPostgres.withoutFloorOrHistory(url)
            return stores
        }
    }
}

/// What every test of a capability starts from: a clock moved by hand and a scratch directory.
struct ConformanceFixture {
    let clock = ManualClock()
    let directory: TemporaryDirectory

    init() throws {
        directory = try TemporaryDirectory()
    }
}

/// A suite of one capability's conformance tests, each test on a fresh ``ConformanceFixture``.
protocol ConformanceSuite {
    var fixture: ConformanceFixture { get }
}

extension ConformanceSuite {
    var clock: ManualClock { fixture.clock }
    var directory: TemporaryDirectory { fixture.directory }

    func store(_ backend: Backend) async throws -> any AnnouncingStore {
        try await backend.makeStores(clock: clock, directory: directory)[0]
    }
}

/// ``LeaseStore``: the semantics of `GroupLedger.apply(_:at:)`.
@Suite("Lease store conformance", .timeLimit(.minutes(2)))
struct LeaseStoreConformanceTests: ConformanceSuite {
    let fixture: ConformanceFixture

    init() throws { fixture = try ConformanceFixture() }

    @Test(arguments: Backend.allCases)
    func acquire_freeSlot_grantsFirstTokenAndRefusesTheNext(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a"), b = try member("b")
        let first = try await store.heartbeat(heartbeat(a, .acquire))
        #expect(first.outcome == .granted(FencingToken(rawValue: 1)))
        let second = try await store.heartbeat(heartbeat(b, .acquire))
        #expect(second.outcome == .notGranted)
        #expect(second.view.leases.map(\.holder) == [a.id])
        #expect(Set(second.view.members.map(\.info.id)) == [a.id, b.id])
        #expect(second.view.lastToken == FencingToken(rawValue: 1))
    }

    @Test(arguments: Backend.allCases)
    func acquire_byHolder_confirmsTheSameToken(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a")
        _ = try await store.heartbeat(heartbeat(a, .acquire))
        clock.advance(by: .seconds(1))
        let again = try await store.heartbeat(heartbeat(a, .acquire))
        #expect(again.outcome == .granted(FencingToken(rawValue: 1)))
        #expect(again.view.leases.first?.remaining == .seconds(3))
    }

    @Test(arguments: Backend.allCases)
    func renewal_beforeExpiry_extendsByTheActivationInterval(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a")
        _ = try await store.heartbeat(heartbeat(a, .acquire))
        clock.advance(by: .milliseconds(2_999))
        let renewal = try await store.heartbeat(heartbeat(a, phase: .active, .renew(FencingToken(rawValue: 1))))
        #expect(renewal.outcome == .renewed)
        #expect(renewal.view.leases.first?.remaining == .seconds(3))
    }

    @Test(arguments: Backend.allCases)
    func renewal_atExpiry_isLostAndTheSlotGoesToTheNextWithALargerToken(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a"), b = try member("b")
        _ = try await store.heartbeat(heartbeat(a, .acquire))
        clock.advance(by: .seconds(3))
        let stale = try await store.heartbeat(heartbeat(a, phase: .active, .renew(FencingToken(rawValue: 1))))
        #expect(stale.outcome == .lost)
        let next = try await store.heartbeat(heartbeat(b, .acquire))
        #expect(next.outcome == .granted(FencingToken(rawValue: 2)))
    }

    @Test(arguments: Backend.allCases)
    func renewal_withAnotherIncarnationOrToken_isLost(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a")
        _ = try await store.heartbeat(heartbeat(a, .acquire))
        let wrongToken = try await store.heartbeat(heartbeat(a, phase: .active, .renew(FencingToken(rawValue: 7))))
        #expect(wrongToken.outcome == .lost)
        let b = try member("b")
        let notHolder = try await store.heartbeat(heartbeat(b, phase: .active, .renew(FencingToken(rawValue: 1))))
        #expect(notHolder.outcome == .lost)
        #expect(notHolder.view.leases.map(\.holder) == [a.id])
    }

    @Test(arguments: Backend.allCases)
    func release_freesTheSlotAtOnce(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a"), b = try member("b")
        _ = try await store.heartbeat(heartbeat(a, .acquire))
        let released = try await store.heartbeat(heartbeat(a, phase: .stopping, .release(FencingToken(rawValue: 1))))
        #expect(released.outcome == .released)
        #expect(released.view.leases.isEmpty)
        let next = try await store.heartbeat(heartbeat(b, .acquire))
        #expect(next.outcome == .granted(FencingToken(rawValue: 2)))
    }

    @Test(arguments: Backend.allCases)
    func leave_releasesTheLeaseAndForgetsTheMember(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a"), b = try member("b")
        _ = try await store.heartbeat(heartbeat(a, .acquire))
        _ = try await store.heartbeat(heartbeat(b, .none))
        let left = try await store.heartbeat(heartbeat(a, .leave(releasing: FencingToken(rawValue: 1))))
        #expect(left.outcome == .left)
        #expect(left.view.leases.isEmpty)
        #expect(left.view.members.map(\.info.id) == [b.id])
    }

    @Test(arguments: Backend.allCases)
    func memberID_aliveInAnotherIncarnation_isRejectedNamingHostAndPid(_ backend: Backend) async throws {
        let store = try await store(backend)
        _ = try await store.heartbeat(heartbeat(member("a", incarnation: "first"), .none))
        let second = try member("a", incarnation: "second")
        await #expect(throws: HeartbeatRejection.memberIDInUse(second.id, host: "test-host", pid: 42)) {
            try await store.heartbeat(heartbeat(second, .none))
        }
        clock.advance(by: .seconds(3))
        let afterExpiry = try await store.heartbeat(heartbeat(second, .acquire))
        #expect(afterExpiry.outcome == .granted(FencingToken(rawValue: 1)))
    }

    @Test(arguments: Backend.allCases)
    func activeGoal_differentWhileOthersAreAlive_isRejected(_ backend: Backend) async throws {
        let store = try await store(backend)
        _ = try await store.heartbeat(heartbeat(member("a"), goal: 1, .none))
        let b = try member("b")
        await #expect(throws: HeartbeatRejection.self) {
            try await store.heartbeat(heartbeat(b, goal: 2, .none))
        }
        clock.advance(by: .seconds(3))
        let reply = try await store.heartbeat(heartbeat(b, goal: 2, .acquire))
        #expect(reply.view.activeGoal == 2)
        #expect(reply.outcome == .granted(FencingToken(rawValue: 1)))
    }

    @Test(arguments: Backend.allCases)
    func members_silentForTheActivationInterval_areForgotten(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a"), b = try member("b")
        _ = try await store.heartbeat(heartbeat(a, .none))
        clock.advance(by: .seconds(2))
        let view = try await store.heartbeat(heartbeat(b, .none)).view
        #expect(view.members.first { $0.info.id == a.id }?.heartbeatAge == .seconds(2))
        clock.advance(by: .seconds(1))
        let later = try await store.heartbeat(heartbeat(b, .none)).view
        #expect(later.members.map(\.info.id) == [b.id])
    }

    @Test(arguments: Backend.allCases)
    func tokens_increaseWithEveryGrantAcrossSlotsAndExpiry(_ backend: Backend) async throws {
        let store = try await store(backend)
        var seen: [FencingToken] = []
        for round in 0..<4 {
            for index in 0..<3 {
                let reply = try await store.heartbeat(heartbeat(member("m\(round)-\(index)"), goal: 3, .acquire))
                guard case .granted(let token) = reply.outcome else {
                    Issue.record("round \(round) member \(index) was not granted: \(reply.outcome)")
                    return
                }
                seen.append(token)
            }
            clock.advance(by: .seconds(3))
        }
        #expect(seen.map(\.rawValue) == Array(1...12))
    }

    @Test(arguments: Backend.allCases)
    func joinOrder_isKeptWhileAliveAndRenewedOnRejoin(_ backend: Backend) async throws {
        let store = try await store(backend)
        let a = try member("a"), b = try member("b")
        _ = try await store.heartbeat(heartbeat(a, .none))
        _ = try await store.heartbeat(heartbeat(b, .none))
        _ = try await store.heartbeat(heartbeat(a, .none))
        var view = try #require(try await store.group(named: GroupName("group")))
        let order = view.members.sorted { $0.joinSequence < $1.joinSequence }.map(\.info.id)
        #expect(order == [a.id, b.id])
        _ = try await store.heartbeat(heartbeat(a, .leave(releasing: nil)))
        _ = try await store.heartbeat(heartbeat(a, .none))
        view = try #require(try await store.group(named: GroupName("group")))
        #expect(view.members.sorted { $0.joinSequence < $1.joinSequence }.map(\.info.id) == [b.id, a.id])
    }

    @Test(arguments: Backend.allCases)
    func racingAcquires_grantEachSlotExactlyOnce(_ backend: Backend) async throws {
        let stores = try await backend.makeStores(count: 4, clock: clock, directory: directory)
        for round in 0..<5 {
            let grants = try await withThrowingTaskGroup(of: FencingToken?.self) { group in
                for index in 0..<16 {
                    let store = stores[index % stores.count]
                    group.addTask {
                        let reply = try await store.heartbeat(heartbeat(member("r\(round)-\(index)"), goal: 2, .acquire))
                        if case .granted(let token) = reply.outcome { return token }
                        return nil
                    }
                }
                return try await group.reduce(into: [FencingToken]()) { if let token = $1 { $0.append(token) } }
            }
            #expect(grants.count == 2, "round \(round): \(grants)")
            #expect(Set(grants).count == grants.count)
            clock.advance(by: .seconds(3))
        }
    }
}

/// ``ChangeAnnouncing``: releases and joins reach the other handles of the store, and only for their group.
@Suite("Change announcement conformance", .timeLimit(.minutes(2)))
struct ChangeAnnouncementConformanceTests: ConformanceSuite {
    let fixture: ConformanceFixture

    init() throws { fixture = try ConformanceFixture() }

    @Test(arguments: Backend.allCases)
    func joinsAndReleases_areAnnouncedToOtherHandles_andOnlyToTheirGroup(_ backend: Backend) async throws {
        let stores = try await backend.makeStores(count: 2, clock: clock, directory: directory)
        let (holder, listener) = (stores[0], stores[1])
        var announced = try listener.changes(of: GroupName("announced")).makeAsyncIterator()
        let elsewhere = try listener.changes(of: GroupName("elsewhere"))
        var elsewhereChanges = elsewhere.makeAsyncIterator()
        let a = try member("a")
        _ = try await holder.heartbeat(heartbeat(a, group: "elsewhere", .acquire))
        #expect(await elsewhereChanges.next() != nil)  // a joined "elsewhere"
        _ = try await holder.heartbeat(heartbeat(a, group: "announced", .acquire))
        #expect(await announced.next() != nil)  // a joined "announced"
        // Renewing, and releasing a token that is not held, change nothing others must hear of at once.
        _ = try await holder.heartbeat(heartbeat(a, group: "elsewhere", .renew(FencingToken(rawValue: 1))))
        _ = try await holder.heartbeat(heartbeat(a, group: "elsewhere", .release(FencingToken(rawValue: 7))))
        _ = try await holder.heartbeat(heartbeat(a, group: "announced", .release(FencingToken(rawValue: 1))))
        #expect(await announced.next() != nil)  // a's slot is free
        // Announcements arrive in order, so anything more for "elsewhere" would be waiting by now.
        try await listener.close()
        var more = 0
        while await elsewhereChanges.next() != nil { more += 1 }
        #expect(more == 0)
    }
}

/// ``GroupDirectory``: one group by name, and the names page by page.
@Suite("Group directory conformance", .timeLimit(.minutes(2)))
struct GroupDirectoryConformanceTests: ConformanceSuite {
    let fixture: ConformanceFixture

    init() throws { fixture = try ConformanceFixture() }

    @Test(arguments: Backend.allCases)
    func groups_listsEveryGroupByName(_ backend: Backend) async throws {
        let store = try await store(backend)
        _ = try await store.heartbeat(heartbeat(member("a"), group: "zeta", .none))
        _ = try await store.heartbeat(heartbeat(member("a"), group: "alpha", goal: 2, .acquire))
        let groups = try await store.groups()
        #expect(groups.map(\.group.rawValue) == ["alpha", "zeta"])
        #expect(groups.map(\.activeGoal) == [2, 1])
    }

    @Test(arguments: Backend.allCases)
    func groupNames_comeInPages_inNameOrder_andGroupNamedReadsOne(_ backend: Backend) async throws {
        let store = try await store(backend)
        let names = (0..<7).map { "g\($0)" }
        for name in names.shuffled() { _ = try await store.heartbeat(heartbeat(member("a"), group: name, .none)) }
        var pages: [[String]] = []
        var cursor: GroupName?
        while true {
            let page = try await store.groupNames(after: cursor, limit: 3)
            if page.isEmpty { break }
            pages.append(page.map(\.rawValue))
            cursor = page.last
        }
        #expect(pages == [["g0", "g1", "g2"], ["g3", "g4", "g5"], ["g6"]])
        #expect(try await store.allGroupNames(pageSize: 2).map(\.rawValue) == names)
        #expect(try await store.group(named: GroupName("g4"))?.group.rawValue == "g4")
        #expect(try await store.group(named: GroupName("absent")) == nil)
    }
}
