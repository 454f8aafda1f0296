import UnderstudyCore

/// A store of partitioned groups: it applies a member's lease operations on all its partitions in one round trip.
///
/// Every backend implements the semantics of ``GroupLedger/apply(_:at:)-(PartitionHeartbeat,_)`` exactly, on its
/// own clock and under the same rules (token counter and floor, record completeness) as ``LeaseStore``, and passes
/// ``PartitionLeaseConformance`` of the conformance kit. It announces a join or a release through
/// ``ChangeAnnouncing`` like a group of slots, and ``GroupDirectory`` reads a partitioned group as a
/// ``GroupView`` whose leases are its partitions.
public protocol PartitionLeaseStore: Sendable {
    /// Applies one partition heartbeat atomically and returns one outcome per operation and the group afterwards.
    func heartbeat(_ heartbeat: PartitionHeartbeat) async throws -> PartitionHeartbeatReply
}
