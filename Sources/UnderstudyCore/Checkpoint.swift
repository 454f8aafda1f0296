/// The name of a group's checkpoint: 1–128 characters of `A-Z a-z 0-9 . _ -`, as a group name.
public struct CheckpointName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Validates `rawValue`; throws ``CheckpointError/invalidName(_:)`` when it is not a valid name.
    public init(_ rawValue: String) throws(CheckpointError) {
        guard Identifier.isValid(rawValue, extra: []) else { throw .invalidName(rawValue) }
        self.rawValue = rawValue
    }

    public static func < (lhs: CheckpointName, rhs: CheckpointName) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { rawValue }
}

/// A small named value of a group (a position, an offset, a short blob) that only the group's current active can
/// advance: every write is a compare-and-set on the writer's fencing token.
public struct Checkpoint: Hashable, Sendable {
    /// The largest value a store accepts (64 KiB): a checkpoint says where work stands, it does not hold the work.
    public static let maximumSize = 64 * 1024

    public let value: [UInt8]
    /// The token of the lease under which it was written.
    public let token: FencingToken
    /// 1 for the first write, one more for every accepted write since.
    public let version: Int64

    public init(value: [UInt8], token: FencingToken, version: Int64) {
        self.value = value
        self.token = token
        self.version = version
    }
}

/// Why a checkpoint write was refused.
public enum CheckpointRejection: Hashable, Sendable, CustomStringConvertible {
    /// No lease of the group holds this token now: it was never granted, or its holder released it, or the slot
    /// went to another member since.
    case notHeld(FencingToken)
    /// A write with a newer token was accepted: this writer is stale.
    case superseded(by: FencingToken)

    public var description: String {
        switch self {
        case .notHeld(let token): "token \(token) holds no valid lease of the group on the store's clock"
        case .superseded(let newer): "a write with the newer token \(newer) was accepted"
        }
    }
}

/// What a checkpoint write did.
public enum CheckpointWrite: Hashable, Sendable {
    case accepted(Checkpoint)
    case rejected(CheckpointRejection)
}

/// The rule every backend applies to a checkpoint write, atomically with reading the group's leases.
public enum CheckpointRule {
    /// Writes `value` under `token` if a lease of `group` holds `token` and is valid at the store instant `now`, and
    /// no write with a newer token was accepted (the same token may write again: the holder advances its position).
    public static func write(_ value: [UInt8], token: FencingToken, over current: Checkpoint?, group: GroupLedger?, now: Instant) -> CheckpointWrite {
        if let current, current.token > token { return .rejected(.superseded(by: current.token)) }
        let held = group?.leases.contains { lease in
            guard let holder = lease.holder else { return false }
            return holder.token == token && holder.expiresAt > now
        } ?? false
        guard held else { return .rejected(.notHeld(token)) }
        return .accepted(Checkpoint(value: value, token: token, version: (current?.version ?? 0) + 1))
    }
}

/// A checkpoint request that cannot be valid.
public enum CheckpointError: Error, Hashable, Sendable, CustomStringConvertible {
    case invalidName(String)
    case valueTooLarge(Int)

    public var description: String {
        switch self {
        case .invalidName(let name): "invalid checkpoint name \"\(name)\": use 1 to 128 characters of A-Z a-z 0-9 . _ -"
        case .valueTooLarge(let size): "checkpoint value of \(size) bytes is larger than the limit of \(Checkpoint.maximumSize) bytes"
        }
    }
}
