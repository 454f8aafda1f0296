/// The settings of a partitioned group: the timing and preferences of a group (``GroupConfiguration``; its active
/// goal is not used) and its number of partitions P.
public struct PartitionedGroupConfiguration: Hashable, Sendable {
    public let group: GroupConfiguration
    /// P, 1 … ``PartitionAssignment/maximumPartitions``.
    public let partitions: Int

    public init(group: GroupConfiguration, partitions: Int) throws(ConfigurationError) {
        guard (1...PartitionAssignment.maximumPartitions).contains(partitions) else { throw .partitionsOutOfRange(partitions) }
        self.group = group
        self.partitions = partitions
    }

    public var name: GroupName { group.name }
}

/// What a member of a partitioned group is told, in order for each partition.
public enum PartitionEvent: Hashable, Sendable, CustomStringConvertible {
    /// A hint: the partition is about to move to this member (its owner hands it over, or looks unhealthy). Warm
    /// up for it. Withdrawn by ``preparationWithdrawn(_:)`` when the move no longer stands.
    case prepare(Int)
    /// The last ``prepare(_:)`` of the partition no longer holds.
    case preparationWithdrawn(Int)
    /// This member owns the partition with this token: act on it, stamping work with the token.
    case assigned(Int, FencingToken)
    /// Stop acting on the partition now; it is given back once the work has stopped.
    case revoked(Int, DeactivationReason)

    public var description: String {
        switch self {
        case .prepare(let partition): "prepare(\(partition))"
        case .preparationWithdrawn(let partition): "preparation-withdrawn(\(partition))"
        case .assigned(let partition, let token): "assigned(\(partition), token \(token))"
        case .revoked(let partition, let reason): "revoked(\(partition), \(reason))"
        }
    }
}

/// The life of one member of a partitioned group, as a sans-IO state machine: every member computes the same
/// ``PartitionAssignment`` from the store's view, acquires the free partitions assigned to it, hands over in an
/// orderly way those assigned elsewhere (stop the work, then release), and keeps each of its partitions on the
/// ``LeaseTimeline`` of its newest confirmed renewal, fencing it at `s + T − I` like a slot.
///
/// All its lease operations travel in one ``PartitionHeartbeat`` per interval, whatever P is, and at most one
/// heartbeat waits for an answer at a time: a change (a partition to acquire, one to release) while one is out
/// goes in the next, sent as soon as the answer comes.
public struct PartitionedMemberStateMachine: Sendable {
    /// Identifies one heartbeat so its reply can be matched, as for a member of a group of slots.
    public typealias RequestID = MemberStateMachine.RequestID

    public enum Action: Hashable, Sendable {
        /// Send the heartbeat; report the answer with ``heartbeatReplied(_:to:now:)``, ``heartbeatFailed(_:now:)`` or
        /// ``heartbeatRejected(_:_:now:)``.
        case sendHeartbeat(PartitionHeartbeat, RequestID)
        /// News for the application; the cues to act are ``startWork(partition:token:)`` and
        /// ``stopWork(partition:reason:)``.
        case emit(PartitionEvent)
        /// Start the partition's work, stamped with the token; report its end with ``workEnded(partition:now:)``.
        case startWork(partition: Int, token: FencingToken)
        /// Stop the partition's work and call ``workStopped(partition:now:)`` once it has; it is released only then.
        case stopWork(partition: Int, reason: DeactivationReason)
        /// The work of these partitions MUST have stopped by this instant (``LeaseTimeline/workDeadline``).
        case stopWorkBy(partitions: [Int], Instant)
        /// The leases of these partitions are vouched for until this instant (``LeaseTimeline/workDeadline``).
        case leaseValid(partitions: [Int], until: Instant)
        /// Call ``tick(now:)`` at this instant (replaces any earlier request).
        case scheduleTick(at: Instant)
        /// The member left its group (`nil`) or was refused for good; stop driving it.
        case finish(HeartbeatRejection?)
    }

    /// A partition this member holds.
    private enum Holding: Sendable {
        case active(FencingToken, LeaseTimeline)
        /// Told to stop; `lease` is nil once it can no longer be renewed.
        case stopping(FencingToken, DeactivationReason, lease: LeaseTimeline?)
        /// Work stopped; giving the partition back. After `giveUpAt` its lease has expired anyway.
        case releasing(FencingToken, giveUpAt: Instant)
    }

