/// What a member is doing, as it reports in every heartbeat and as `status` shows it.
public enum MemberPhase: String, Hashable, Sendable, CaseIterable {
    /// Waiting; will activate when its turn comes.
    case standby
    /// Next in line and told to get ready (``MemberEvent/prepareToActivate``).
    case preparing
    /// Holds a lease and acts.
    case active
    /// Was told to deactivate and is stopping its work; it keeps its lease until the work has stopped.
    case stopping
    /// Not competing for now: it just gave up its slot (its work ended) and waits before competing again, or it
    /// has not heard from the store for T and so could not learn that a slot is free.
    case resting

    /// Whether a member in this phase competes for a free slot.
    public var isEligible: Bool {
        switch self {
        case .standby, .preparing, .active: true
        case .stopping, .resting: false
        }
    }
}

/// What a member is doing, as it sees itself: while in its group, the ``MemberPhase`` it reports, by the same
/// name; before it joins and once it leaves, states the store never records. Shown by name (`rawValue`) by the
/// status JSON and the HTTP endpoints.
public enum MemberState: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Not started: it has not joined its group yet.
    case idle
    /// See ``MemberPhase/standby``.
    case standby
    /// See ``MemberPhase/preparing``.
    case preparing
    /// See ``MemberPhase/active``.
    case active
    /// See ``MemberPhase/stopping``.
    case stopping
    /// See ``MemberPhase/resting``.
    case resting
    /// Leaving its group: its work has stopped, and it gives its slot back.
    case leaving
    /// Left its group, or refused by the store for good; it takes no further part.
    case finished

    /// The state of a member in its group that reports `phase`.
    public init(_ phase: MemberPhase) {
        switch phase {
        case .standby: self = .standby
        case .preparing: self = .preparing
        case .active: self = .active
        case .stopping: self = .stopping
        case .resting: self = .resting
        }
    }

    public var description: String { rawValue }
}

/// One round trip of a member to the store: its membership heartbeat, and at most one lease operation.
///
/// Every backend applies it atomically, judging time on the store's own clock
/// (see ``GroupLedger/apply(_:now:)`` for the semantics every backend implements).
public struct Heartbeat: Hashable, Sendable {
    /// The lease operation carried by a heartbeat.
    public enum Intent: Hashable, Sendable {
        /// Touch no lease.
        case none
        /// Take a free slot, or confirm the slot this member already holds. Answered with
        /// ``HeartbeatReply/Outcome/granted(_:)`` or ``HeartbeatReply/Outcome/notGranted``.
        case acquire
        /// Extend the lease carrying this token. Answered with `renewed` or `lost`.
        case renew(FencingToken)
        /// Give up the lease carrying this token. The member's work MUST have stopped. Answered with `released`.
        case release(FencingToken)
        /// Leave the group, giving up the lease carrying the token if any. Answered with `left`.
        case leave(releasing: FencingToken?)
    }

    public var group: GroupName
    public var activeGoal: Int
    /// How long the lease and the membership last on the store's clock after this heartbeat (T).
    public var activationInterval: Duration
    public var member: MemberInfo
    public var phase: MemberPhase
    public var intent: Intent
    /// When the member sent this heartbeat, on its own monotonic clock. A store compares it only with the same
    /// incarnation's earlier heartbeats, never with another clock: the time between two of them, as the member
    /// measured it, tells the store whether its own clock stepped (see `PostgresStore`). `nil`: not known.
    public var sentAt: Instant?

    public init(
        group: GroupName,
        activeGoal: Int,
        activationInterval: Duration,
        member: MemberInfo,
        phase: MemberPhase,
        intent: Intent,
        sentAt: Instant? = nil
    ) {
        self.group = group
        self.activeGoal = activeGoal
        self.activationInterval = activationInterval
        self.member = member
        self.phase = phase
        self.intent = intent
        self.sentAt = sentAt
    }
}

