import Foundation
import Synchronization
import Understudy
import UnderstudyCore

/// A store clock that only moves when a test moves it.
final class ManualClock: Sendable {
    private let current = Mutex(Instant(nanoseconds: 1_000_000_000))

    var now: Instant { current.withLock { $0 } }

    func advance(by duration: Duration) {
        current.withLock { $0 = $0 + duration }
    }

    var read: @Sendable () -> Instant { { self.now } }
}

/// A fresh temporary directory, removed when the value is released.
final class TemporaryDirectory: Sendable {
    let path: String

    init() throws {
        let template = (NSTemporaryDirectory() as NSString).appendingPathComponent("understudy-test-XXXXXX")
        var bytes = Array(template.utf8CString)
        guard let result = mkdtemp(&bytes) else { throw StoreError(.unavailable, "mkdtemp failed") }
        path = String(cString: result)
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func member(_ id: String, weight: Int = 50, incarnation: String? = nil) throws -> MemberInfo {
    try MemberInfo(id: MemberID(id), incarnation: incarnation ?? "\(id)-1", weight: weight, host: "test-host", pid: 42)
}

func heartbeat(
    _ member: MemberInfo,
    group: String = "group",
    goal: Int = 1,
    activation: Duration = .seconds(3),
    phase: MemberPhase = .standby,
    _ intent: Heartbeat.Intent
) throws -> Heartbeat {
    try Heartbeat(group: GroupName(group), activeGoal: goal, activationInterval: activation, member: member, phase: phase, intent: intent)
}

/// Polls `condition` until it holds or `timeout` passes; for waiting on other processes, whose progress
/// cannot be awaited directly.
func eventually(timeout: Duration = .seconds(20), _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
}