    private enum State: Sendable {
        case idle
        /// The store refused the member's id since then: a process with the id may be alive, or a dead one's row
        /// has not expired yet. It keeps asking for T + I, then finishes with the refusal.
        case waitingForID(refusedSince: Instant)
        case running
        /// Stopping every partition, then leaving (`rejection` nil) or finishing with the refusal.
        case leaving(giveUpAt: Instant, rejection: HeartbeatRejection?)
        case finished
    }

    private struct Request: Sendable {
        var id: RequestID
        var sentAt: Instant
        var operations: [PartitionHeartbeat.Operation]
    }

    public let configuration: PartitionedGroupConfiguration
    public let member: MemberInfo
    /// How long a partition whose work ended by itself waits before this member takes it again.
    public let restAfterResigning: Duration

    private var state: State = .idle
    private var holdings: [Int: Holding] = [:]
    /// The newest view and the assignment every member derives from it.
    private var view: GroupView?
    /// The newest view's valid leases, by partition.
    private var leases: [Int: GroupView.Lease] = [:]
    private var target: Set<Int> = []
    private var prepared: Set<Int> = []
    /// Partitions whose work ended by themselves, not taken again before then.
    private var restingUntil: [Int: Instant] = [:]
    /// The newest token of each partition this member sent a release for: a grant of it or an older one only
    /// confirms a lease on its way back (a heartbeat given up on may still be applied).
    private var releasedTokens: [Int: FencingToken] = [:]
    private var inFlight: Request?
    private var sendWhenAnswered = false
    private var nextRequest: UInt64 = 1
    private var nextHeartbeatAt: Instant = .zero
    private var lastAnswerAt: Instant = .zero
    /// An operator asked this member not to compete (``drainRequested(now:)``) until ``resumeRequested(now:)``: it
    /// holds no partition and reports itself `resting`, so no member assigns it any.
    private var drained = false

    public init(configuration: PartitionedGroupConfiguration, member: MemberInfo, restAfterResigning: Duration? = nil) {
        self.configuration = configuration
        self.member = member
        self.restAfterResigning = restAfterResigning ?? configuration.group.activationInterval
    }

    /// The member's state, named as for a member of a group of slots: `active` while it owns a partition.
    public var status: MemberState {
        switch state {
        case .idle: .idle
        case .waitingForID, .running: MemberState(phase(now: lastAnswerAt))
        case .leaving: .leaving
        case .finished: .finished
        }
    }

    /// The partitions this member acts on, with their tokens.
    public var activePartitions: [Int: FencingToken] {
        holdings.compactMapValues { holding in
            if case .active(let token, _) = holding { token } else { nil }
        }
    }

    /// The partitions the newest view assigns to this member.
    public var assignedPartitions: Set<Int> { target }

    private var heartbeatInterval: Duration { configuration.group.heartbeatInterval }
    private var activationInterval: Duration { configuration.group.activationInterval }

    // MARK: Events

