import HeapModule
import Synchronization
import UnderstudyCore
import UnderstudyStore

/// One timer for all the members of a process: each member has at most one tick pending, and the scheduler
/// sleeps until the earliest, then fires every tick that is due.
///
/// Members put their heartbeats on one grid (``MemberStateMachine/heartbeatPhase``), so their ticks fall due
/// together and one wake-up serves them all, where a timer per member would cost a wake-up each.
package final class TickScheduler: Sendable {
    /// The scheduler shared by every ``Member`` of the process.
    package static let shared = TickScheduler(clock: MonotonicClock.now)

    /// A member's place in the scheduler.
    package struct Registration: Hashable, Sendable {
        fileprivate let id: UInt64
    }

    private struct Pending: Comparable {
        var deadline: Instant
        var registration: UInt64
        var generation: UInt64

        static func < (lhs: Pending, rhs: Pending) -> Bool {
            (lhs.deadline, lhs.registration, lhs.generation) < (rhs.deadline, rhs.registration, rhs.generation)
        }
    }

    private struct Registered {
        var fire: @Sendable () -> Void
        /// Only the newest deadline of a registration counts; older entries in the heap are skipped.
        var generation: UInt64 = 0
    }

    private struct State {
        var pending = Heap<Pending>()
        var registered: [UInt64: Registered] = [:]
        var nextRegistration: UInt64 = 1
        /// The task sleeping until `wakeAt`; replaced when an earlier deadline arrives.
        var driver: (task: Task<Void, Never>, wakeAt: Instant, number: UInt64)?
        var nextDriver: UInt64 = 1
    }

    private let state = Mutex(State())
    private let clock: @Sendable () -> Instant

    package init(clock: @escaping @Sendable () -> Instant) {
        self.clock = clock
    }

    /// Registers `fire`, called (from the scheduler's task) each time a tick of this registration falls due.
    package func register(fire: @escaping @Sendable () -> Void) -> Registration {
        state.withLock { state in
            let id = state.nextRegistration
            state.nextRegistration += 1
            state.registered[id] = Registered(fire: fire)
            return Registration(id: id)
        }
    }

    /// Forgets the registration and its pending tick.
    package func unregister(_ registration: Registration) {
        _ = state.withLock { $0.registered.removeValue(forKey: registration.id) }
    }

    /// Schedules the registration's tick at `deadline`, replacing the one it had pending.
    package func schedule(_ registration: Registration, at deadline: Instant) {
        let superseded: Task<Void, Never>? = state.withLock { state in
            guard var registered = state.registered[registration.id] else { return nil }
            registered.generation += 1
            state.registered[registration.id] = registered
            state.pending.insert(Pending(deadline: deadline, registration: registration.id, generation: registered.generation))
            if let driver = state.driver, driver.wakeAt <= deadline { return nil }
            let old = state.driver?.task
            startDriver(wakeAt: deadline, &state)
            return old
        }
        superseded?.cancel()
    }

    /// How many registrations have a tick pending (for tests): those with a heap entry of their newest generation.
    package var scheduledCount: Int {
        state.withLock { state in
            state.pending.unordered.count { state.registered[$0.registration]?.generation == $0.generation }
        }
    }

    private func startDriver(wakeAt: Instant, _ state: inout State) {
        let number = state.nextDriver
        state.nextDriver += 1
        let clock = self.clock
        let task = Task { [self] in
            let delay = wakeAt - clock()
            if delay > .zero {
                do { try await Task.sleep(for: delay) } catch { return }
            }
            fireDue(driver: number)
        }
        state.driver = (task, wakeAt, number)
    }

    private func fireDue(driver number: UInt64) {
        let now = clock()
        let due: [@Sendable () -> Void] = state.withLock { state in
            guard state.driver?.number == number else { return [] }
            state.driver = nil
            var due: [@Sendable () -> Void] = []
            while let first = state.pending.min, first.deadline <= now {
                state.pending.removeMin()
                guard let registered = state.registered[first.registration], registered.generation == first.generation
                else { continue }
                due.append(registered.fire)
            }
            // Entries of forgotten or rescheduled registrations are dropped as they reach the top.
            while let first = state.pending.min, state.registered[first.registration]?.generation != first.generation {
                state.pending.removeMin()
            }
            if let next = state.pending.min {
                startDriver(wakeAt: next.deadline, &state)
            }
            return due
        }
        for fire in due { fire() }
    }
}
