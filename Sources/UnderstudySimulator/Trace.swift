import UnderstudyCore

/// One thing that happened in a run, on the simulator's real (virtual) timeline.
struct TraceEntry: Sendable, CustomStringConvertible {
    enum Kind: Sendable {
        case started(incarnation: Int, weight: Int)
        case crashed
        case paused(until: Int64)
        case resumed
        case heartbeatSent(MemberStateMachine.RequestID, Heartbeat.Intent)
        case requestLost(batch: UInt64)
        case storeUnreachable(batch: UInt64)
        /// `nil`: the watchdog's release after a process crash.
        case applied(MemberStateMachine.RequestID?, HeartbeatReply.Outcome, slot: Int?)
        case refused(MemberStateMachine.RequestID?, HeartbeatRejection)
        case replyLost(batch: UInt64)
        case answerDiscarded(batch: UInt64)
        case replied(MemberStateMachine.RequestID)
        case failed(MemberStateMachine.RequestID)
        case emitted(MemberEvent)
        case workStarted(FencingToken)
        case workStopped(FencingToken, WorkStop)
        case resignFault
        case shutdownFault
        case finished(HeartbeatRejection?)
        case partition(members: [Int])
        case partitionHealed
        case outage(until: Int64)
        case outageOver
        case faultsStopped
        case settled
        case changeAnnounced
        case processCrashed
        case proofOfDeathRelease(FencingToken)
        case snapshotTaken
        case restored(snapshotAt: Int64)
        case storeClockStepped(by: Int64)
        case checkpointSent(FencingToken)
        case checkpointWritten(FencingToken, accepted: Bool)
    }

    var time: Int64
    /// The member's index, or `nil` for the store and the network.
    var member: Int?
    var kind: Kind

    /// Feeds the entry into `hash` as integers, with no formatting.
    func fold(into hash: inout TraceHash) {
        hash.combine(UInt64(bitPattern: time))
        hash.combine(UInt64(member.map { $0 + 1 } ?? 0))
        switch kind {
        case .started(let incarnation, let weight): hash.combine(1, UInt64(incarnation), UInt64(weight))
        case .crashed: hash.combine(2)
        case .paused(let until): hash.combine(3, UInt64(bitPattern: until))
        case .resumed: hash.combine(4)
        case .heartbeatSent(let id, let intent): hash.combine(5, id.rawValue, Self.code(intent))
        case .requestLost(let batch): hash.combine(6, batch)
        case .storeUnreachable(let batch): hash.combine(7, batch)
        case .applied(let id, let outcome, let slot): hash.combine(8, id?.rawValue ?? 0, Self.code(outcome), UInt64(slot ?? 999))
        case .refused(let id, _): hash.combine(9, id?.rawValue ?? 0)
        case .replyLost(let batch): hash.combine(10, batch)
        case .answerDiscarded(let batch): hash.combine(26, batch)
        case .replied(let id): hash.combine(11, id.rawValue)
        case .failed(let id): hash.combine(12, id.rawValue)
        case .emitted(let event): hash.combine(13, Self.code(event))
        case .workStarted(let token): hash.combine(14, token.rawValue)
        case .workStopped(let token, let how): hash.combine(15, token.rawValue, UInt64(how.rawValue))
        case .resignFault: hash.combine(16)
        case .shutdownFault: hash.combine(17)
        case .finished(let rejection): hash.combine(18, rejection == nil ? 0 : 1)
        case .partition(let members): hash.combine(19, members.reduce(0) { $0 | (1 << UInt64($1)) })
        case .partitionHealed: hash.combine(20)
        case .outage(let until): hash.combine(21, UInt64(bitPattern: until))
        case .outageOver: hash.combine(22)
        case .faultsStopped: hash.combine(23)
        case .settled: hash.combine(24)
        case .changeAnnounced: hash.combine(25)
        case .processCrashed: hash.combine(27)
        case .proofOfDeathRelease(let token): hash.combine(28, token.rawValue)
        case .snapshotTaken: hash.combine(29)
        case .restored(let snapshotAt): hash.combine(30, UInt64(bitPattern: snapshotAt))
        case .storeClockStepped(let step): hash.combine(31, UInt64(bitPattern: step))
        case .checkpointSent(let token): hash.combine(32, token.rawValue)
        case .checkpointWritten(let token, let accepted): hash.combine(33, token.rawValue, accepted ? 1 : 0)
        }
    }

    var description: String {
        let who = member.map { "m\($0 + 1)" } ?? "store"
        return "[\(Instant(nanoseconds: time))] \(who) \(kindDescription)"
    }

