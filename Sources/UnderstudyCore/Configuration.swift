/// The name of a fault-tolerance group: 1–128 characters of `A-Z a-z 0-9 . _ -`.
public struct GroupName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Validates `rawValue`; throws ``ConfigurationError/invalidGroupName(_:)`` when it is empty, too long or
    /// holds a character outside `A-Z a-z 0-9 . _ -`.
    public init(_ rawValue: String) throws(ConfigurationError) {
        guard Identifier.isValid(rawValue, extra: []) else { throw .invalidGroupName(rawValue) }
        self.rawValue = rawValue
    }

    public static func < (lhs: GroupName, rhs: GroupName) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { rawValue }
}

/// The identity of a member within its group: 1–128 characters of `A-Z a-z 0-9 . _ - : @`.
///
/// Two live processes must never use the same id in one group; the store rejects the second one.
public struct MemberID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Validates `rawValue`; throws ``ConfigurationError/invalidMemberID(_:)`` when it is not a valid id.
    public init(_ rawValue: String) throws(ConfigurationError) {
        guard Identifier.isValid(rawValue, extra: [":", "@"]) else { throw .invalidMemberID(rawValue) }
        self.rawValue = rawValue
    }

    public static func < (lhs: MemberID, rhs: MemberID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { rawValue }
}

enum Identifier {
    static func isValid(_ text: String, extra: Set<Character>) -> Bool {
        guard (1...128).contains(text.count) else { return false }
        return text.allSatisfy { character in
            guard character.isASCII else { return false }
            return character.isLetter || character.isNumber || character == "." || character == "_"
                || character == "-" || extra.contains(character)
        }
    }
}

/// A strictly increasing per-group counter: every activation ever granted in a group carries a larger token
/// than the one before. Downstream systems keep the largest token they have seen and reject older ones.
///
/// Tokens are not consecutive: a grant takes the next value of the group's counter, or the store's wall clock in
/// microseconds since 1970 if that is larger (``StoreMoment/tokenFloor``), so a store that is recreated or
/// restored from a backup still grants larger tokens than it ever granted before.
public struct FencingToken: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The largest token any store can hold (stores keep tokens as signed 64-bit integers).
    public static let maximum = FencingToken(rawValue: UInt64(Int64.max))
    public static func < (lhs: FencingToken, rhs: FencingToken) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { String(rawValue) }
}

/// The timing and size of a fault-tolerance group.
///
/// - ``heartbeatInterval`` (I): how often every member writes its heartbeat and an active renews its lease.
/// - ``activationInterval`` (T): how long a lease lasts on the store's clock without renewal; T > 2·I.
///   An active that has not had a renewal confirmed within T − I deactivates itself (self-fencing), so it has
///   stopped acting at least I before the store can grant its slot to anyone else.
/// - ``preparationInterval`` (P, optional, 0 < P < T): when an active has been silent for P, the member next in
///   line receives ``MemberEvent/prepareToActivate``.
public struct GroupConfiguration: Hashable, Sendable {
    public let name: GroupName
    /// How many members should be active at once (N ≥ 1).
    public let activeGoal: Int
    public let heartbeatInterval: Duration
    public let activationInterval: Duration
    public let preparationInterval: Duration?
    /// Whether a member with strictly higher weight takes over from an active member through an orderly
    /// handover. Equal weights never preempt.
    public let preemption: Bool

