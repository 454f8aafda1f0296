import Benchmark
import UnderstudyCore

// Micro-benchmarks of the pure core: how many events per second the state machine and the ledger handle, and
// how many allocations one tick and one heartbeat cycle cost. Run: `swift package benchmark` in Benchmarks/.

/// A member and its group's ledger, driven by hand on a fake clock.
struct Rig {
    var machine: MemberStateMachine
    var ledger: GroupLedger
    var now = Instant(nanoseconds: 1_000_000_000)
    var pending: [(Heartbeat, MemberStateMachine.RequestID)] = []
    let interval = Duration.milliseconds(100)

    init(others: Int = 2) throws {
        let group = try GroupName("bench")
        let configuration = try GroupConfiguration(name: group, heartbeatInterval: .milliseconds(100), activationInterval: .milliseconds(500))
        let member = try MemberInfo(id: MemberID("a"), incarnation: "a-1", weight: 60, host: "h", pid: 1)
        machine = MemberStateMachine(configuration: configuration, member: member)
        ledger = GroupLedger(group: group, activeGoal: 1)
        for index in 0..<others {
            let other = try MemberInfo(id: MemberID("s\(index)"), incarnation: "s-\(index)", weight: 50, host: "h", pid: Int32(2 + index))
            _ = try ledger.apply(
                Heartbeat(group: group, activeGoal: 1, activationInterval: .milliseconds(500), member: other, phase: .standby, intent: .none),
                now: now
            )
        }
        collect(machine.start(now: now))
        // Join, acquire, and become active.
        for _ in 0..<4 { cycle() }
    }

    mutating func collect(_ actions: [MemberStateMachine.Action]) {
        for case .sendHeartbeat(let heartbeat, let id) in actions { pending.append((heartbeat, id)) }
    }

    /// One heartbeat interval: the tick that sends the heartbeat, the store applying it, the reply.
    mutating func cycle() {
        now = now + interval
        collect(machine.tick(now: now))
        let sent = pending
        pending.removeAll(keepingCapacity: true)
        for (heartbeat, id) in sent {
            // Keep the standbys alive in the ledger as well.
            guard let reply = try? ledger.apply(heartbeat, now: now) else { continue }
            collect(machine.heartbeatReplied(reply, to: id, now: now))
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .cpuTotal],
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    Benchmark("heartbeat cycle of an active member (tick + ledger apply + reply)") { benchmark in
        var rig = try Rig()
        guard case .active = rig.machine.status else { fatalError("the rig did not activate: \(rig.machine.status)") }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            rig.cycle()
        }
        benchmark.stopMeasurement()
        blackHole(rig.machine.status)
    }

    // What the harness itself costs per sample: subtract it from the figures below.
    Benchmark("harness baseline (empty body)") { benchmark in
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            blackHole(index)
        }
    }

    Benchmark("tick with nothing due") { benchmark in
        var rig = try Rig()
        let now = rig.now + .milliseconds(1)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(rig.machine.tick(now: now))
        }
    }

    Benchmark("ledger apply: renewal in a group of 3") { benchmark in
        var rig = try Rig()
        guard let token = rig.machine.activeToken else { fatalError("the rig did not activate") }
        let heartbeat = Heartbeat(
            group: rig.ledger.group, activeGoal: 1, activationInterval: .milliseconds(500), member: rig.machine.member,
            phase: .active, intent: .renew(token)
        )
        var now = rig.now
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            now = now + .microseconds(10)
            blackHole(try rig.ledger.apply(heartbeat, now: now))
        }
    }
}