    private var kindDescription: String {
        switch kind {
        case .started(let incarnation, let weight): "started (incarnation \(incarnation), weight \(weight))"
        case .crashed: "crashed"
        case .paused(let until): "paused until \(Instant(nanoseconds: until))"
        case .resumed: "resumed"
        case .heartbeatSent(let id, let intent): "sent heartbeat \(id) \(Self.describe(intent))"
        case .requestLost(let batch): "lost the request of round trip \(batch)"
        case .storeUnreachable(let batch): "could not reach the store with round trip \(batch)"
        case .applied(let id, let outcome, let slot):
            "applied \(id.map { "\($0)" } ?? "the watchdog's release"): \(Self.describe(outcome))" + (slot.map { " in slot \($0)" } ?? "")
        case .refused(let id, let rejection): "refused \(id.map { "\($0)" } ?? "the watchdog's release"): \(rejection)"
        case .replyLost(let batch): "lost the reply to round trip \(batch)"
        case .answerDiscarded(let batch): "discarded the answer to round trip \(batch): the shell gave up on it"
        case .replied(let id): "received the reply to \(id)"
        case .failed(let id): "gave up on \(id)"
        case .emitted(let event): "emitted \(event)"
        case .workStarted(let token): "work started with token \(token)"
        case .workStopped(let token, let how): "work with token \(token) stopped (\(how))"
        case .resignFault: "work ends by itself"
        case .shutdownFault: "asked to shut down"
        case .finished(let rejection): "finished" + (rejection.map { ": \($0)" } ?? "")
        case .partition(let members): "partition cuts " + members.map { "m\($0 + 1)" }.joined(separator: ",") + " off the store"
        case .partitionHealed: "partition healed"
        case .outage(let until): "outage until \(Instant(nanoseconds: until))"
        case .outageOver: "outage over"
        case .faultsStopped: "faults stop"
        case .settled: "group settled"
        case .changeAnnounced: "heard a change announced"
        case .processCrashed: "process crashed (its watchdog proves the work dead)"
        case .proofOfDeathRelease(let token): "watchdog releases token \(token) for the dead process"
        case .snapshotTaken: "snapshot of the store taken"
        case .restored(let snapshotAt): "store restored to its snapshot of \(Instant(nanoseconds: snapshotAt)): no grants for T"
        case .storeClockStepped(let step): "the store's wall clock steps by \(Duration.nanoseconds(step).formatted)"
        case .checkpointSent(let token): "writes the checkpoint with token \(token)"
        case .checkpointWritten(let token, let accepted): accepted ? "store accepts the checkpoint of token \(token)" : "store refuses the checkpoint of token \(token)"
        }
    }

    private static func code(_ intent: Heartbeat.Intent) -> UInt64 {
        switch intent {
        case .none: 0
        case .acquire: 1
        case .renew(let token): 2 | token.rawValue << 4
        case .release(let token): 3 | token.rawValue << 4
        case .leave(let token): 4 | (token?.rawValue ?? 0) << 4
        }
    }

    private static func code(_ outcome: HeartbeatReply.Outcome) -> UInt64 {
        switch outcome {
        case .none: 0
        case .granted(let token): 1 | token.rawValue << 4
        case .notGranted: 2
        case .renewed: 3
        case .lost: 4
        case .released: 5
        case .left: 6
        }
    }

    private static func code(_ event: MemberEvent) -> UInt64 {
        switch event {
        case .prepareToActivate: 0
        case .prepareWithdrawn: 1
        case .activate(let token): 2 | token.rawValue << 4
        case .deactivate(let reason): 3 | UInt64(DeactivationReason.allCases.firstIndex(of: reason)!) << 4
        }
    }

    private static func describe(_ intent: Heartbeat.Intent) -> String {
        switch intent {
        case .none: "(membership only)"
        case .acquire: "acquire"
        case .renew(let token): "renew token \(token)"
        case .release(let token): "release token \(token)"
        case .leave(let token): "leave" + (token.map { " releasing token \($0)" } ?? "")
        }
    }

    private static func describe(_ outcome: HeartbeatReply.Outcome) -> String {
        switch outcome {
        case .none: "membership noted"
        case .granted(let token): "granted token \(token)"
        case .notGranted: "not granted"
        case .renewed: "renewed"
        case .lost: "lease lost"
        case .released: "released"
        case .left: "left"
        }
    }
}

/// How a work stopped acting.
enum WorkStop: Int, Sendable, CustomStringConvertible {
    /// After a deactivation, at the pace of the application.
    case graceful
    /// Killed by the watchdog at the newest lease deadline it was given.
    case watchdog
    /// Ended by itself (the ``SimulatedFault/resign`` fault).
    case ended
    /// Its member process died and the watchdog killed it.
    case orphaned
    /// Killed by the supervisor at the `stopWorkBy` deadline.
    case supervisor

    var description: String {
        switch self {
        case .graceful: "graceful"
        case .watchdog: "killed by the watchdog"
        case .ended: "ended by itself"
        case .orphaned: "its member process died"
        case .supervisor: "killed by the supervisor"
        }
    }
}

/// FNV-1a over 64-bit words: a hash of a trace that is the same in every process, unlike `Hasher`.
public struct TraceHash: Hashable, Sendable, CustomStringConvertible {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    mutating func combine(_ words: UInt64...) {
        for word in words {
            value = (value ^ word) &* 0x0000_0100_0000_01B3
        }
    }

    public var description: String {
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// The newest entries of a trace, kept for the report of a violation.
struct RecentTrace<Entry: CustomStringConvertible & Sendable>: Sendable {
    private var entries: [Entry] = []
    private var next = 0
    static var capacity: Int { 40 }

    mutating func append(_ entry: Entry) {
        if entries.count < Self.capacity {
            entries.append(entry)
        } else {
            entries[next] = entry
            next = (next + 1) % Self.capacity
        }
    }

    var lines: [String] {
        (entries[next...] + entries[..<next]).map(\.description)
    }
}