    /// Validates the settings; every violation is a ``ConfigurationError`` that says how to fix it.
    public init(
        name: GroupName,
        activeGoal: Int = 1,
        heartbeatInterval: Duration = .seconds(1),
        activationInterval: Duration = .seconds(3),
        preparationInterval: Duration? = nil,
        preemption: Bool = true
    ) throws(ConfigurationError) {
        guard activeGoal >= 1, activeGoal <= Self.maximumActiveGoal else { throw .activeGoalOutOfRange(activeGoal) }
        guard heartbeatInterval > .zero else { throw .nonPositiveInterval(name: "heartbeat", heartbeatInterval) }
        guard activationInterval > .zero else { throw .nonPositiveInterval(name: "activation", activationInterval) }
        guard activationInterval > heartbeatInterval * 2 else {
            throw .activationNotAboveTwiceHeartbeat(heartbeat: heartbeatInterval, activation: activationInterval)
        }
        if let preparationInterval {
            guard preparationInterval > .zero, preparationInterval < activationInterval else {
                throw .preparationOutOfRange(preparation: preparationInterval, activation: activationInterval)
            }
        }
        self.name = name
        self.activeGoal = activeGoal
        self.heartbeatInterval = heartbeatInterval
        self.activationInterval = activationInterval
        self.preparationInterval = preparationInterval
        self.preemption = preemption
    }

    /// The largest supported active goal.
    public static let maximumActiveGoal = 1_000
}

/// Who a member is, as written into every heartbeat.
public struct MemberInfo: Hashable, Sendable {
    public var id: MemberID
    /// Distinguishes two processes that claim the same ``id``; fresh for every process start.
    public var incarnation: String
    /// Higher weight ranks first; 0 ranks last. Default 50.
    public var weight: Int
    /// Shown by `status`; not used for decisions.
    public var host: String
    /// Shown by `status`; not used for decisions.
    public var pid: Int32

    public init(id: MemberID, incarnation: String, weight: Int = 50, host: String, pid: Int32) throws(ConfigurationError) {
        guard weight >= 0, weight <= Self.maximumWeight else { throw .weightOutOfRange(weight) }
        self.id = id
        self.incarnation = incarnation
        self.weight = weight
        self.host = host
        self.pid = pid
    }

    /// The largest accepted weight.
    public static let maximumWeight = 1_000_000
}

/// A setting that cannot work, with a message that says what is wrong and how to fix it.
public enum ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    case invalidGroupName(String)
    case invalidMemberID(String)
    case activeGoalOutOfRange(Int)
    case weightOutOfRange(Int)
    case nonPositiveInterval(name: String, Duration)
    case activationNotAboveTwiceHeartbeat(heartbeat: Duration, activation: Duration)
    case preparationOutOfRange(preparation: Duration, activation: Duration)
    case concurrencyOutOfRange(Int)
    case partitionsOutOfRange(Int)
    case nonPositiveLimit(name: String, Int)

    public var description: String {
        switch self {
        case .invalidGroupName(let name):
            "invalid group name \"\(name)\": use 1 to 128 characters of A-Z a-z 0-9 . _ -"
        case .invalidMemberID(let id):
            "invalid member id \"\(id)\": use 1 to 128 characters of A-Z a-z 0-9 . _ - : @"
        case .activeGoalOutOfRange(let goal):
            "invalid active goal \(goal): it must be between 1 and \(GroupConfiguration.maximumActiveGoal)"
        case .weightOutOfRange(let weight):
            "invalid weight \(weight): it must be between 0 and \(MemberInfo.maximumWeight)"
        case .nonPositiveInterval(let name, let value):
            "invalid \(name) interval \(value.formatted): it must be greater than zero"
        case .activationNotAboveTwiceHeartbeat(let heartbeat, let activation):
            "activation interval \(activation.formatted) must be greater than twice the heartbeat interval "
                + "\(heartbeat.formatted): raise the activation interval or lower the heartbeat interval"
        case .concurrencyOutOfRange(let concurrency):
            "invalid concurrency \(concurrency): it must be between 1 and \(QueueWorkerConfiguration.concurrencies.upperBound)"
        case .partitionsOutOfRange(let partitions):
            "invalid number of partitions \(partitions): it must be between 1 and \(PartitionAssignment.maximumPartitions)"
        case .nonPositiveLimit(let name, let value):
            "invalid \(name) \(value): it must be at least 1"
        case .preparationOutOfRange(let preparation, let activation):
            "preparation interval \(preparation.formatted) must be greater than zero and less than the "
                + "activation interval \(activation.formatted)"
        }
    }
}
