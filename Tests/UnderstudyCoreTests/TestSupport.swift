import Testing
import UnderstudyCore

// MARK: Values

/// The instant `offset` after the origin of the test timeline.
func at(_ offset: Duration) -> Instant { .zero + offset }

func token(_ value: UInt64) -> FencingToken { FencingToken(rawValue: value) }

enum Fixture {
    static let groupName = try! GroupName("orders")

    /// I = 1s, T = 3s unless told otherwise: self-fence at s + 2s, hard deadline at s + 3s.
    static func configuration(
        activeGoal: Int = 1,
        heartbeat: Duration = .seconds(1),
        activation: Duration = .seconds(3),
        preparation: Duration? = nil,
        preemption: Bool = true
    ) throws -> GroupConfiguration {
        try GroupConfiguration(
            name: groupName,
            activeGoal: activeGoal,
            heartbeatInterval: heartbeat,
            activationInterval: activation,
            preparationInterval: preparation,
            preemption: preemption
        )
    }

    static func member(_ id: String, weight: Int = 50, incarnation: String? = nil, pid: Int32 = 4242) throws -> MemberInfo {
        try MemberInfo(id: MemberID(id), incarnation: incarnation ?? "\(id)-1", weight: weight, host: "host-\(id)", pid: pid)
    }

    static func heartbeat(
        _ member: MemberInfo,
        _ intent: Heartbeat.Intent = .none,
        phase: MemberPhase = .standby,
        activeGoal: Int = 1,
        activation: Duration = .seconds(3)
    ) -> Heartbeat {
        Heartbeat(group: groupName, activeGoal: activeGoal, activationInterval: activation, member: member, phase: phase, intent: intent)
    }

    static func viewMember(_ info: MemberInfo, join: Int64, phase: MemberPhase = .standby, age: Duration = .zero) -> GroupView.Member {
        GroupView.Member(info: info, joinSequence: join, phase: phase, heartbeatAge: age)
    }

    static func view(
        activeGoal: Int = 1,
        lastToken: FencingToken? = nil,
        members: [GroupView.Member],
        leases: [GroupView.Lease] = []
    ) -> GroupView {
        GroupView(group: groupName, activeGoal: activeGoal, lastToken: lastToken ?? leases.map(\.token).max(), members: members, leases: leases)
    }

    static func lease(_ holder: MemberInfo, token value: UInt64, slot: Int = 0, remaining: Duration = .seconds(3)) -> GroupView.Lease {
        GroupView.Lease(slot: slot, holder: holder.id, token: token(value), remaining: remaining)
    }
}

// MARK: Reading actions

typealias Action = MemberStateMachine.Action

extension Array where Element == MemberStateMachine.Action {
    /// The heartbeats among the actions, in order.
    var heartbeats: [(heartbeat: Heartbeat, id: MemberStateMachine.RequestID)] {
        compactMap { if case .sendHeartbeat(let heartbeat, let id) = $0 { (heartbeat, id) } else { nil } }
    }

    var intents: [Heartbeat.Intent] { heartbeats.map(\.heartbeat.intent) }

    var events: [MemberEvent] {
        compactMap { if case .emit(let event) = $0 { event } else { nil } }
    }

    /// The cues to start and stop work, in order: `.startWork` and `.stopWork` only.
    var workCues: [Action] {
        filter {
            switch $0 {
            case .startWork, .stopWork: true
            case .sendHeartbeat, .emit, .stopWorkBy, .leaseValid, .scheduleTick, .finish: false
            }
        }
    }

    var tick: Instant? {
        compactMap { if case .scheduleTick(let instant) = $0 { instant } else { nil } }.last
    }

    /// The only heartbeat among the actions; records an issue when there is not exactly one.
    func onlyHeartbeat(sourceLocation: SourceLocation = #_sourceLocation) -> (heartbeat: Heartbeat, id: MemberStateMachine.RequestID)? {
        let all = heartbeats
        guard all.count == 1 else {
            Issue.record("expected exactly one heartbeat in \(self)", sourceLocation: sourceLocation)
            return nil
        }
        return all[0]
    }
}

// MARK: A hand-driven group

/// Real ``MemberStateMachine``s against one ``GroupLedger`` on one timeline that only the test advances.
///
/// The group plays every shell: it carries heartbeats to the ledger and replies back with per-member latency,
/// loss and outages, fires ticks when scheduled, and reports `workStopped` a fixed delay after each
/// `stopWork`. While it runs it checks two safety properties on every activation: no more than `activeGoal`
/// members work at once, and every activation carries a larger token than any before it.
final class TestGroup {
    typealias Handle = Int

    struct Link {
        /// One-way delay to the store; a heartbeat sent while unreachable fails after this delay.
        var toStore: Duration = .zero
        /// One-way delay back to the member.
        var toMember: Duration = .zero
        var reachable = true
        /// The store applies heartbeats but the replies are lost.
        var dropsReplies = false
    }

