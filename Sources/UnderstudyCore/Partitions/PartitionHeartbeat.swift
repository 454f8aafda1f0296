/// One round trip of a member of a partitioned group to the store: its membership heartbeat and its lease
/// operations on any number of the group's P partitions, applied atomically on the store's clock.
///
/// Each partition is a lease with its own fencing token, granted, renewed and released by the rules of a slot of
/// a group of slots (``GroupLedger/apply(_:at:)-(PartitionHeartbeat,_)`` has them); one heartbeat carries the
/// operations on all of a member's partitions, so a member makes one round trip per interval whatever P is.
public struct PartitionHeartbeat: Hashable, Sendable {
    /// A lease operation on one partition.
    public enum Operation: Hashable, Sendable, CustomStringConvertible {
        /// Take the partition if it is free, or confirm it if this member holds it. Answered `granted` or
        /// `notGranted`.
        case acquire(Int)
        /// Extend the partition's lease carrying this token. Answered `renewed` or `lost`.
        case renew(Int, FencingToken)
        /// Give the partition back; its work MUST have stopped. Answered `released`.
        case release(Int, FencingToken)

        public var partition: Int {
            switch self {
            case .acquire(let partition), .renew(let partition, _), .release(let partition, _): partition
            }
        }

        public var description: String {
            switch self {
            case .acquire(let partition): "acquire \(partition)"
            case .renew(let partition, let token): "renew \(partition) (token \(token))"
            case .release(let partition, let token): "release \(partition) (token \(token))"
            }
        }
    }

    public var group: GroupName
    /// P: how many partitions the group has; every live member must agree.
    public var partitions: Int
    /// T: how long the leases and the membership last on the store's clock after this heartbeat.
    public var activationInterval: Duration
    public var member: MemberInfo
    public var phase: MemberPhase
    /// Applied in order.
    public var operations: [Operation]
    /// Leave the group once the operations are applied; its leases MUST be released by them.
    public var leaving: Bool
    /// When the member sent it, on its own monotonic clock (see ``Heartbeat/sentAt``).
    public var sentAt: Instant?

    public init(
        group: GroupName,
        partitions: Int,
        activationInterval: Duration,
        member: MemberInfo,
        phase: MemberPhase,
        operations: [Operation],
        leaving: Bool = false,
        sentAt: Instant? = nil
    ) {
        self.group = group
        self.partitions = partitions
        self.activationInterval = activationInterval
        self.member = member
        self.phase = phase
        self.operations = operations
        self.leaving = leaving
        self.sentAt = sentAt
    }
}

/// The store's answer to a ``PartitionHeartbeat``: one outcome per operation, in order, and the group as it
/// stands afterwards (``GroupView/partitioned``, every valid lease by partition).
public struct PartitionHeartbeatReply: Hashable, Sendable {
    public enum Outcome: Hashable, Sendable {
        /// The member holds the partition with this token, valid for T from when the store applied the heartbeat.
        case granted(FencingToken)
        /// Another member holds the partition, or no grant is allowed yet.
        case notGranted
        case renewed
        /// The lease is no longer this member's: it expired or was taken over.
        case lost
        /// The partition is free (or was no longer held by this member).
        case released
    }

    public var outcomes: [Outcome]
    /// The member left the group.
    public var left: Bool
    public var view: GroupView

    public init(outcomes: [Outcome], left: Bool, view: GroupView) {
        self.outcomes = outcomes
        self.left = left
        self.view = view
    }
}
