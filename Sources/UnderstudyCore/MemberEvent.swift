/// What a member is told, in order.
public enum MemberEvent: Hashable, Sendable, CustomStringConvertible {
    /// A hint: this member is next in line and an active looks unhealthy, or a preemption in its favour is
    /// coming. Open connections or warm caches now, so activation is quick. Withdrawn by ``prepareWithdrawn`` if
    /// no activation follows within two activation intervals or the reason goes away.
    case prepareToActivate
    /// The last ``prepareToActivate`` no longer holds; release what was prepared.
    case prepareWithdrawn
    /// This member holds a lease: act, and stamp work with the token so downstream can reject older ones.
    case activate(FencingToken)
    /// Stop acting now. Until the runtime is told the work has stopped, the member keeps its lease (when it
    /// still can) and no other member can take the slot.
    case deactivate(DeactivationReason)

    public var description: String {
        switch self {
        case .prepareToActivate: "prepare-to-activate"
        case .prepareWithdrawn: "prepare-withdrawn"
        case .activate(let token): "activate(token \(token))"
        case .deactivate(let reason): "deactivate(\(reason))"
        }
    }
}

/// Why an active member deactivates.
public enum DeactivationReason: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A member of strictly higher weight takes over through an orderly handover.
    case preempted
    /// The store says the lease is no longer this member's.
    case leaseLost = "lease-lost"
    /// No renewal was confirmed within T − I of being sent: the member fences itself before the store could
    /// grant its slot to another.
    case selfFenced = "self-fenced"
    /// The work ended by itself (for example the supervised program exited).
    case resigned
    /// The member is shutting down and hands its slot over at once.
    case shutdown
    /// The partition moves to another member (``PartitionAssignment``), through an orderly handover.
    case rebalanced
    /// An operator drained the member: it hands its slot over at once and stays standby until resumed.
    case drained

    public var description: String { rawValue }
}
