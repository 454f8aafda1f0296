/// The life of one member of one group, as a sans-IO state machine.
///
/// Each method is named after something that happened (a tick of the clock, a store reply, the work stopping)
/// and returns the ``Action``s the shell must carry out, in order. The machine never reads a clock, sleeps or
/// does IO: the runtime drives it with real time and a real store, the simulator with virtual ones.
///
/// Timeline of an active member (local monotonic clock, `s` = when the last confirmed renewal was *sent*):
/// ```
/// s            s+I          s+T−I       s+T−I/2   s+T
/// |--renew-----|--renew-----|  self-fence |  killed |  the store may grant the slot to another
/// ```
/// The store's lease runs T from when it *applied* the renewal, which is after `s`; so an active that hears
/// nothing deactivates itself at `s + T − I`, a full heartbeat interval before anyone else can be granted its
/// slot (hpcpack step 5a), and ``Action/stopWorkBy(_:)`` tells the shell the hard deadline `s + T − I/2`. The
/// last I/2 absorbs the rate difference between this member's clock and the store's: up to I/(2·T), e.g. 16%
/// with I = 1 s and T = 3 s, since T measured on a slow clock lasts longer than T on the store's.
public struct MemberStateMachine: Sendable {
    /// Identifies one heartbeat so its reply can be matched.
    public struct RequestID: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt64
        public var description: String { "#\(rawValue)" }
    }

    public enum Action: Hashable, Sendable {
        /// Send the heartbeat to the store; report the answer with ``heartbeatReplied(_:to:now:)``,
        /// ``heartbeatFailed(_:now:)`` or ``heartbeatRejected(_:_:now:)``.
        case sendHeartbeat(Heartbeat, RequestID)
        /// Deliver the event to the application. After a ``MemberEvent/deactivate(_:)``, call
        /// ``workStopped(now:)`` once the work has stopped.
        case emit(MemberEvent)
        /// The lease can no longer be vouched for: the work MUST have stopped by this instant, I/2 before the
        /// store may grant the slot to another member as measured on this clock. Escalate (e.g. SIGKILL) if it
        /// has not.
        case stopWorkBy(Instant)
        /// The lease is vouched for until this instant (the send time of the newest confirmed renewal plus
        /// T − I/2, the same margin for clock drift as ``stopWorkBy(_:)``):
        /// the work may go on until then even if this process freezes. Emitted with every activation and
        /// confirmed renewal, so a watchdog outside the process can kill the work by this instant.
        case leaseValid(until: Instant)
        /// Call ``tick(now:)`` at this instant (replaces any earlier request).
        case scheduleTick(at: Instant)
        /// The member has left its group (rejection `nil`) or was refused for good; stop driving it.
        case finish(HeartbeatRejection?)
    }

    /// The member's state, as a shell or test may observe it.
    public enum Status: Hashable, Sendable {
        case idle
        case standby
        case active(FencingToken)
        case stopping
        case leaving
        case finished
    }

    private struct Lease: Hashable, Sendable {
        var token: FencingToken
        /// When the newest confirmed renewal (or the grant) was sent, on the local clock.
        var confirmedSentAt: Instant
    }

    private enum State: Hashable, Sendable {
        case idle
        /// The store refused the member's id since `refusedSince`: a process with the id may be alive, or it
        /// died and its row has not expired yet (a restart within T). It keeps asking for up to T + I, by when a
        /// dead process's row has expired; a live one's has not, and the member finishes with the refusal.
        case waitingForID(refusedSince: Instant)
        case standby
        case active(Lease)
        /// Told to deactivate; waits for ``workStopped(now:)``. `lease` is nil once it can no longer be renewed.
        case stopping(token: FencingToken, reason: DeactivationReason, lease: Lease?)
        /// Work stopped; giving the slot back. After `giveUpAt` the lease has expired anyway.
        case releasing(token: FencingToken, giveUpAt: Instant)
        case leaving(releasing: FencingToken?, giveUpAt: Instant)
        case finished
    }

    private struct Request: Hashable, Sendable {
        var sentAt: Instant
        var intent: Heartbeat.Intent
    }

    public let configuration: GroupConfiguration
    public let member: MemberInfo
    /// How long a member whose work ended by itself waits before it competes for a slot again.
    public let restAfterResigning: Duration
    /// How long a ``MemberEvent/prepareToActivate`` stands without an activation before it is withdrawn.
    public let preparationTimeout: Duration
    /// Where periodic heartbeats fall: at the instants `heartbeatPhase + k·I`, or, when `nil`, one interval
    /// after the previous heartbeat. Members of one process that share a phase fall due together, so a store that
    /// batches sends their heartbeats in one round trip; a heartbeat sent between two of these instants (to
    /// acquire a freed slot, to release one) makes the next periodic one come early, never late.
    public let heartbeatPhase: Duration?
    /// At most this many heartbeats wait for an answer at once; more are not sent while the store is slow.
    public static let maximumRequestsInFlight = 4

    private var state: State = .idle
    private var plan: GroupPlan?
    private var requests: [RequestID: Request] = [:]
    private var nextRequest: UInt64 = 1
    private var newestAnsweredSentAt: Instant?
    private var nextHeartbeatAt: Instant = .zero
    private var preparedAt: Instant?
    private var preparationSuppressed = false
    private var restingUntil: Instant?
    private var shutdownRequested = false
    private var rejection: HeartbeatRejection?
    /// The newest token this member sent a release for. A release can still be applied after a later acquire
    /// (calls overtake each other), so a grant of such a token only confirms a lease on its way back.
    private var releasedToken: FencingToken?
    /// When the store last answered anything. A standby that has not heard from it for T reports itself
    /// `resting`, so the others do not wait for it to take a slot it cannot learn is free.
    private var lastAnswerAt: Instant = .zero

    public init(
        configuration: GroupConfiguration,
        member: MemberInfo,
        restAfterResigning: Duration? = nil,
        heartbeatPhase: Duration? = nil
    ) {
        self.configuration = configuration
        self.member = member
        self.heartbeatPhase = heartbeatPhase
        self.restAfterResigning = restAfterResigning ?? configuration.activationInterval
        self.preparationTimeout = configuration.activationInterval * 2
    }

    public var status: Status {
        switch state {
        case .idle: .idle
        case .waitingForID, .standby: .standby
        case .active(let lease): .active(lease.token)
        case .stopping, .releasing: .stopping
        case .leaving: .leaving
        case .finished: .finished
        }
    }

    /// The group as of the newest store answer, with the plan every member derives from it.
    public var lastPlan: GroupPlan? { plan }

    /// The phase this member reports in its heartbeats.
    public var phase: MemberPhase {
        switch state {
        case .idle, .waitingForID, .standby:
            if restingUntil != nil { return .resting }
            return preparedAt == nil ? .standby : .preparing
        case .active: return .active
        case .stopping, .releasing, .leaving, .finished: return .stopping
        }
    }

    private var heartbeatInterval: Duration { configuration.heartbeatInterval }
    private var activationInterval: Duration { configuration.activationInterval }

    // MARK: Events

    /// The member joins its group: the first heartbeat goes out at once.
    public mutating func start(now: Instant) -> [Action] {
        guard case .idle = state else { return [scheduleTick(now: now)] }
        state = .standby
        lastAnswerAt = now
        var actions: [Action] = []
        sendHeartbeat(now: now, into: &actions)
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// Time has passed: check deadlines and send the periodic heartbeat when it is due.
    public mutating func tick(now: Instant) -> [Action] {
        var actions: [Action] = []
        requests = requests.filter { $0.value.sentAt + activationInterval > now }

        switch state {
        case .active(let lease) where now >= selfFenceInstant(lease):
            state = .stopping(token: lease.token, reason: .selfFenced, lease: nil)
            actions.append(.emit(.deactivate(.selfFenced)))
            actions.append(.stopWorkBy(workDeadline(lease)))
        case .stopping(let token, let reason, let lease?) where now >= selfFenceInstant(lease):
            state = .stopping(token: token, reason: reason, lease: nil)
            actions.append(.stopWorkBy(workDeadline(lease)))
        case .releasing(_, let giveUpAt) where now >= giveUpAt:
            becomeStandbyOrLeave(now: now, into: &actions)
        case .leaving(_, let giveUpAt) where now >= giveUpAt:
            finish(into: &actions)
            return actions
        case .standby:
            if let restingUntil, now >= restingUntil { self.restingUntil = nil }
            if let preparedAt, now >= preparedAt + preparationTimeout {
                self.preparedAt = nil
                preparationSuppressed = true
                actions.append(.emit(.prepareWithdrawn))
            }
        case .idle, .waitingForID, .finished, .active, .stopping, .releasing, .leaving:
            break
        }

        if now >= nextHeartbeatAt, state != .idle, state != .finished {
            sendHeartbeat(now: now, into: &actions)
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The store announced that a slot of this group was released or a member joined it. A standby next in line
    /// heartbeats now rather than at its next interval, and acquires at once if the fresh view makes it an
    /// acquirer; an active renews now, and hands over at once if the fresh view shows a member that outranks it.
    /// Only a hint; polling stays the safety net.
    public mutating func changeAnnounced(now: Instant) -> [Action] {
        var actions: [Action] = []
        guard requests.isEmpty, !shutdownRequested else { return [scheduleTick(now: now)] }
        switch state {
        case .standby where restingUntil == nil && plan?.nextInLine == member.id:
            sendHeartbeat(now: now, into: &actions)
        case .active:
            sendHeartbeat(now: now, into: &actions)
        case .idle, .waitingForID, .standby, .stopping, .releasing, .leaving, .finished:
            break
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The store answered heartbeat `id`.
    public mutating func heartbeatReplied(_ reply: HeartbeatReply, to id: RequestID, now: Instant) -> [Action] {
        guard let request = requests.removeValue(forKey: id) else { return [scheduleTick(now: now)] }
        lastAnswerAt = now
        if let newestAnsweredSentAt, request.sentAt < newestAnsweredSentAt {
            // Overtaken by a newer answer; a grant dropped here is confirmed by the next `acquire`.
            return [scheduleTick(now: now)]
        }
        newestAnsweredSentAt = request.sentAt
        if case .waitingForID = state { state = .standby }
        plan = GroupPlan(view: reply.view, preemption: configuration.preemption, preparationInterval: configuration.preparationInterval)

        var actions: [Action] = []
        if case .standby = state, now >= request.sentAt + (activationInterval - heartbeatInterval) {
            // Answered too late for any grant to be vouched for (a store round trip, or the wait behind the one
            // under way, of T − I or more): the member rests, reporting itself `resting`, so that it neither
            // takes a slot it cannot hold nor outranks, and so preempts, a member that can.
            restingUntil = max(restingUntil ?? now, now + restAfterResigning)
            withdrawPreparation(into: &actions)
        }
        apply(reply.outcome, of: request, now: now, into: &actions)
        followPlan(view: reply.view, now: now, into: &actions)
        if case .finished = state { return actions }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// Heartbeat `id` failed (store unreachable, timeout, busy). The member retries at the next heartbeat; an
    /// active one fences itself if this goes on for T − I.
    public mutating func heartbeatFailed(_ id: RequestID, now: Instant) -> [Action] {
        requests[id] = nil
        return [scheduleTick(now: now)]
    }

    /// The store refused heartbeat `id` for good (see ``HeartbeatRejection``). The member stops its work if
    /// any and finishes with the rejection.
    public mutating func heartbeatRejected(_ id: RequestID, _ rejection: HeartbeatRejection, now: Instant) -> [Action] {
        guard requests.removeValue(forKey: id) != nil else { return [scheduleTick(now: now)] }
        var actions: [Action] = []
        if case .memberIDInUse = rejection, !shutdownRequested {
            switch state {
            case .standby where plan == nil:
                state = .waitingForID(refusedSince: now)
                return [scheduleTick(now: now)]
            case .waitingForID(let since) where now < since + activationInterval + heartbeatInterval:
                return [scheduleTick(now: now)]
            case .idle, .waitingForID, .standby, .active, .stopping, .releasing, .leaving, .finished:
                break
            }
        }
        self.rejection = rejection
        switch state {
        case .active(let lease):
            state = .stopping(token: lease.token, reason: .leaseLost, lease: nil)
            actions.append(.emit(.deactivate(.leaseLost)))
            actions.append(.stopWorkBy(now))
        case .stopping(let token, let reason, _):
            state = .stopping(token: token, reason: reason, lease: nil)
            actions.append(.stopWorkBy(now))
        case .idle, .waitingForID, .standby, .releasing, .leaving:
            finish(into: &actions)
            return actions
        case .finished:
            return actions
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The work stopped after a ``MemberEvent/deactivate(_:)``: the slot can be given back.
    public mutating func workStopped(now: Instant) -> [Action] {
        guard case .stopping(let token, let reason, let lease) = state else { return [scheduleTick(now: now)] }
        var actions: [Action] = []
        if rejection != nil {
            finish(into: &actions)
            return actions
        }
        if reason == .resigned { restingUntil = now + restAfterResigning }
        let giveUpAt = (lease?.confirmedSentAt ?? now) + activationInterval
        if shutdownRequested {
            state = .leaving(releasing: token, giveUpAt: giveUpAt)
        } else {
            state = .releasing(token: token, giveUpAt: giveUpAt)
        }
        sendHeartbeat(now: now, into: &actions)
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The work ended by itself while active (e.g. the supervised program exited): give the slot back and
    /// rest before competing again, since another member may be healthier.
    public mutating func workEnded(now: Instant) -> [Action] {
        guard case .active(let lease) = state else { return workStopped(now: now) }
        state = .stopping(token: lease.token, reason: .resigned, lease: lease)
        var actions: [Action] = [.emit(.deactivate(.resigned))]
        actions += workStopped(now: now)
        return actions
    }

    /// Leave the group: an active member deactivates (the shell calls ``workStopped(now:)`` when done) and then
    /// releases its slot at once, so a standby takes over without waiting for expiry.
    public mutating func shutdownRequested(now: Instant) -> [Action] {
        guard !shutdownRequested else { return [scheduleTick(now: now)] }
        shutdownRequested = true
        var actions: [Action] = []
        switch state {
        case .idle, .waitingForID:
            finish(into: &actions)
            return actions
        case .standby:
            withdrawPreparation(into: &actions)
            state = .leaving(releasing: nil, giveUpAt: now + activationInterval)
            sendHeartbeat(now: now, into: &actions)
        case .active(let lease):
            state = .stopping(token: lease.token, reason: .shutdown, lease: lease)
            actions.append(.emit(.deactivate(.shutdown)))
        case .stopping, .releasing, .leaving, .finished:
            break
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    // MARK: Decisions

    private mutating func apply(_ outcome: HeartbeatReply.Outcome, of request: Request, now: Instant, into actions: inout [Action]) {
        switch (outcome, state) {
        case (.granted(let token), .standby):
            if shutdownRequested || restingUntil != nil || releasedToken.map({ token <= $0 }) ?? false {
                state = .releasing(token: token, giveUpAt: request.sentAt + activationInterval)
                sendHeartbeat(now: now, into: &actions)
            } else if now >= request.sentAt + (activationInterval - heartbeatInterval) {
                // The grant arrived too late to be vouched for (a pause, or a store round trip longer than T − I):
                // the member would fence itself at once. Acquiring again would only extend a lease it cannot use
                // and keep the slot from a member that can, so it gives the slot back and rests, reporting itself
                // `resting` so the others do not wait for it.
                restingUntil = now + restAfterResigning
                withdrawPreparation(into: &actions)
                state = .releasing(token: token, giveUpAt: request.sentAt + activationInterval)
                sendHeartbeat(now: now, into: &actions)
            } else {
                preparedAt = nil
                preparationSuppressed = false
                let lease = Lease(token: token, confirmedSentAt: request.sentAt)
                state = .active(lease)
                actions.append(.emit(.activate(token)))
                actions.append(.leaseValid(until: workDeadline(lease)))
            }
        case (.granted(let token), .active(var lease)) where lease.token == token:
            lease.confirmedSentAt = max(lease.confirmedSentAt, request.sentAt)
            state = .active(lease)
            actions.append(.leaseValid(until: workDeadline(lease)))
        case (.renewed, .active(var lease)) where request.intent == .renew(lease.token):
            lease.confirmedSentAt = max(lease.confirmedSentAt, request.sentAt)
            state = .active(lease)
            actions.append(.leaseValid(until: workDeadline(lease)))
        case (.renewed, .stopping(let token, let reason, var lease?)) where request.intent == .renew(token):
            lease.confirmedSentAt = max(lease.confirmedSentAt, request.sentAt)
            state = .stopping(token: token, reason: reason, lease: lease)
            actions.append(.leaseValid(until: workDeadline(lease)))
        case (.lost, .active(let lease)) where request.intent == .renew(lease.token):
            state = .stopping(token: lease.token, reason: .leaseLost, lease: nil)
            actions.append(.emit(.deactivate(.leaseLost)))
            actions.append(.stopWorkBy(now))
        case (.lost, .stopping(let token, let reason, .some)) where request.intent == .renew(token):
            state = .stopping(token: token, reason: reason, lease: nil)
            actions.append(.stopWorkBy(now))
        case (.released, .releasing(let token, _)) where request.intent == .release(token):
            becomeStandbyOrLeave(now: now, into: &actions)
        case (.granted(let token), .leaving(nil, let giveUpAt)):
            // Granted to an acquire sent before shutdown began, and never used: give it back when leaving.
            state = .leaving(releasing: token, giveUpAt: giveUpAt)
            sendHeartbeat(now: now, into: &actions)
        case (.left, .leaving):
            finish(into: &actions)
        default:
            // Answers to older intents (a renewal that crossed a release, a grant after shutdown began…) carry
            // no news; the plan below and the next heartbeat settle the rest.
            break
        }
    }

    private mutating func followPlan(view: GroupView, now: Instant, into actions: inout [Action]) {
        guard let plan else { return }
        switch state {
        case .active(let lease) where plan.yielders.contains(member.id):
            state = .stopping(token: lease.token, reason: .preempted, lease: lease)
            actions.append(.emit(.deactivate(.preempted)))
        case .standby:
            let shouldPrepare = plan.successors.contains(member.id) || plan.preparers.contains(member.id)
            if shouldPrepare, preparedAt == nil, !preparationSuppressed, restingUntil == nil, !shutdownRequested {
                preparedAt = now
                actions.append(.emit(.prepareToActivate))
            } else if !shouldPrepare, !plan.acquirers.contains(member.id) {
                // An acquirer keeps what it prepared: it is about to activate.
                preparationSuppressed = false
                withdrawPreparation(into: &actions)
            }
            let acquiring = requests.values.contains { $0.intent == .acquire }
            if case .acquire = standbyIntent, plan.acquirers.contains(member.id), !acquiring {
                // A slot is free now: ask for it at once rather than at the next heartbeat.
                sendHeartbeat(now: now, into: &actions)
            } else if plan.nextInLine == member.id, let soonest = view.leases.map(\.remaining).min(), soonest < heartbeatInterval {
                // The next slot frees up before the next heartbeat: ask for it just after.
                nextHeartbeatAt = min(nextHeartbeatAt, now + soonest + .milliseconds(1))
            }
        case .idle, .waitingForID, .active, .stopping, .releasing, .leaving, .finished:
            break
        }
    }

    private mutating func becomeStandbyOrLeave(now: Instant, into actions: inout [Action]) {
        if shutdownRequested {
            state = .leaving(releasing: nil, giveUpAt: now + activationInterval)
        } else {
            state = .standby
        }
        sendHeartbeat(now: now, into: &actions)
    }

    private mutating func withdrawPreparation(into actions: inout [Action]) {
        if preparedAt != nil {
            preparedAt = nil
            actions.append(.emit(.prepareWithdrawn))
        }
    }

    private mutating func finish(into actions: inout [Action]) {
        state = .finished
        requests = [:]
        actions.append(.finish(rejection))
    }

    // MARK: Heartbeats

    private var standbyIntent: Heartbeat.Intent {
        guard let plan, !shutdownRequested, restingUntil == nil else { return .none }
        // A slot the store says is ours (a grant whose answer was lost) is confirmed by acquiring it again.
        // Only a fresh view makes an acquirer: acquiring on a stale one would take a slot freed for a better-ranked
        // member this one has not seen yet (a handover to a successor that just joined).
        if plan.leases[member.id] != nil || plan.acquirers.contains(member.id) {
            return .acquire
        }
        return .none
    }

    private var intent: Heartbeat.Intent {
        switch state {
        case .idle, .waitingForID, .finished: .none
        case .standby: standbyIntent
        case .active(let lease): .renew(lease.token)
        case .stopping(let token, _, let lease): lease == nil ? .none : .renew(token)
        case .releasing(let token, _): .release(token)
        case .leaving(let token, _): .leave(releasing: token)
        }
    }

    private mutating func sendHeartbeat(now: Instant, into actions: inout [Action]) {
        nextHeartbeatAt = periodicHeartbeat(after: now)
        guard requests.count < Self.maximumRequestsInFlight else { return }
        let id = RequestID(rawValue: nextRequest)
        nextRequest += 1
        let intent = intent
        if case .release(let token) = intent { releasedToken = max(releasedToken ?? token, token) }
        if case .leave(let token?) = intent { releasedToken = max(releasedToken ?? token, token) }
        requests[id] = Request(sentAt: now, intent: intent)
        let heartbeat = Heartbeat(
            group: configuration.name,
            activeGoal: configuration.activeGoal,
            activationInterval: activationInterval,
            member: member,
            phase: phase == .standby && now - lastAnswerAt > activationInterval ? .resting : phase,
            intent: intent,
            sentAt: now
        )
        actions.append(.sendHeartbeat(heartbeat, id))
    }

    /// The first instant of the heartbeat grid after `now`: at most one interval away.
    private func periodicHeartbeat(after now: Instant) -> Instant {
        let interval = heartbeatInterval.nanoseconds
        guard let heartbeatPhase, interval > 0 else { return now + heartbeatInterval }
        let sinceGridPoint = ((now.nanoseconds &- heartbeatPhase.nanoseconds) % interval + interval) % interval
        return now + .nanoseconds(interval - sinceGridPoint)
    }

    private func selfFenceInstant(_ lease: Lease) -> Instant {
        lease.confirmedSentAt + (activationInterval - heartbeatInterval)
    }

    /// When the work must have stopped at the latest: I/2 before the lease can expire on the store's clock, so a
    /// member clock up to I/(2·T) slower than the store's still kills the work before the slot can be regranted.
    private func workDeadline(_ lease: Lease) -> Instant {
        lease.confirmedSentAt + (activationInterval - heartbeatInterval / 2)
    }

    private func scheduleTick(now: Instant) -> Action {
        var next = nextHeartbeatAt
        switch state {
        case .active(let lease), .stopping(_, _, let lease?):
            next = min(next, selfFenceInstant(lease))
        case .releasing(_, let giveUpAt), .leaving(_, let giveUpAt):
            next = min(next, giveUpAt)
        case .standby:
            if let preparedAt { next = min(next, preparedAt + preparationTimeout) }
            if let restingUntil { next = min(next, restingUntil) }
        case .idle, .waitingForID, .stopping, .finished:
            break
        }
        return .scheduleTick(at: max(next, now))
    }
}
