import Synchronization
import Testing
import UnderstudyCore
import UnderstudyStore

/// A store clock that only moves when a test moves it, so that expiry is tested exactly and without waiting.
public final class ManualClock: Sendable {
    private let current = Mutex(Instant(nanoseconds: 1_000_000_000))

    public init() {}

    public var now: Instant { current.withLock { $0 } }

    public func advance(by duration: Duration) {
        current.withLock { $0 = $0 + duration }
    }

    /// This clock as a function, for a store that takes one.
    public var read: @Sendable () -> Instant { { self.now } }

    /// This clock as a host clock, with a wall clock that reads `wall` (0: tokens count from 1).
    public func host(boot: String = "boot-1", host: String = "test-host", wall: @escaping @Sendable () -> UInt64 = { 0 }) -> HostClock {
        HostClock(bootID: boot, host: host, now: read, wallMicroseconds: wall)
    }
}

/// What a conformance check is given: the clock the backend judges time on, and handles on one fresh store.
public struct ConformanceContext<Store: Sendable>: Sendable {
    /// The clock every handle of the store judges time on; only the check moves it.
    public let clock: ManualClock
    private let makeStores: @Sendable (Int) async throws -> [Store]

    /// `count` handles on one fresh store (separate connections, as separate processes would have).
    public func stores(_ count: Int) async throws -> [Store] {
        let stores = try await makeStores(count)
        #expect(stores.count == count, "the backend made \(stores.count) handles, not \(count)")
        return stores
    }

    /// One handle on a fresh store.
    public func store() async throws -> Store {
        try await stores(1)[0]
    }

    fileprivate init(clock: ManualClock, makeStores: @escaping @Sendable (Int) async throws -> [Store]) {
        self.clock = clock
        self.makeStores = makeStores
    }
}

/// One behaviour that every backend of a capability must show, checked with Swift Testing's expectations.
///
/// A backend's tests run every check of the capabilities it has, one test case each:
///
/// ```swift
/// @Test(arguments: LeaseConformance.checks)
/// func lease(_ check: ConformanceCheck<any CoordinationStore>) async throws {
///     try await check.run { count, clock in try await MyStore.handles(count, judgingTimeOn: clock.read) }
/// }
/// ```
public struct ConformanceCheck<Store: Sendable>: Sendable, CustomTestStringConvertible {
    /// What the check expects, as its test case is named.
    public let name: String
    private let body: @Sendable (ConformanceContext<Store>) async throws -> Void

    public var testDescription: String { name }

    public init(_ name: String, _ body: @escaping @Sendable (ConformanceContext<Store>) async throws -> Void) {
        self.name = name
        self.body = body
    }

    /// Runs the check on fresh stores that `makeStores` opens: `count` handles on one new store, all judging
    /// time on the clock given, which starts at one second and moves only when the check moves it.
    public func run(makeStores: @escaping @Sendable (_ count: Int, _ clock: ManualClock) async throws -> [Store]) async throws {
        let clock = ManualClock()
        try await body(ConformanceContext(clock: clock) { count in try await makeStores(count, clock) })
    }
}

/// Members and heartbeats as the checks write them.
public enum ConformanceSamples {
    /// A member on host `test-host` with pid 42.
    public static func member(_ id: String, weight: Int = 50, incarnation: String? = nil) throws -> MemberInfo {
        try MemberInfo(id: MemberID(id), incarnation: incarnation ?? "\(id)-1", weight: weight, host: "test-host", pid: 42)
    }

    /// A heartbeat of `member` for `group`, with T of 3 s unless told.
    public static func heartbeat(
        _ member: MemberInfo,
        group: String = "group",
        goal: Int = 1,
        activation: Duration = .seconds(3),
        phase: MemberPhase = .standby,
        _ intent: Heartbeat.Intent
    ) throws -> Heartbeat {
        try Heartbeat(group: GroupName(group), activeGoal: goal, activationInterval: activation, member: member, phase: phase, intent: intent)
    }
}

/// A member on host `test-host` with pid 42 (``ConformanceSamples/member(_:weight:incarnation:)``).
public func member(_ id: String, weight: Int = 50, incarnation: String? = nil) throws -> MemberInfo {
    try ConformanceSamples.member(id, weight: weight, incarnation: incarnation)
}

/// A heartbeat of `member` (``ConformanceSamples/heartbeat(_:group:goal:activation:phase:_:)``).
public func heartbeat(
    _ member: MemberInfo,
    group: String = "group",
    goal: Int = 1,
    activation: Duration = .seconds(3),
    phase: MemberPhase = .standby,
    _ intent: Heartbeat.Intent
) throws -> Heartbeat {
    try ConformanceSamples.heartbeat(member, group: group, goal: goal, activation: activation, phase: phase, intent)
}
