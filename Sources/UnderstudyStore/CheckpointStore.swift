import UnderstudyCore

/// A store that keeps fenced checkpoints: small named values of a group that only its current active can advance.
///
/// Every backend applies ``CheckpointRule/write(_:token:over:group:now:)`` atomically with reading the group's
/// leases on the store's clock, and passes the checkpoint suite of the conformance kit (`CheckpointConformance`).
public protocol CheckpointStore: Sendable {
    /// The checkpoint as last written, or `nil` if it never was.
    func checkpoint(of group: GroupName, named name: CheckpointName) async throws -> Checkpoint?

    /// Writes `value` if `token` holds a lease of `group` that is valid on the store's clock and no write with a
    /// newer token was accepted. Throws ``CheckpointError/valueTooLarge(_:)`` for a value over
    /// ``Checkpoint/maximumSize``.
    func writeCheckpoint(of group: GroupName, named name: CheckpointName, value: [UInt8], token: FencingToken) async throws -> CheckpointWrite
}