    /// The member joins its group: the first heartbeat goes out at once.
    public mutating func start(now: Instant) -> [Action] {
        guard case .idle = state else { return [scheduleTick(now: now)] }
        state = .running
        lastAnswerAt = now
        var actions: [Action] = []
        send(now: now, into: &actions)
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// Time has passed: fence partitions whose renewals stopped, give up releases past expiry, and send the
    /// periodic heartbeat when due.
    public mutating func tick(now: Instant) -> [Action] {
        var actions: [Action] = []
        if let request = inFlight, now >= request.sentAt + activationInterval {
            // No answer within T: whatever it carried is moot. Its grants, if applied, show in the next view.
            inFlight = nil
        }
        for (partition, holding) in holdings.sorted(by: { $0.key < $1.key }) {
            switch holding {
            case .active(let token, let lease) where now >= lease.selfFence:
                revoke(partition, token, .selfFenced, keeping: nil, into: &actions)
                actions.append(.stopWorkBy(partitions: [partition], lease.workDeadline))
            case .stopping(let token, let reason, let lease?) where now >= lease.selfFence:
                holdings[partition] = .stopping(token, reason, lease: nil)
                actions.append(.stopWorkBy(partitions: [partition], lease.workDeadline))
            case .releasing(_, let giveUpAt) where now >= giveUpAt:
                holdings[partition] = nil
            case .active, .stopping, .releasing:
                break
            }
        }
        restingUntil = restingUntil.filter { $0.value > now }
        switch state {
        case .leaving(let giveUpAt, let rejection) where now >= giveUpAt || (rejection != nil && holdings.isEmpty):
            finish(rejection, into: &actions)
            return actions
        case .idle, .waitingForID, .running, .leaving, .finished:
            break
        }
        if now >= nextHeartbeatAt, isInGroup { send(now: now, into: &actions) }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The store announced a join or a release in this group: heartbeat now, so partitions move at once. Only a
    /// hint; the periodic heartbeat stays the safety net.
    public mutating func changeAnnounced(now: Instant) -> [Action] {
        var actions: [Action] = []
        if case .running = state { send(now: now, into: &actions) }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The store answered heartbeat `id`.
    public mutating func heartbeatReplied(_ reply: PartitionHeartbeatReply, to id: RequestID, now: Instant) -> [Action] {
        guard let request = inFlight, request.id == id else { return [scheduleTick(now: now)] }
        inFlight = nil
        lastAnswerAt = now
        if case .waitingForID = state { state = .running }
        var actions: [Action] = []
        var confirmed: [Int] = []
        var refused: Set<Int> = []
        for (operation, outcome) in zip(request.operations, reply.outcomes) {
            if case .acquire(let partition) = operation, outcome == .notGranted { refused.insert(partition) }
            apply(outcome, of: operation, sentAt: request.sentAt, now: now, confirmed: &confirmed, into: &actions)
        }
        if !confirmed.isEmpty {
            actions.append(.leaseValid(partitions: confirmed.sorted(), until: timeline(from: request.sentAt).workDeadline))
        }
        if reply.left, case .leaving = state {
            finish(nil, into: &actions)
            return actions
        }
        view = reply.view
        leases = Dictionary(reply.view.leases.map { ($0.slot, $0) }, uniquingKeysWith: { first, _ in first })
        follow(reply.view, refused: refused, now: now, into: &actions)
        if sendWhenAnswered { send(now: now, into: &actions) }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// Heartbeat `id` failed; the member retries at the next heartbeat and fences partitions whose renewals stop.
    public mutating func heartbeatFailed(_ id: RequestID, now: Instant) -> [Action] {
        if inFlight?.id == id { inFlight = nil }
        return [scheduleTick(now: now)]
    }

    /// The store refused heartbeat `id` for good: the member stops every partition and finishes with the refusal.
    public mutating func heartbeatRejected(_ id: RequestID, _ rejection: HeartbeatRejection, now: Instant) -> [Action] {
        guard inFlight?.id == id else { return [scheduleTick(now: now)] }
        inFlight = nil
        var actions: [Action] = []
        if case .memberIDInUse = rejection {
            switch state {
            case .running where view == nil:
                state = .waitingForID(refusedSince: now)
                return [scheduleTick(now: now)]
            case .waitingForID(let since) where now < since + activationInterval + heartbeatInterval:
                return [scheduleTick(now: now)]
            case .idle, .waitingForID, .running, .leaving, .finished:
                break
            }
        }
        guard !holdings.isEmpty else {
            finish(rejection, into: &actions)
            return actions
        }
        stopAll(.leaseLost, renewing: false, into: &actions)
        guard !holdings.isEmpty else {
            finish(rejection, into: &actions)
            return actions
        }
        actions.append(.stopWorkBy(partitions: holdings.keys.sorted(), now))
        state = .leaving(giveUpAt: now + activationInterval, rejection: rejection)
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The partition's work stopped after ``Action/stopWork(partition:reason:)``: it can be given back.
    public mutating func workStopped(partition: Int, now: Instant) -> [Action] {
        guard case .stopping(let token, _, let lease) = holdings[partition] else { return [scheduleTick(now: now)] }
        var actions: [Action] = []
        holdings[partition] = .releasing(token, giveUpAt: lease?.expiry ?? now + activationInterval)
        if case .leaving(_, let rejection?) = state {
            // Refused for good: nothing can be released; the member finishes once every partition has stopped.
            holdings[partition] = nil
            if holdings.isEmpty {
                finish(rejection, into: &actions)
                return actions
            }
        } else {
            send(now: now, into: &actions)
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The partition's work ended by itself: give it back, and take it again only after a rest.
    public mutating func workEnded(partition: Int, now: Instant) -> [Action] {
        guard case .active(let token, let lease) = holdings[partition] else { return workStopped(partition: partition, now: now) }
        holdings[partition] = .stopping(token, .resigned, lease: lease)
        restingUntil[partition] = now + restAfterResigning
        var actions: [Action] = [.emit(.revoked(partition, .resigned))]
        actions += workStopped(partition: partition, now: now)
        return actions
    }

    /// Leave the group: stop every partition's work (the shell reports each with ``workStopped(partition:now:)``),
    /// then release them all and leave in one heartbeat, so the others take over at once.
    public mutating func shutdownRequested(now: Instant) -> [Action] {
        var actions: [Action] = []
        switch state {
        case .idle, .waitingForID:
            finish(nil, into: &actions)
            return actions
        case .running:
            state = .leaving(giveUpAt: now + activationInterval, rejection: nil)
            for partition in prepared.sorted() { actions.append(.emit(.preparationWithdrawn(partition))) }
            prepared = []
            stopAll(.shutdown, renewing: true, into: &actions)
            send(now: now, into: &actions)
        case .leaving, .finished:
            break
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// An operator drained the member: it revokes every partition (``DeactivationReason/drained``), gives each back
    /// once its work has stopped, and until ``resumeRequested(now:)`` reports itself `resting` and acquires none,
    /// while staying in the group.
    public mutating func drainRequested(now: Instant) -> [Action] {
        let first = !drained
        drained = true
        guard first, case .running = state else { return [scheduleTick(now: now)] }
        target = []
        var actions: [Action] = []
        for partition in prepared.sorted() { actions.append(.emit(.preparationWithdrawn(partition))) }
        prepared = []
        for (partition, holding) in holdings.sorted(by: { $0.key < $1.key }) {
            if case .active(let token, let lease) = holding { revoke(partition, token, .drained, keeping: lease, into: &actions) }
        }
        // Resting at once, so the others assign its partitions elsewhere without waiting for the next heartbeat.
        send(now: now, into: &actions)
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// Ends a drain: the member competes again, reporting itself standby at once, and takes its share from the
    /// views that follow.
    public mutating func resumeRequested(now: Instant) -> [Action] {
        guard drained else { return [scheduleTick(now: now)] }
        drained = false
        var actions: [Action] = []
        if case .running = state { send(now: now, into: &actions) }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// Whether a drain holds.
    public var isDrained: Bool { drained }

    // MARK: Decisions

    private mutating func apply(
        _ outcome: PartitionHeartbeatReply.Outcome,
        of operation: PartitionHeartbeat.Operation,
        sentAt: Instant,
        now: Instant,
        confirmed: inout [Int],
        into actions: inout [Action]
    ) {
        let partition = operation.partition
        let holding = holdings[partition]
        switch operation {
        case .acquire:
            guard case .granted(let token) = outcome else { return }
            switch holding {
            case nil:
                let grant = timeline(from: sentAt)
                let stillMine: Bool = if case .running = state { target.contains(partition) } else { false }
                if releasedTokens[partition].map({ token <= $0 }) ?? false || !stillMine || now >= grant.selfFence {
                    // An old lease on its way back, a partition no longer assigned here, or a grant too late to be
                    // vouched for: give it back unused.
                    holdings[partition] = .releasing(token, giveUpAt: grant.expiry)
                    sendWhenAnswered = true
                } else {
                    holdings[partition] = .active(token, grant)
                    prepared.remove(partition)
                    actions.append(.emit(.assigned(partition, token)))
                    actions.append(.startWork(partition: partition, token: token))
                    confirmed.append(partition)
                }
            case .active(let held, var lease) where held == token:
                lease.confirm(sentAt: sentAt)
                holdings[partition] = .active(held, lease)
                confirmed.append(partition)
            case .active, .stopping, .releasing:
                // Being given back, or another lease: the release or the next view settles it.
                break
            }
        case .renew(_, let token):
            switch (holding, outcome) {
            case (.active(let held, var lease), .renewed) where held == token:
                lease.confirm(sentAt: sentAt)
                holdings[partition] = .active(held, lease)
                confirmed.append(partition)
            case (.active(let held, _), .lost) where held == token:
                revoke(partition, held, .leaseLost, keeping: nil, into: &actions)
                actions.append(.stopWorkBy(partitions: [partition], now))
            case (.stopping(let held, let reason, var lease?), .renewed) where held == token:
                lease.confirm(sentAt: sentAt)
                holdings[partition] = .stopping(held, reason, lease: lease)
                confirmed.append(partition)
            case (.stopping(let held, let reason, _), .lost) where held == token:
                holdings[partition] = .stopping(held, reason, lease: nil)
                actions.append(.stopWorkBy(partitions: [partition], now))
            case (nil, _), (.active, _), (.stopping, _), (.releasing, _):
                // A renewal that crossed a revocation or a release: no news.
                break
            }
        case .release(_, let token):
            if case .releasing(let held, _) = holding, held == token, outcome == .released { holdings[partition] = nil }
        }
    }

    /// Acts on the assignment of a fresh view: hand over partitions assigned elsewhere, acquire free ones assigned
    /// here (in the next heartbeat, sent at once unless the store just refused them), and prepare for ones about
    /// to come.
    private mutating func follow(_ view: GroupView, refused: Set<Int>, now: Instant, into actions: inout [Action]) {
        guard case .running = state, let owners = owners(of: view) else { return }
        target = drained ? [] : Set(owners.indices.filter { owners[$0] == member.id })
        for (partition, holding) in holdings.sorted(by: { $0.key < $1.key }) where !target.contains(partition) {
            if case .active(let token, let lease) = holding {
                revoke(partition, token, .rebalanced, keeping: lease, into: &actions)
            }
        }
        var wanted = false
        var soonest: Duration?
        var shouldPrepare: Set<Int> = []
        for partition in target.sorted() where holdings[partition] == nil {
            guard let lease = leases[partition], lease.holder != member.id else {
                if restingUntil[partition] == nil, !refused.contains(partition) { wanted = true }
                continue
            }
            // Held elsewhere: its owner hands it over, or its lease runs out. Ask just after it does.
            soonest = min(soonest ?? lease.remaining, lease.remaining)
            if configuration.group.preparationInterval != nil { shouldPrepare.insert(partition) }
        }
        for partition in shouldPrepare.subtracting(prepared).sorted() { actions.append(.emit(.prepare(partition))) }
        for partition in prepared.subtracting(shouldPrepare).subtracting(holdings.keys).sorted() {
            actions.append(.emit(.preparationWithdrawn(partition)))
        }
        prepared = shouldPrepare.union(prepared.intersection(holdings.keys))
        // Leases the view shows as this member's but that it does not hold (a grant whose answer was lost).
        let stray = view.leases.contains { $0.holder == member.id && holdings[$0.slot] == nil }
        if wanted || stray {
            send(now: now, into: &actions)
        } else if let soonest, soonest < heartbeatInterval {
            nextHeartbeatAt = min(nextHeartbeatAt, now + soonest + .milliseconds(1))
        }
    }

    /// The owner every member assigns each partition from `view` (``PartitionAssignment``): over the members that
    /// compete (not leaving, not cut off from the store), sticky to the owners of valid leases among them. Without
    /// preemption a competing owner keeps every partition it has, so a newcomer takes only partitions that come free.
    public func owners(of view: GroupView) -> [MemberID]? {
        let competing = view.members.filter(\.phase.isEligible)
        guard view.partitioned, view.activeGoal == configuration.partitions, !competing.isEmpty else { return nil }
        var current = [MemberID?](repeating: nil, count: view.activeGoal)
        for lease in view.leases where current.indices.contains(lease.slot) { current[lease.slot] = lease.holder }
        let assignment = PartitionAssignment(
            partitions: view.activeGoal,
            members: competing.map { PartitionAssignment.Member(id: $0.info.id, weight: $0.info.weight) },
            current: current
        )
        guard !configuration.group.preemption else { return assignment.owners }
        let ids = Set(competing.map(\.info.id))
        return assignment.owners.indices.map { partition in
            current[partition].flatMap { ids.contains($0) ? $0 : nil } ?? assignment.owners[partition]
        }
    }

    private mutating func revoke(
        _ partition: Int,
        _ token: FencingToken,
        _ reason: DeactivationReason,
        keeping lease: LeaseTimeline?,
        into actions: inout [Action]
    ) {
        holdings[partition] = .stopping(token, reason, lease: lease)
        actions.append(.emit(.revoked(partition, reason)))
        actions.append(.stopWork(partition: partition, reason: reason))
    }

    private mutating func stopAll(_ reason: DeactivationReason, renewing: Bool, into actions: inout [Action]) {
        for (partition, holding) in holdings.sorted(by: { $0.key < $1.key }) {
            switch holding {
            case .active(let token, let lease):
                revoke(partition, token, reason, keeping: renewing ? lease : nil, into: &actions)
            case .stopping(let token, let reason, let lease):
                holdings[partition] = .stopping(token, reason, lease: renewing ? lease : nil)
            case .releasing:
                if !renewing { holdings[partition] = nil }
            }
        }
    }

    private mutating func finish(_ rejection: HeartbeatRejection?, into actions: inout [Action]) {
        state = .finished
        inFlight = nil
        actions.append(.finish(rejection))
    }

    // MARK: Heartbeats

    private var isInGroup: Bool {
        switch state {
        case .idle, .finished: false
        case .waitingForID, .running, .leaving: true
        }
    }

    private func phase(now: Instant) -> MemberPhase {
        switch state {
        case .leaving, .finished: return .stopping
        case .idle, .waitingForID, .running: break
        }
        if drained || now - lastAnswerAt > activationInterval { return .resting }
        return activePartitions.isEmpty ? .standby : .active
    }

    /// The operations of the next heartbeat: renew what is held, release what has stopped, and acquire the free
    /// partitions the newest view assigns here.
    private func operations() -> [PartitionHeartbeat.Operation] {
        var operations: [PartitionHeartbeat.Operation] = []
        for (partition, holding) in holdings.sorted(by: { $0.key < $1.key }) {
            switch holding {
            case .active(let token, _), .stopping(let token, _, _?): operations.append(.renew(partition, token))
            case .releasing(let token, _): operations.append(.release(partition, token))
            case .stopping(_, _, nil): break
            }
        }
        guard let view else { return operations }
        let running: Bool = if case .running = state { true } else { false }
        for lease in view.leases where lease.holder == member.id && holdings[lease.slot] == nil {
            if !running || !target.contains(lease.slot) { operations.append(.release(lease.slot, lease.token)) }
        }
        guard running else { return operations }
        for partition in target.sorted() where holdings[partition] == nil && restingUntil[partition] == nil {
            if leases[partition] == nil || leases[partition]?.holder == member.id { operations.append(.acquire(partition)) }
        }
        return operations
    }

    private mutating func send(now: Instant, into actions: inout [Action]) {
        guard inFlight == nil else {
            // Sent as soon as the answer comes.
            sendWhenAnswered = true
            return
        }
        sendWhenAnswered = false
        nextHeartbeatAt = now + heartbeatInterval
        let operations = operations()
        for case .release(let partition, let token) in operations {
            releasedTokens[partition] = max(releasedTokens[partition] ?? token, token)
        }
        let leaving: Bool = if case .leaving = state {
            !holdings.values.contains { if case .releasing = $0 { false } else { true } }
        } else {
            false
        }
        let id = RequestID(rawValue: nextRequest)
        nextRequest += 1
        inFlight = Request(id: id, sentAt: now, operations: operations)
        let heartbeat = PartitionHeartbeat(
            group: configuration.name,
            partitions: configuration.partitions,
            activationInterval: activationInterval,
            member: member,
            phase: phase(now: now),
            operations: operations,
            leaving: leaving,
            sentAt: now
        )
        actions.append(.sendHeartbeat(heartbeat, id))
    }

    private func timeline(from sentAt: Instant) -> LeaseTimeline {
        LeaseTimeline(confirmedSentAt: sentAt, configuration: configuration.group)
    }

    private func scheduleTick(now: Instant) -> Action {
        // While a heartbeat is out, the next one goes when it is answered (or given up on), not at its due time.
        var next = inFlight.map { $0.sentAt + activationInterval } ?? nextHeartbeatAt
        for holding in holdings.values {
            switch holding {
            case .active(_, let lease), .stopping(_, _, let lease?): next = min(next, lease.selfFence)
            case .releasing(_, let giveUpAt): next = min(next, giveUpAt)
            case .stopping(_, _, nil): break
            }
        }
        if let soonestRest = restingUntil.values.min() { next = min(next, soonestRest) }
        if case .leaving(let giveUpAt, _) = state { next = min(next, giveUpAt) }
        return .scheduleTick(at: max(next, now))
    }
}
