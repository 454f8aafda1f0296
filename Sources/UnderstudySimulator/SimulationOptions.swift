import UnderstudyCore

/// A kind of fault the simulator injects during the fault window of a run.
public enum SimulatedFault: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A member's host is lost, with no proof of death: its member process is gone and restarted later, while
    /// its work may run on until it notices (within I) or its watchdog kills it at the lease deadline. The slot
    /// is free only once the lease has expired.
    case crash
    /// A member process dies with proof of death: its watchdog sees the control pipe close, kills the work at
    /// once, and then gives the slot back on the store with a compare-and-set on the dead incarnation and its
    /// token (a `leave` releasing the token, in the dead process's name). The process is restarted later.
    case processCrash = "process-crash"
    /// A member process freezes (a GC pause, a stopped VM), often for longer than T, then resumes with stale
    /// beliefs. Its work keeps running; only the watchdog stops it.
    case pause
    /// Members' clocks run fast or slow by up to ``SimulationOptions/maximumDrift``.
    case drift
    /// Store round trips lose their request or reply (the caller waits for its timeout), are answered late, or are
    /// held up on the way in until after the caller gave up, and applied after heartbeats sent later.
    case loss
    /// Some members cannot reach the store for a while.
    case partition
    /// The store is unreachable for everyone for a while.
    case outage
    /// An active member's work ends by itself (``MemberStateMachine/workEnded(now:)``).
    case resign
    /// A member is shut down gracefully (``MemberStateMachine/shutdownRequested(now:)``) and started again later.
    case shutdown
    /// Members restart with another weight, so preemption comes into play.
    case reweight
    /// The store loses data: its record rolls back to a snapshot taken up to 2·T earlier (a restore from a
    /// backup, a failover to a replica that lost commits). The store then vouches for nothing it may have lost:
    /// it grants no slot for T (``StoreMoment/recordCompleteSince``), and its token floor, its wall clock in µs,
    /// exceeds every token granted before.
    case restore
    /// Members' clocks read far apart: offsets of up to a day either way, so that some read before zero. Only the
    /// store's clock judges leases, so this must not matter.
    case skew
    /// Hooks overrun: on deactivation the command or the `on-deactivate` hook ignores SIGTERM and would run for
    /// up to 3·T. The supervisor runs hooks inside the lease, so only its SIGKILL after the stop grace (2·I), or
    /// the watchdog at the lease deadline, ends it.
    case hooks
    /// The store's wall clock steps (NTP, a VM migration, a failover to a server whose clock differs), once or
    /// twice, forward or back by 0.5·T to 5·T or by hours. The store judges leases on its store clock, which
    /// ``StoreClock`` advances from the wall clock and from each member's own measurement, as PostgreSQL does;
    /// its token floor is the stepped wall clock. Runs with a restore step forward only: a store that forgets
    /// grants and is set back past them is outside the token floor's assumption.
    case clockStep = "clock-step"

    public var description: String { rawValue }
}

/// How the simulated store is reached. Both models run the real ``GroupLedger`` in one place that applies
/// heartbeats one at a time; they differ only in how the calls to it behave.
public enum StoreModel: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// One serializing store (SQLite on a shared disk, one PostgreSQL primary) on a good network: latency within
    /// the configured range; with ``SimulatedFault/loss``, 2% of calls lose their request, 2% their reply and 3%
    /// are late (see ``SimulatedFault/loss``); outages last 0.5·T to 2·T.
    case singleStore = "single-store"
    /// The same serializing store behind a slow and lossy link: latency up to twice the configured range, 5% of
    /// calls lose their request, 5% their reply, 10% are answered late, and outages last up to 4·T.
    case distantStore = "distant-store"

    public var description: String { rawValue }

    var requestLoss: Double { self == .singleStore ? 0.02 : 0.05 }
    var replyLoss: Double { self == .singleStore ? 0.02 : 0.05 }
    var lateAnswers: Double { self == .singleStore ? 0.03 : 0.10 }
    var latencyFactor: Int64 { self == .singleStore ? 1 : 2 }
    var longestOutageInActivationIntervals: Int64 { self == .singleStore ? 2 : 4 }
}