    struct Node {
        var machine: MemberStateMachine
        var link = Link()
        var tickAt: Instant?
        var crashed = false
        /// The shell reports `workStopped` this long after a `deactivate`; `nil`: the test reports it.
        var workStopDelay: Duration? = .zero
        var working: FencingToken?
        var events: [(at: Instant, event: MemberEvent)] = []
        var stopWorkBy: [(at: Instant, deadline: Instant)] = []
        var leaseValidUntil: [Instant] = []
        var sent: [(at: Instant, heartbeat: Heartbeat)] = []
        var finished: HeartbeatRejection?? = .none
    }

    struct Applied {
        var at: Instant
        var member: Handle
        var intent: Heartbeat.Intent
        var result: Result<HeartbeatReply.Outcome, HeartbeatRejection>
    }

    private enum Step {
        case atStore(Handle, Heartbeat, MemberStateMachine.RequestID)
        case replied(Handle, Result<HeartbeatReply, HeartbeatRejection>, MemberStateMachine.RequestID)
        case failed(Handle, MemberStateMachine.RequestID)
        case workStopped(Handle)
    }

    private struct Pending {
        var at: Instant
        var order: Int
        var step: Step
    }

    let configuration: GroupConfiguration
    var ledger: GroupLedger
    private(set) var now: Instant
    private(set) var nodes: [Node] = []
    private(set) var applied: [Applied] = []
    /// Every activation in the group, in order.
    private(set) var activations: [(at: Instant, member: Handle, token: FencingToken)] = []
    private var pending: [Pending] = []
    private var nextOrder = 0

    init(_ configuration: GroupConfiguration, now: Instant = .zero) {
        self.configuration = configuration
        self.ledger = GroupLedger(group: configuration.name, activeGoal: configuration.activeGoal)
        self.now = now
    }

    // MARK: Driving

    @discardableResult
    func join(
        _ member: MemberInfo,
        restAfterResigning: Duration? = nil,
        link: Link = Link(),
        configuration: GroupConfiguration? = nil
    ) -> Handle {
        let machine = MemberStateMachine(configuration: configuration ?? self.configuration, member: member, restAfterResigning: restAfterResigning)
        var node = Node(machine: machine)
        node.link = link
        nodes.append(node)
        let handle = nodes.count - 1
        let actions = nodes[handle].machine.start(now: now)
        run(actions, for: handle)
        return handle
    }

    func advance(by duration: Duration) { advance(to: now + duration) }

    /// Processes everything due up to and including `target`, in time order, then sets the clock to `target`.
    func advance(to target: Instant) {
        var steps = 0
        var stepsAtSameInstant = 0
        while let instant = nextInstant(), instant <= target {
            stepsAtSameInstant = instant == now ? stepsAtSameInstant + 1 : 0
            now = instant
            steps += 1
            if steps > 100_000 || stepsAtSameInstant > 1_000 {
                Issue.record("runaway: \(steps) steps, \(stepsAtSameInstant) at \(now)")
                return
            }
            step()
        }
        now = target
    }

    /// Runs until `handle` emits an event matching `predicate`, or `limit` passes. Returns the instant.
    @discardableResult
    func advance(until limit: Duration, to handle: Handle, emits predicate: (MemberEvent) -> Bool) -> Instant? {
        let target = now + limit
        let seen = nodes[handle].events.count
        while now < target {
            guard let instant = nextInstant(), instant <= target else { break }
            advance(to: instant)
            if let hit = nodes[handle].events.dropFirst(seen).first(where: { predicate($0.event) }) { return hit.at }
        }
        advance(to: target)
        return nil
    }

    func crash(_ handle: Handle) {
        nodes[handle].crashed = true
        nodes[handle].working = nil
        nodes[handle].tickAt = nil
    }

    func shutdown(_ handle: Handle) {
        run(nodes[handle].machine.shutdownRequested(now: now), for: handle)
    }

    /// The member's work ends by itself while it is active.
    func endWork(_ handle: Handle) {
        nodes[handle].working = nil
        run(nodes[handle].machine.workEnded(now: now), for: handle)
    }

    /// The test reports that the work has stopped (for nodes whose `workStopDelay` is `nil`).
    func reportWorkStopped(_ handle: Handle) {
        nodes[handle].working = nil
        run(nodes[handle].machine.workStopped(now: now), for: handle)
    }

    func setLink(_ handle: Handle, _ change: (inout Link) -> Void) { change(&nodes[handle].link) }

    func setWorkStopDelay(_ handle: Handle, _ delay: Duration?) { nodes[handle].workStopDelay = delay }

    // MARK: Observing

    func events(_ handle: Handle) -> [MemberEvent] { nodes[handle].events.map(\.event) }

    func timedEvents(_ handle: Handle) -> [(at: Instant, event: MemberEvent)] { nodes[handle].events }

    func status(_ handle: Handle) -> MemberState { nodes[handle].machine.status }

    func machine(_ handle: Handle) -> MemberStateMachine { nodes[handle].machine }