/// The store's answer to a ``Heartbeat``: what happened to the lease operation, and the group as it stands.
public struct HeartbeatReply: Hashable, Sendable {
    public enum Outcome: Hashable, Sendable {
        /// The heartbeat carried no lease operation.
        case none
        /// The member holds a slot with this token, valid for T from the moment the store applied the heartbeat.
        case granted(FencingToken)
        /// No slot was free.
        case notGranted
        /// The lease was extended by T.
        case renewed
        /// The lease is no longer this member's: it expired or was taken over.
        case lost
        /// The lease is free (or was no longer held).
        case released
        /// The member is no longer in the group.
        case left
    }

    public var outcome: Outcome
    public var view: GroupView

    public init(outcome: Outcome, view: GroupView) {
        self.outcome = outcome
        self.view = view
    }
}

/// A group as the store sees it at one instant of its own clock. Ages and remaining times are durations on
/// the store's clock, so no member ever compares its clock with another's.
public struct GroupView: Hashable, Sendable {
    public var group: GroupName
    /// The number of slots, or of partitions in a partitioned group.
    public var activeGoal: Int
    /// Whether the group is partitioned: its leases are its partitions (`slot` is the partition), and a member may
    /// hold several.
    public var partitioned: Bool
    /// The last fencing token granted in this group, if any ever was.
    public var lastToken: FencingToken?
    /// The live members, in no particular order.
    public var members: [Member]
    /// The valid leases, in slot order.
    public var leases: [Lease]

    public struct Member: Hashable, Sendable {
        public var info: MemberInfo
        /// Order of joining: smaller joined earlier. A member that left or expired and came back joins anew.
        public var joinSequence: Int64
        public var phase: MemberPhase
        /// Time since its last heartbeat, on the store's clock.
        public var heartbeatAge: Duration

        public init(info: MemberInfo, joinSequence: Int64, phase: MemberPhase, heartbeatAge: Duration) {
            self.info = info
            self.joinSequence = joinSequence
            self.phase = phase
            self.heartbeatAge = heartbeatAge
        }
    }

    public struct Lease: Hashable, Sendable {
        public var slot: Int
        public var holder: MemberID
        public var token: FencingToken
        /// Time until the lease expires, on the store's clock.
        public var remaining: Duration

        public init(slot: Int, holder: MemberID, token: FencingToken, remaining: Duration) {
            self.slot = slot
            self.holder = holder
            self.token = token
            self.remaining = remaining
        }
    }

    public init(
        group: GroupName,
        activeGoal: Int,
        partitioned: Bool = false,
        lastToken: FencingToken?,
        members: [Member],
        leases: [Lease]
    ) {
        self.group = group
        self.activeGoal = activeGoal
        self.partitioned = partitioned
        self.lastToken = lastToken
        self.members = members
        self.leases = leases
    }
}

/// Why a store refused a heartbeat for good; retrying the same heartbeat cannot succeed.
public enum HeartbeatRejection: Error, Hashable, Sendable, CustomStringConvertible {
    /// Another live process already uses this member id in the group.
    case memberIDInUse(MemberID, host: String, pid: Int32)
    /// The group runs with another active goal; all live members must agree.
    case activeGoalMismatch(group: GroupName, stored: Int, requested: Int)
    /// The group is partitioned into another number of partitions, or is partitioned and this member runs it as
    /// a group of slots, or the other way round (`nil`: not partitioned).
    case partitionsMismatch(group: GroupName, stored: Int?, requested: Int?)

    public var description: String {
        switch self {
        case .memberIDInUse(let id, let host, let pid):
            "member id \"\(id)\" is already alive in the group (host \(host), pid \(pid)): "
                + "choose another id or stop that process"
        case .activeGoalMismatch(let group, let stored, let requested):
            "group \"\(group)\" runs with active goal \(stored) but this member asks for \(requested): "
                + "use the same active goal on every member, or stop them all before changing it"
        case .partitionsMismatch(let group, let stored, let requested):
            "group \"\(group)\" " + (stored.map { "has \($0) partitions" } ?? "is not partitioned")
                + " but this member " + (requested.map { "asks for \($0) partitions" } ?? "runs it unpartitioned")
                + ": use the same partitions on every member, or stop them all before changing it"
        }
    }
}