/// A deliberately broken piece of the system around the core, to prove that the invariant checker catches real
/// bugs. The core itself is never changed.
public enum ProtocolWeakening: Hashable, Sendable, CustomStringConvertible {
    /// The member's shell ignores self-fencing: after a ``MemberEvent/deactivate(_:)`` the work runs on for T to 2·T,
    /// and no watchdog enforces ``MemberStateMachine/Action/stopWorkBy(_:)`` or the lease deadline.
    case shellIgnoresDeactivation
    /// The store lets every lease (and membership) lapse this long before the T the heartbeat asked for, so it
    /// grants the slot to another member while the holder still rightly believes it holds it.
    case storeGrantsBeforeExpiry(by: Duration)
    /// The watchdog is given no lease deadlines: only the supervisor's kill at `stopWorkBy` stops a work, and a
    /// frozen supervisor sends it late.
    case watchdogIgnoresLeaseDeadlines
    /// After a process crash, the watchdog gives the slot back before the work is dead (it dies I to 2·I later).
    case watchdogReleasesBeforeKill
    /// After a restore, the store grants slots at once instead of holding grants for T.
    case restoreWithoutHold
    /// The store has no token floor: after a restore, tokens continue from the restored counter.
    case restoreWithoutTokenFloor
    /// The store accepts a checkpoint write unless a newer token wrote, without checking the writer's lease
    /// (with ``SimulationOptions/checkpointWrites``).
    case checkpointIgnoresLease
    /// The store judges leases on its raw wall clock instead of its ``StoreClock``, so a forward step expires
    /// leases early.
    case storeJudgesOnWallClock
    /// The store keeps no evidence from heartbeats it refused because an older incarnation holds the member id,
    /// so the retries of a restarted member advance its store clock by at most the slack each.
    case storeForgetsRefusedHeartbeats

    public var description: String {
        switch self {
        case .shellIgnoresDeactivation: "shell-ignores-deactivation"
        case .storeGrantsBeforeExpiry(let margin): "store-grants-\(margin.formatted)-before-expiry"
        case .watchdogIgnoresLeaseDeadlines: "watchdog-ignores-lease-deadlines"
        case .watchdogReleasesBeforeKill: "watchdog-releases-before-kill"
        case .restoreWithoutHold: "restore-without-hold"
        case .restoreWithoutTokenFloor: "restore-without-token-floor"
        case .checkpointIgnoresLease: "checkpoint-ignores-lease"
        case .storeJudgesOnWallClock: "store-judges-on-wall-clock"
        case .storeForgetsRefusedHeartbeats: "store-forgets-refused-heartbeats"
        }
    }
}

/// What to simulate: the group, the store and the faults. Every run of the same options and seed is identical.
public struct SimulationOptions: Hashable, Sendable {
    public var members: Int
    public var activeGoal: Int
    /// I.
    public var heartbeatInterval: Duration
    /// T.
    public var activationInterval: Duration
    /// P: when set, the member next in line is told to prepare once an active has been silent this long.
    public var preparationInterval: Duration?
    /// Whether a heavier member takes over from an active one (`understudy run --no-preempt` turns it off).
    public var preemption: Bool
    /// The round-trip time of one store call when nothing goes wrong; each leg takes half of a value in range.
    public var storeLatency: ClosedRange<Duration>
    /// When set, member m1's round trips take this instead of ``storeLatency``: one slow member among fast ones.
    public var slowMemberLatency: ClosedRange<Duration>?
    /// How long the shell waits for a round trip before it gives up (and sends the next): PostgreSQL's round-trip
    /// timeout, 5 s by default. SQLite waits until its transaction ends; one that cannot get the write lock fails
    /// after its busy timeout of 10 s. Answers that come later are discarded; the state machine itself ignores
    /// answers to heartbeats sent more than T ago.
    public var callTimeout: Duration
    public var faults: Set<SimulatedFault>
    public var storeModel: StoreModel
    /// `nil` for the faithful system.
    public var weakening: ProtocolWeakening?
    /// How long faults are injected, from the start of the run. `nil` means 8·T.
    public var faultWindow: Duration?
    /// How long a settled group is watched for flapping. `nil` means 4·T.
    public var stabilityWindow: Duration?
    /// Whether members write a fenced checkpoint: each acting member with every confirmed renewal, and each
    /// member that resumes from a pause with the token of its last activation (a stale writer, as a frozen
    /// active is when SIGCONT comes). Off by default, so runs without it keep their schedules.
    public var checkpointWrites: Bool

    /// The largest clock-rate error with ``SimulatedFault/drift``: 3%.
    public static let maximumDrift = 0.03

    public init(
        members: Int = 3,
        activeGoal: Int = 1,
        heartbeatInterval: Duration = .seconds(1),
        activationInterval: Duration = .seconds(3),
        preparationInterval: Duration? = nil,
        preemption: Bool = true,
        storeLatency: ClosedRange<Duration> = .milliseconds(5) ... .milliseconds(200),
        slowMemberLatency: ClosedRange<Duration>? = nil,
        callTimeout: Duration = .seconds(5),
        faults: Set<SimulatedFault> = Set(SimulatedFault.allCases),
        storeModel: StoreModel = .singleStore,
        weakening: ProtocolWeakening? = nil,
        faultWindow: Duration? = nil,
        stabilityWindow: Duration? = nil,
        checkpointWrites: Bool = false
    ) {
        self.checkpointWrites = checkpointWrites
        self.members = members
        self.activeGoal = activeGoal
        self.heartbeatInterval = heartbeatInterval
        self.activationInterval = activationInterval
        self.preparationInterval = preparationInterval
        self.preemption = preemption
        self.storeLatency = storeLatency
        self.slowMemberLatency = slowMemberLatency
        self.callTimeout = callTimeout
        self.faults = faults
        self.storeModel = storeModel
        self.weakening = weakening
        self.faultWindow = faultWindow
        self.stabilityWindow = stabilityWindow
    }

