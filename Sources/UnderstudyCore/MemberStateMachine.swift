/// The life of one member of one group, as a sans-IO state machine.
///
/// Each method is named after something that happened (a tick of the clock, a store reply, the work stopping)
/// and returns the ``Action``s the shell must carry out, in order. The machine never reads a clock, sleeps or
/// does IO: the runtime drives it with real time and a real store, the simulator with virtual ones.
///
/// An active member keeps its lease on the ``LeaseTimeline`` of its newest confirmed renewal: it fences itself
/// at `s + T − I`, a full heartbeat interval before anyone else can be granted its slot, and
/// ``Action/stopWorkBy(_:)`` and ``Action/leaseValid(until:)`` carry the work deadline `s + T − I/2`.
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
        /// Deliver the event to the application. News only: the cues to act are ``startWork(_:)`` and
        /// ``stopWork(_:)``.
        case emit(MemberEvent)
        /// The member is active: start the work, stamped with this token. Report its end with
        /// ``workEnded(now:)`` if it ends by itself.
        case startWork(FencingToken)
        /// Stop the work (e.g. cancel it, SIGTERM the command) and call ``workStopped(now:)`` once it has stopped;
        /// the slot is given back only then. Not returned by ``workEnded(now:)``: that work has ended already.
        case stopWork(DeactivationReason)
        /// The lease can no longer be vouched for: the work MUST have stopped by this instant, I/2 before the
        /// store may grant the slot to another member as measured on this clock (``LeaseTimeline/workDeadline``).
        /// Escalate (e.g. SIGKILL) if it has not.
        case stopWorkBy(Instant)
        /// The lease is vouched for until this instant (``LeaseTimeline/workDeadline``, the same margin for clock
        /// drift as ``stopWorkBy(_:)``): the work may go on until then even if this process freezes. Returned with
        /// every activation and confirmed renewal, so a watchdog outside the process can kill the work by then.
        case leaseValid(until: Instant)
        /// Call ``tick(now:)`` at this instant (replaces any earlier request).
        case scheduleTick(at: Instant)
        /// The member has left its group (rejection `nil`) or was refused for good; stop driving it.
        case finish(HeartbeatRejection?)
    }

    /// A lease this member holds and acts on.
    private struct Lease: Sendable {
        var token: FencingToken
        var timeline: LeaseTimeline
    }

    /// Whether a standby was told to prepare.
    private enum Preparation: Sendable {
        case none
        /// Told ``MemberEvent/prepareToActivate`` at this instant; withdrawn after ``preparationTimeout``.
        case prepared(since: Instant)
        /// Withdrawn after its timeout: not prepared again until its reason has gone away once.
        case timedOut
    }

    /// What a standby carries while it waits for a slot.
    private struct Candidacy: Sendable {
        var preparation = Preparation.none
        /// Not competing until then (it reports itself ``MemberPhase/resting``): its work ended by itself, or it
        /// was answered too late to use a grant.
        var restingUntil: Instant?
    }

    /// What a stopping member does once its work has stopped.
    private enum AfterStopping: Sendable {
        /// Give the slot back and compete again.
        case release
        /// Give the slot back and leave the group (shutdown was requested).
        case leave
        /// The store refused the member for good: finish with the refusal.
        case finish(HeartbeatRejection)
    }

    /// What a releasing member does once its slot is given back.
    private enum AfterRelease: Sendable {
        /// Wait for a slot again, as this candidacy.
        case standBy(Candidacy)
        case leave
    }

    private enum State: Sendable {
        case idle
        /// The store refused the member's id since `refusedSince`: a process with the id may be alive, or it
        /// died and its row has not expired yet (a restart within T). It keeps asking for up to T + I, by when a
        /// dead process's row has expired; a live one's has not, and the member finishes with the refusal.
        case waitingForID(refusedSince: Instant)
        case standby(Candidacy)
        case active(Lease)
        /// Told to stop its work; waits for ``workStopped(now:)``. `lease` is nil once it can no longer be renewed.
        case stopping(token: FencingToken, reason: DeactivationReason, lease: LeaseTimeline?, then: AfterStopping)
        /// Work stopped; giving the slot back. After `giveUpAt` the lease has expired anyway.
        case releasing(token: FencingToken, giveUpAt: Instant, then: AfterRelease)
        case leaving(releasing: FencingToken?, giveUpAt: Instant)
        case finished
    }

    private struct Request: Hashable, Sendable {
        var sentAt: Instant
        var intent: Heartbeat.Intent
    }

    public let configuration: GroupConfiguration
    public let member: MemberInfo
    /// How long a member whose work ended by itself waits before it competes for a slot again. The shell may
    /// change it between activations (a restart backoff that grows while the work keeps ending).
    public var restAfterResigning: Duration
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
    // Machine-wide: what the store last said and the bookkeeping of heartbeats, whatever the state.
    /// The plan every member derives from the newest store answer.
    private var plan: GroupPlan?
    private var requests: [RequestID: Request] = [:]
    private var nextRequest: UInt64 = 1
    private var newestAnsweredSentAt: Instant?
    private var nextHeartbeatAt: Instant = .zero
    /// The newest token this member sent a release for. A release can still be applied after a later acquire
    /// (calls overtake each other, across states), so a grant of such a token only confirms a lease on its way back.
    private var releasedToken: FencingToken?
    /// When the store last answered anything. A standby that has not heard from it for T reports itself
    /// `resting`, so the others do not wait for it to take a slot it cannot learn is free.
    private var lastAnswerAt: Instant = .zero
    /// An operator asked this member not to compete (``drainRequested(now:)``) until ``resumeRequested(now:)``.
    /// An intent that holds across every state: an active member steps down, and in standby it reports itself
    /// `resting`, so the others neither wait for it nor hand over to it.
    private var drained = false

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

    /// The member's state; in its group, named as the ``MemberPhase`` it reports.
    public var status: MemberState {
        switch state {
        case .idle: .idle
        case .waitingForID, .standby, .active, .stopping, .releasing: MemberState(phase)
        case .leaving: .leaving
        case .finished: .finished
        }
    }

    /// The token the member acts with while ``status`` is ``MemberState/active``; `nil` otherwise.
    public var activeToken: FencingToken? {
        switch state {
        case .active(let lease): lease.token
        case .idle, .waitingForID, .standby, .stopping, .releasing, .leaving, .finished: nil
        }
    }

    /// The phase this member reports in its heartbeats.
    private var phase: MemberPhase {
        switch state {
        case .idle, .waitingForID: .standby
        case .standby(let candidacy):
            if candidacy.restingUntil != nil || drained {
                .resting
            } else if case .prepared = candidacy.preparation {
                .preparing
            } else {
                .standby
            }
        case .active: .active
        case .stopping, .releasing, .leaving, .finished: .stopping
        }
    }

    private var heartbeatInterval: Duration { configuration.heartbeatInterval }
    private var activationInterval: Duration { configuration.activationInterval }

    // MARK: Events

    /// The member joins its group: the first heartbeat goes out at once.
    public mutating func start(now: Instant) -> [Action] {
        guard case .idle = state else { return [scheduleTick(now: now)] }
        state = .standby(Candidacy())
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
        case .active(let lease) where now >= lease.timeline.selfFence:
            deactivate(lease.token, .selfFenced, keeping: nil, into: &actions)
            actions.append(.stopWorkBy(lease.timeline.workDeadline))
        case .stopping(let token, let reason, let lease?, let then) where now >= lease.selfFence:
            state = .stopping(token: token, reason: reason, lease: nil, then: then)
            actions.append(.stopWorkBy(lease.workDeadline))
        case .releasing(_, let giveUpAt, let then) where now >= giveUpAt:
            released(then: then, now: now, into: &actions)
        case .leaving(_, let giveUpAt) where now >= giveUpAt:
            finish(nil, into: &actions)
            return actions
        case .standby(var candidacy):
            if let restingUntil = candidacy.restingUntil, now >= restingUntil { candidacy.restingUntil = nil }
            if case .prepared(let since) = candidacy.preparation, now >= since + preparationTimeout {
                candidacy.preparation = .timedOut
                actions.append(.emit(.prepareWithdrawn))
            }
            state = .standby(candidacy)
        case .idle, .waitingForID, .finished, .active, .stopping, .releasing, .leaving:
            break
        }

        if now >= nextHeartbeatAt, isInGroup {
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
        guard requests.isEmpty else { return [scheduleTick(now: now)] }
        switch state {
        case .standby(let candidacy) where candidacy.restingUntil == nil && !drained && plan?.nextInLine == member.id:
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
        if case .waitingForID = state { state = .standby(Candidacy()) }
        plan = GroupPlan(view: reply.view, preemption: configuration.preemption, preparationInterval: configuration.preparationInterval)

        var actions: [Action] = []
        if case .standby(var candidacy) = state, now >= timeline(from: request.sentAt).selfFence {
            // Answered too late for any grant to be vouched for (a store round trip, or the wait behind the one
            // under way, of T − I or more): the member rests, reporting itself `resting`, so that it neither
            // takes a slot it cannot hold nor outranks, and so preempts, a member that can.
            candidacy.restingUntil = max(candidacy.restingUntil ?? now, now + restAfterResigning)
            withdrawPreparation(of: &candidacy, into: &actions)
            state = .standby(candidacy)
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
        if case .memberIDInUse = rejection {
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
        switch state {
        case .active(let lease):
            deactivate(lease.token, .leaseLost, keeping: nil, then: .finish(rejection), into: &actions)
            actions.append(.stopWorkBy(now))
        case .stopping(let token, let reason, _, _):
            state = .stopping(token: token, reason: reason, lease: nil, then: .finish(rejection))
            actions.append(.stopWorkBy(now))
        case .idle, .waitingForID, .standby, .releasing, .leaving:
            finish(rejection, into: &actions)
            return actions
        case .finished:
            return actions
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The work stopped after a ``Action/stopWork(_:)``: the slot can be given back.
    public mutating func workStopped(now: Instant) -> [Action] {
        guard case .stopping(let token, let reason, let lease, let then) = state else { return [scheduleTick(now: now)] }
        var actions: [Action] = []
        let giveUpAt = lease?.expiry ?? now + activationInterval
        switch then {
        case .finish(let rejection):
            finish(rejection, into: &actions)
            return actions
        case .leave:
            state = .leaving(releasing: token, giveUpAt: giveUpAt)
        case .release:
            let candidacy = Candidacy(restingUntil: reason == .resigned ? now + restAfterResigning : nil)
            state = .releasing(token: token, giveUpAt: giveUpAt, then: .standBy(candidacy))
        }
        sendHeartbeat(now: now, into: &actions)
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// The work ended by itself while active (e.g. the supervised program exited): give the slot back and
    /// rest before competing again, since another member may be healthier.
    public mutating func workEnded(now: Instant) -> [Action] {
        guard case .active(let lease) = state else { return workStopped(now: now) }
        state = .stopping(token: lease.token, reason: .resigned, lease: lease.timeline, then: .release)
        var actions: [Action] = [.emit(.deactivate(.resigned))]
        actions += workStopped(now: now)
        return actions
    }

    /// Leave the group: an active member deactivates (the shell calls ``workStopped(now:)`` when done) and then
    /// releases its slot at once, so a standby takes over without waiting for expiry.
    public mutating func shutdownRequested(now: Instant) -> [Action] {
        var actions: [Action] = []
        switch state {
        case .idle, .waitingForID:
            finish(nil, into: &actions)
            return actions
        case .standby(var candidacy):
            withdrawPreparation(of: &candidacy, into: &actions)
            state = .leaving(releasing: nil, giveUpAt: now + activationInterval)
            sendHeartbeat(now: now, into: &actions)
        case .active(let lease):
            deactivate(lease.token, .shutdown, keeping: lease.timeline, then: .leave, into: &actions)
        case .stopping(let token, let reason, let lease, .release):
            state = .stopping(token: token, reason: reason, lease: lease, then: .leave)
        case .releasing(let token, let giveUpAt, .standBy):
            state = .releasing(token: token, giveUpAt: giveUpAt, then: .leave)
        case .stopping(_, _, _, .leave), .stopping(_, _, _, .finish), .releasing(_, _, .leave), .leaving, .finished:
            // Leaving already, or finishing with a refusal.
            break
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// An operator asks the member to step down and stay standby: an active member deactivates
    /// (``DeactivationReason/drained``) and gives its slot back once its work has stopped; a standby withdraws any
    /// preparation. Until ``resumeRequested(now:)`` the member reports itself `resting` and never acquires.
    public mutating func drainRequested(now: Instant) -> [Action] {
        drained = true
        var actions: [Action] = []
        switch state {
        case .active(let lease):
            deactivate(lease.token, .drained, keeping: lease.timeline, into: &actions)
        case .standby(var candidacy):
            withdrawPreparation(of: &candidacy, into: &actions)
            state = .standby(candidacy)
            sendHeartbeat(now: now, into: &actions)
        case .idle, .waitingForID, .stopping, .releasing, .leaving, .finished:
            break
        }
        actions.append(scheduleTick(now: now))
        return actions
    }

    /// Ends a drain: the member competes again, reporting itself standby at once.
    public mutating func resumeRequested(now: Instant) -> [Action] {
        guard drained else { return [scheduleTick(now: now)] }
        drained = false
        var actions: [Action] = []
        if case .standby = state { sendHeartbeat(now: now, into: &actions) }
        actions.append(scheduleTick(now: now))
        return actions
    }

    // MARK: Decisions

    /// What the answer to `request` means in the current state. Answers to older intents (a renewal that crossed a
    /// release, a grant after shutdown began…) carry no news; the plan and the next heartbeat settle the rest.
    private mutating func apply(_ outcome: HeartbeatReply.Outcome, of request: Request, now: Instant, into actions: inout [Action]) {
        switch state {
        case .standby(var candidacy):
            guard case .granted(let token) = outcome else { return }
            let grant = timeline(from: request.sentAt)
            if candidacy.restingUntil != nil || drained || releasedToken.map({ token <= $0 }) ?? false {
                state = .releasing(token: token, giveUpAt: grant.expiry, then: .standBy(candidacy))
                sendHeartbeat(now: now, into: &actions)
            } else if now >= grant.selfFence {
                // The grant arrived too late to be vouched for (a pause, or a store round trip longer than T − I):
                // the member would fence itself at once. Acquiring again would only extend a lease it cannot use
                // and keep the slot from a member that can, so it gives the slot back and rests, reporting itself
                // `resting` so the others do not wait for it.
                candidacy.restingUntil = now + restAfterResigning
                withdrawPreparation(of: &candidacy, into: &actions)
                state = .releasing(token: token, giveUpAt: grant.expiry, then: .standBy(candidacy))
                sendHeartbeat(now: now, into: &actions)
            } else {
                // What it prepared is used now: an activation ends the preparation without a withdrawal.
                state = .active(Lease(token: token, timeline: grant))
                actions.append(.emit(.activate(token)))
                actions.append(.startWork(token))
                actions.append(.leaseValid(until: grant.workDeadline))
            }
        case .active(var lease):
            switch outcome {
            case .granted(let token) where token == lease.token:
                lease.timeline.confirm(sentAt: request.sentAt)
                state = .active(lease)
                actions.append(.leaseValid(until: lease.timeline.workDeadline))
            case .renewed where request.intent == .renew(lease.token):
                lease.timeline.confirm(sentAt: request.sentAt)
                state = .active(lease)
                actions.append(.leaseValid(until: lease.timeline.workDeadline))
            case .lost where request.intent == .renew(lease.token):
                deactivate(lease.token, .leaseLost, keeping: nil, into: &actions)
                actions.append(.stopWorkBy(now))
            case .none, .granted, .notGranted, .renewed, .lost, .released, .left:
                break
            }
        case .stopping(let token, let reason, var lease?, let then):
            switch outcome {
            case .renewed where request.intent == .renew(token):
                lease.confirm(sentAt: request.sentAt)
                state = .stopping(token: token, reason: reason, lease: lease, then: then)
                actions.append(.leaseValid(until: lease.workDeadline))
            case .lost where request.intent == .renew(token):
                state = .stopping(token: token, reason: reason, lease: nil, then: then)
                actions.append(.stopWorkBy(now))
            case .none, .granted, .notGranted, .renewed, .lost, .released, .left:
                break
            }
        case .releasing(let token, _, let then):
            if case .released = outcome, request.intent == .release(token) {
                released(then: then, now: now, into: &actions)
            }
        case .leaving(let releasing, let giveUpAt):
            switch outcome {
            case .granted(let token) where releasing == nil:
                // Granted to an acquire sent before shutdown began, and never used: give it back when leaving.
                state = .leaving(releasing: token, giveUpAt: giveUpAt)
                sendHeartbeat(now: now, into: &actions)
            case .left:
                finish(nil, into: &actions)
            case .none, .granted, .notGranted, .renewed, .lost, .released:
                break
            }
        case .idle, .waitingForID, .stopping(_, _, nil, _), .finished:
            break
        }
    }

    private mutating func followPlan(view: GroupView, now: Instant, into actions: inout [Action]) {
        guard let plan else { return }
        switch state {
        case .active(let lease) where plan.yielders.contains(member.id):
            deactivate(lease.token, .preempted, keeping: lease.timeline, into: &actions)
        case .standby(var candidacy):
            let shouldPrepare = plan.successors.contains(member.id) || plan.preparers.contains(member.id)
            if shouldPrepare, case .none = candidacy.preparation, candidacy.restingUntil == nil, !drained {
                candidacy.preparation = .prepared(since: now)
                actions.append(.emit(.prepareToActivate))
            } else if !shouldPrepare, !plan.acquirers.contains(member.id) {
                // An acquirer keeps what it prepared: it is about to activate.
                withdrawPreparation(of: &candidacy, into: &actions)
                candidacy.preparation = .none
            }
            state = .standby(candidacy)
            let acquiring = requests.values.contains { $0.intent == .acquire }
            if case .acquire = standbyIntent(candidacy), plan.acquirers.contains(member.id), !acquiring {
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

    /// The active member stops acting: the application hears why, the shell stops the work. `lease` is the
    /// timeline it keeps renewing while the work stops, `nil` when the lease can no longer be renewed.
    private mutating func deactivate(
        _ token: FencingToken,
        _ reason: DeactivationReason,
        keeping lease: LeaseTimeline?,
        then: AfterStopping = .release,
        into actions: inout [Action]
    ) {
        state = .stopping(token: token, reason: reason, lease: lease, then: then)
        actions.append(.emit(.deactivate(reason)))
        actions.append(.stopWork(reason))
    }

    /// The slot was given back (or its lease has expired anyway).
    private mutating func released(then: AfterRelease, now: Instant, into actions: inout [Action]) {
        switch then {
        case .standBy(let candidacy): state = .standby(candidacy)
        case .leave: state = .leaving(releasing: nil, giveUpAt: now + activationInterval)
        }
        sendHeartbeat(now: now, into: &actions)
    }

    private func withdrawPreparation(of candidacy: inout Candidacy, into actions: inout [Action]) {
        if case .prepared = candidacy.preparation {
            candidacy.preparation = .none
            actions.append(.emit(.prepareWithdrawn))
        }
    }

    private mutating func finish(_ rejection: HeartbeatRejection?, into actions: inout [Action]) {
        state = .finished
        requests = [:]
        actions.append(.finish(rejection))
    }

    // MARK: Heartbeats

    private var isInGroup: Bool {
        switch state {
        case .idle, .finished: false
        case .waitingForID, .standby, .active, .stopping, .releasing, .leaving: true
        }
    }

    private func standbyIntent(_ candidacy: Candidacy) -> Heartbeat.Intent {
        guard let plan, candidacy.restingUntil == nil, !drained else { return .none }
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
        case .standby(let candidacy): standbyIntent(candidacy)
        case .active(let lease): .renew(lease.token)
        case .stopping(let token, _, let lease, _): lease == nil ? .none : .renew(token)
        case .releasing(let token, _, _): .release(token)
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

    /// The timeline of a lease granted or renewed by a heartbeat sent at `sentAt`.
    private func timeline(from sentAt: Instant) -> LeaseTimeline {
        LeaseTimeline(confirmedSentAt: sentAt, configuration: configuration)
    }

    private func scheduleTick(now: Instant) -> Action {
        var next = nextHeartbeatAt
        switch state {
        case .active(let lease):
            next = min(next, lease.timeline.selfFence)
        case .stopping(_, _, let lease?, _):
            next = min(next, lease.selfFence)
        case .releasing(_, let giveUpAt, _), .leaving(_, let giveUpAt):
            next = min(next, giveUpAt)
        case .standby(let candidacy):
            if case .prepared(let since) = candidacy.preparation { next = min(next, since + preparationTimeout) }
            if let restingUntil = candidacy.restingUntil { next = min(next, restingUntil) }
        case .idle, .waitingForID, .stopping, .finished:
            break
        }
        return .scheduleTick(at: max(next, now))
    }
}
