import UnderstudyCore

/// A kind of fault the partition simulation injects during the fault window of a run.
public enum PartitionFault: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A member process dies (`kill -9`): the watchdog kills its partitions' work at once; its leases stay on the
    /// store until they expire; it restarts later with a new incarnation.
    case crash
    /// A member process freezes (SIGSTOP) for 0.5·T–3·T, mostly past T: its inputs wait until it resumes, its
    /// work keeps running, and only the watchdog stops it at its deadlines.
    case freeze
    /// One member loses its network to the store for 0.5·T–3·T: its calls and announcements are lost.
    case isolate
    /// The store is unreachable for everyone for 0.5·T–2·T: half of the calls are refused at once, the others
    /// time out.
    case outage
    /// The store is slow for 0.5·T–3·T: every leg of a round trip takes 0.2–1.5 s more.
    case slow
    /// A new member joins, of twice the others' weight one time in three.
    case join
    /// A member leaves gracefully (SIGTERM): it stops its partitions' work, releases them all and leaves in one
    /// heartbeat; it starts again later.
    case leave
    /// Announcements of joins and releases arrive up to 2·I late, and one in twenty is lost.
    case delay

    public var description: String { rawValue }
}

/// A deliberately broken piece of the system around the partitioned member, to prove that the checker catches
/// real bugs. The core itself is never changed.
public enum PartitionWeakening: Hashable, Sendable, CustomStringConvertible {
    /// The store grants an acquire of a partition another member holds, as if its lease had expired.
    case storeGrantsHeldPartitions
    /// The store's token counter restarts with every heartbeat, and its token floor is 0.
    case storeResetsTokens
    /// The shell reports `workStopped` as soon as it is told to stop, while the work still runs.
    case shellReportsStopEarly
    /// The watchdog is given no deadlines: work stops only when the member process stops it.
    case noWatchdog
    /// The store never expires a membership: a crashed member stays in the view, assigned partitions forever.
    case storeKeepsMemberships
    /// Each lease is missing from the store's view with this probability (a backend that reads the leases
    /// without a consistent snapshot; 1 never shows any), so the assignment loses its stickiness.
    case viewDropsLeases(probability: Double)

    public var description: String {
        switch self {
        case .storeGrantsHeldPartitions: "store-grants-held-partitions"
        case .storeResetsTokens: "store-resets-tokens"
        case .shellReportsStopEarly: "shell-reports-stop-early"
        case .noWatchdog: "no-watchdog"
        case .storeKeepsMemberships: "store-keeps-memberships"
        case .viewDropsLeases(let probability): "view-drops-leases-\(probability)"
        }
    }
}

/// What to simulate: a partitioned group, its store, and the faults. Every run of the same options and seed is
/// identical.
public struct PartitionSimulationOptions: Hashable, Sendable {
    /// The members at the start; ``PartitionFault/join`` adds more.
    public var members: Int
    /// P.
    public var partitions: Int
    /// I.
    public var heartbeatInterval: Duration
    /// T.
    public var activationInterval: Duration
    /// The round-trip time of one store call when nothing goes wrong; each leg takes half of a value in range.
    public var storeLatency: ClosedRange<Duration>
    /// How long the store client waits for a round trip before giving up on it; calls go one at a time.
    public var callTimeout: Duration
    /// How long a partition's work may take to stop once told to; most stop within 50 ms.
    public var stopPace: Duration
    public var faults: Set<PartitionFault>
    /// `nil` for the faithful system.
    public var weakening: PartitionWeakening?
    /// How long faults are injected, from the start of the run. `nil` means 8·T.
    public var faultWindow: Duration?
    /// How long the run goes on after the faults. `nil` means 4·T.
    public var quietTail: Duration?

    public init(
        members: Int = 4,
        partitions: Int = 16,
        heartbeatInterval: Duration = .seconds(1),
        activationInterval: Duration = .seconds(3),
        storeLatency: ClosedRange<Duration> = .milliseconds(5) ... .milliseconds(200),
        callTimeout: Duration = .seconds(2),
        stopPace: Duration = .milliseconds(500),
        faults: Set<PartitionFault> = Set(PartitionFault.allCases),
        weakening: PartitionWeakening? = nil,
        faultWindow: Duration? = nil,
        quietTail: Duration? = nil
    ) {
        self.members = members
        self.partitions = partitions
        self.heartbeatInterval = heartbeatInterval
        self.activationInterval = activationInterval
        self.storeLatency = storeLatency
        self.callTimeout = callTimeout
        self.stopPace = stopPace
        self.faults = faults
        self.weakening = weakening
        self.faultWindow = faultWindow
        self.quietTail = quietTail
    }

    /// The group every member runs; throws when the options cannot make one.
    public func configuration() throws(PartitionSimulationOptionsError) -> PartitionedGroupConfiguration {
        guard (1...64).contains(members) else { throw .membersOutOfRange(members) }
        guard storeLatency.lowerBound >= .zero else { throw .negativeLatency }
        guard callTimeout > .zero else { throw .nonPositiveCallTimeout }
        guard stopPace >= .zero else { throw .negativeStopPace }
        do {
            let group = try GroupConfiguration(
                name: Self.group, heartbeatInterval: heartbeatInterval, activationInterval: activationInterval
            )
            return try PartitionedGroupConfiguration(group: group, partitions: partitions)
        } catch {
            throw .invalidGroup(error)
        }
    }

    static let group = try! GroupName("simulated")

    var effectiveFaultWindow: Duration {
        faults.isEmpty ? .zero : (faultWindow ?? activationInterval * 8)
    }

    var effectiveQuietTail: Duration { quietTail ?? activationInterval * 4 }

    /// T + 2·I: how soon after the last fault's effect every partition must be owned.
    public var livenessBound: Duration { activationInterval + heartbeatInterval * 2 }
}

public enum PartitionSimulationOptionsError: Error, Hashable, Sendable, CustomStringConvertible {
    case membersOutOfRange(Int)
    case negativeLatency
    case nonPositiveCallTimeout
    case negativeStopPace
    case invalidGroup(ConfigurationError)

    public var description: String {
        switch self {
        case .membersOutOfRange(let members): "invalid member count \(members): it must be between 1 and 64"
        case .negativeLatency: "store latency must not be negative"
        case .nonPositiveCallTimeout: "the call timeout must be positive"
        case .negativeStopPace: "the stop pace must not be negative"
        case .invalidGroup(let error): error.description
        }
    }
}