    /// The group every simulated member runs; throws when the options cannot make a valid group.
    public func groupConfiguration() throws(SimulationOptionsError) -> GroupConfiguration {
        guard members >= activeGoal, members <= 100 else { throw .membersOutOfRange(members: members, activeGoal: activeGoal) }
        guard storeLatency.lowerBound >= .zero, (slowMemberLatency?.lowerBound ?? .zero) >= .zero else { throw .negativeLatency }
        guard callTimeout > .zero else { throw .nonPositiveCallTimeout }
        do {
            return try GroupConfiguration(
                name: GroupName("simulated"),
                activeGoal: activeGoal,
                heartbeatInterval: heartbeatInterval,
                activationInterval: activationInterval,
                preparationInterval: preparationInterval,
                preemption: preemption
            )
        } catch {
            throw .invalidGroup(error)
        }
    }

    var effectiveFaultWindow: Duration {
        faults.isEmpty ? .zero : (faultWindow ?? activationInterval * 8)
    }

    var effectiveStabilityWindow: Duration { stabilityWindow ?? activationInterval * 4 }

    /// SIGKILL goes out this long before a deadline, to cover the kill itself: I/4, as `understudy run` does.
    var killMargin: Duration { heartbeatInterval / 4 }

    /// Whether the slow member cannot count on renewing a lease in time. A heartbeat may wait for the round trip
    /// under way and then take one of its own, so it is answered up to two round trips after it was sent, and the
    /// newest one confirmed may have waited up to I for its round trip: a member renews in time only while
    /// 2·RTT + I < T − I. Beyond that a grant may come too late to be vouched for (the member gives it back and
    /// rests) or a lease may not be renewed before the member fences itself; it is not counted on to hold a slot.
    var slowMemberCannotHold: Bool {
        guard let slow = slowMemberLatency else { return false }
        return slow.upperBound * Int(storeModel.latencyFactor) * 2 + heartbeatInterval >= activationInterval - heartbeatInterval
    }

    /// The round-trip range of member `index` (0-based).
    func storeLatency(of index: Int) -> ClosedRange<Duration> {
        index == 0 ? slowMemberLatency ?? storeLatency : storeLatency
    }

    /// The longest one-way trip to or from the store of a member other than the slow one, when the call is not
    /// one of the late ones. Only the fast members are counted on to meet the goal.
    var longestLeg: Duration { storeLatency.upperBound * Int(storeModel.latencyFactor) / 2 + StoreTiming.longestService }

    /// The longest extra delay of a call answered late (after I to 2·I, while the shell still waits).
    var longestLateAnswer: Duration { faults.contains(.loss) ? heartbeatInterval * 2 : .zero }

    /// How long a store client can stay blocked after the faults stop by a round trip sent before: until its
    /// timeout when a fault can make a call go unanswered, else the longest late answer.
    var longestStall: Duration {
        faults.isDisjoint(with: [.loss, .partition, .outage]) ? longestLateAnswer : max(longestLateAnswer, callTimeout)
    }

    /// How long a slow member next in line can hold up the others: its acquire may wait for the round trip under
    /// way and take one of its own, and the grant, too late to use, is given back in two more.
    var slowMemberDelay: Duration {
        guard let slow = slowMemberLatency else { return .zero }
        return slow.upperBound * Int(storeModel.latencyFactor) * 4
    }

    /// Once faults stop, the group acts with its full goal again within this bound (liveness, part 1):
    /// T for the last lease renewed before the faults stopped to expire, I for the next-in-line to hear of it or
    /// for a rejected restart to be retried, plus the longest stall of a store client, six store legs, and the
    /// delay a slow member next in line may add.
    public var goalBound: Duration {
        activationInterval + heartbeatInterval + longestStall + longestLeg * 6 + slowMemberDelay
    }

    /// Once faults stop, the best-ranked members hold the slots, every member has rejoined and none rests, within
    /// this bound (liveness, part 2): the ``goalBound``, then one rest after resigning (T), then one orderly
    /// handover (three heartbeats, the longest graceful stop of 2·I, and eight store legs).
    public var settleBound: Duration {
        goalBound + activationInterval + heartbeatInterval * 5 + longestLeg * 8
    }
}

/// Options that cannot be simulated.
public enum SimulationOptionsError: Error, Hashable, Sendable, CustomStringConvertible {
    case membersOutOfRange(members: Int, activeGoal: Int)
    case negativeLatency
    case nonPositiveCallTimeout
    case invalidGroup(ConfigurationError)

    public var description: String {
        switch self {
        case .membersOutOfRange(let members, let activeGoal):
            "invalid member count \(members): it must be at least the active goal \(activeGoal) and at most 100"
        case .negativeLatency:
            "store latency must not be negative"
        case .nonPositiveCallTimeout:
            "the call timeout must be positive"
        case .invalidGroup(let error):
            error.description
        }
    }
}

enum StoreTiming {
    /// How long the store takes to apply one heartbeat, at most; calls queue behind each other.
    static let longestService = Duration.microseconds(500)
}