    func node(_ handle: Handle) -> Node { nodes[handle] }

    /// The members with a valid lease on the store right now.
    var holders: Set<Handle> {
        let view = ledger.view(now: now)
        let holders = Set(view.leases.map(\.holder))
        return Set(nodes.indices.filter { holders.contains(nodes[$0].machine.member.id) })
    }

    /// The members that currently work (activated, and the work not yet reported stopped).
    var working: Set<Handle> { Set(nodes.indices.filter { nodes[$0].working != nil }) }

    /// The ledger's lease operations applied for `handle` since `instant`.
    func appliedIntents(_ handle: Handle, since instant: Instant = .zero) -> [Heartbeat.Intent] {
        applied.filter { $0.member == handle && $0.at >= instant }.map(\.intent)
    }

    // MARK: Machinery

    private func schedule(_ step: Step, at instant: Instant) {
        pending.append(Pending(at: instant, order: nextOrder, step: step))
        nextOrder += 1
    }

    private func nextInstant() -> Instant? {
        let deliveries = pending.map(\.at).min()
        let ticks = nodes.indices.compactMap { isDriven($0) ? nodes[$0].tickAt : nil }.min()
        switch (deliveries, ticks) {
        case (nil, nil): return nil
        case (let d?, nil): return d
        case (nil, let t?): return t
        case (let d?, let t?): return min(d, t)
        }
    }

    /// Performs one thing due at `now`: deliveries first (in the order they were scheduled), then ticks.
    private func step() {
        if let index = pending.indices.filter({ pending[$0].at <= now }).min(by: { pending[$0].order < pending[$1].order }) {
            let due = pending.remove(at: index)
            perform(due.step)
            return
        }
        guard let handle = nodes.indices.first(where: { isDriven($0) && nodes[$0].tickAt.map { $0 <= now } == true }) else {
            return
        }
        nodes[handle].tickAt = nil
        run(nodes[handle].machine.tick(now: now), for: handle)
    }

    private func perform(_ step: Step) {
        switch step {
        case .atStore(let handle, let heartbeat, let id):
            let result: Result<HeartbeatReply, HeartbeatRejection>
            do throws(HeartbeatRejection) {
                result = .success(try ledger.apply(heartbeat, now: now))
            } catch {
                result = .failure(error)
            }
            applied.append(Applied(at: now, member: handle, intent: heartbeat.intent, result: result.map(\.outcome)))
            guard !nodes[handle].link.dropsReplies else { return }
            schedule(.replied(handle, result, id), at: now + nodes[handle].link.toMember)
        case .replied(let handle, let result, let id):
            guard isDriven(handle) else { return }
            switch result {
            case .success(let reply):
                run(nodes[handle].machine.heartbeatReplied(reply, to: id, now: now), for: handle)
            case .failure(let rejection):
                run(nodes[handle].machine.heartbeatRejected(id, rejection, now: now), for: handle)
            }
        case .failed(let handle, let id):
            guard isDriven(handle) else { return }
            run(nodes[handle].machine.heartbeatFailed(id, now: now), for: handle)
        case .workStopped(let handle):
            guard isDriven(handle) else { return }
            nodes[handle].working = nil
            run(nodes[handle].machine.workStopped(now: now), for: handle)
        }
    }

    /// A crashed member is gone, and a finished one must not be driven any more (``MemberStateMachine/Action/finish(_:)``).
    private func isDriven(_ handle: Handle) -> Bool {
        !nodes[handle].crashed && nodes[handle].finished == nil
    }

    private func run(_ actions: [MemberStateMachine.Action], for handle: Handle) {
        for action in actions {
            switch action {
            case .sendHeartbeat(let heartbeat, let id):
                nodes[handle].sent.append((now, heartbeat))
                let link = nodes[handle].link
                if link.reachable {
                    schedule(.atStore(handle, heartbeat, id), at: now + link.toStore)
                } else {
                    schedule(.failed(handle, id), at: now + link.toStore)
                }
            case .emit(let event):
                nodes[handle].events.append((now, event))
            case .startWork(let token):
                if let previous = activations.last, previous.token >= token {
                    Issue.record("token \(token) activated at \(now) after token \(previous.token)")
                }
                activations.append((now, handle, token))
                nodes[handle].working = token
                if working.count > configuration.activeGoal {
                    Issue.record("\(working.count) members work at \(now) with active goal \(configuration.activeGoal)")
                }
            case .stopWork:
                if nodes[handle].working != nil, let delay = nodes[handle].workStopDelay {
                    schedule(.workStopped(handle), at: now + delay)
                }
            case .stopWorkBy(let deadline):
                nodes[handle].stopWorkBy.append((now, deadline))
            case .leaseValid(let until):
                nodes[handle].leaseValidUntil.append(until)
            case .scheduleTick(let instant):
                nodes[handle].tickAt = instant
            case .finish(let rejection):
                nodes[handle].finished = .some(rejection)
                nodes[handle].tickAt = nil
            }
        }
    }
}
