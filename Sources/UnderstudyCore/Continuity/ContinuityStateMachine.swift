/// The timing and bounds of one member of a continuous publisher group.
public struct ContinuityConfiguration: Hashable, Sendable {
    /// The most unconfirmed messages a member keeps; older ones are dropped (and become a gap if this member
    /// activates before they are confirmed).
    public let backlogLimit: Int
    /// The longest a member keeps an unconfirmed message, `nil` for no limit by age.
    public let backlogAge: Duration?
    /// The most records in one batch to the sink.
    public let batchLimit: Int
    /// How long an active waits after a failed write to the sink before it writes again.
    public let retryDelay: Duration

    /// Validates the bounds; throws ``ConfigurationError`` naming the first value out of range.
    public init(backlogLimit: Int = 100_000, backlogAge: Duration? = nil, batchLimit: Int = 1_000, retryDelay: Duration = .milliseconds(100)) throws(ConfigurationError) {
        for (name, value) in [("backlog limit", backlogLimit), ("batch limit", batchLimit)] where value < 1 {
            throw .nonPositiveLimit(name: name, value)
        }
        for (name, value) in [("backlog age", backlogAge ?? .seconds(1)), ("retry", retryDelay)] where value <= .zero {
            throw .nonPositiveInterval(name: name, value)
        }
        self.backlogLimit = backlogLimit
        self.backlogAge = backlogAge
        self.batchLimit = batchLimit
        self.retryDelay = retryDelay
    }
}

/// One member of a publisher group whose output stream crosses failover with no hole and no duplicate (TIBCO
/// Rendezvous's "continuity: track the active's backlog"), as a sans-IO state machine.
///
/// Every member receives the same input feed. The output record of input `n` has sequence `n`
/// (``ContinuityRecord``), so all members agree on what each sequence holds. The active publishes records to a
/// sink that accepts only the next sequence of the stream under the newest epoch (its fencing token), then
/// *confirms* the sink's position through a fenced checkpoint (``ContinuityPosition``). A standby keeps a bounded
/// backlog of what it would have sent and trims it as the checkpoint passes.
///
/// ```
/// active A   publish 1…40 ─ confirm 40 ─ publish 41…57 ─✕ (killed, frozen, or stopped)
/// standby B  backlog 1…  ─ trim ≤ 40 ─ backlog 41…63 ─── activate(token) ─ read checkpoint 40
///                                                          ─ resend 41…63 ─ live 64…
/// sink       41…57 from A; B's 41…57 are duplicates and skipped; 58…63 from B; A's late write: stale epoch
/// ```
///
/// The shell MUST feed every input with ``inputReceived(sequence:payload:now:)``, every lease change of the
/// member with ``activated(_:now:)`` and ``deactivated(now:)``, the answer to each action that asks for one,
/// and call ``tick(now:)`` periodically (a standby reads the checkpoint on each tick). Only one write to the sink,
/// one checkpoint write and one checkpoint read are asked for at a time.
public struct ContinuityStateMachine: Sendable {
    /// Identifies a checkpoint read, so an answer to a read sent before an activation is not taken for one after.
    public struct ReadID: Hashable, Sendable { let rawValue: Int }

    public enum Action: Hashable, Sendable {
        /// Read the checkpoint and answer with ``confirmationRead(_:for:now:)`` or ``confirmationReadFailed(_:now:)``.
        case readConfirmation(ReadID)
        /// Append the records to the sink under the token (its epoch), then answer with ``sinkAnswered(_:now:)`` or
        /// ``sinkFailed(now:)``.
        case publish([ContinuityRecord], token: FencingToken)
        /// Write the checkpoint's value as ``ContinuityPosition/encode(_:)`` of `position` under the token, then
        /// answer with ``confirmationWritten(_:now:)`` or ``confirmationWriteFailed(now:)``.
        case confirm(position: Int64, token: FencingToken)
        /// Report, once per activation: the member re-sends the `count` messages of its backlog after the confirmed
        /// position `from − 1` (the unconfirmed window; 0 when it has nothing newer), then goes live.
        case resend(from: Int64, count: Int)
        /// Report loudly: messages `first ..< first + count` are lost and published as a gap.
        case reportGap(first: Int64, count: Int64)
        /// Report: the sink or the checkpoint refused the token as stale; the member publishes nothing more until
        /// it activates again.
        case fenced(FencingToken, reason: String)
        /// Report: an input at or before the last one received was ignored (a duplicate or a restarted feed).
        case ignoredInput(sequence: Int64, last: Int64)
    }

    private struct Entry: Sendable {
        var sequence: Int64
        var payload: [UInt8]
        var receivedAt: Instant
    }

    private struct Publishing: Sendable {
        var token: FencingToken
        /// The stream's position at the sink, as last answered.
        var published: Int64
        /// The last sequence of the batch being written to the sink.
        var inFlight: Int64?
        /// The position being written to the checkpoint.
        var confirming: Int64?
        /// No write to the sink before this instant (after a failed one).
        var pausedUntil: Instant?
    }

    private enum Role: Sendable {
        case standby(reading: ReadID?)
        /// Waiting for a checkpoint read sent after the activation (`nil` after it failed: the next tick sends one).
        case activating(FencingToken, reading: ReadID?)
        case active(Publishing)
        /// The token was refused as stale; waiting to be deactivated.
        case fenced(FencingToken)
    }

    public let configuration: ContinuityConfiguration
    private var role: Role = .standby(reading: nil)
    /// Unconfirmed messages, oldest first, from `backlogStart` on.
    private var backlog: [Entry] = []
    private var backlogStart = 0
    /// The last confirmed output sequence this member knows of.
    public private(set) var confirmed: Int64 = 0
    /// The last input sequence received.
    public private(set) var lastInput: Int64?
    /// The first input sequence received.
    private var firstInput: Int64?
    /// Whether a checkpoint read was answered.
    private var hasReadConfirmation = false
    private var reads = 0

    public init(configuration: ContinuityConfiguration) {
        self.configuration = configuration
    }

    /// How many unconfirmed messages the member keeps.
    public var backlogCount: Int { backlog.count - backlogStart }

    /// Whether this member could take over without a gap: it has read the confirmed position and its feed began
    /// at or before the first unconfirmed sequence. A new member SHOULD join its group only once it is caught up
    /// (or after a bounded wait, when no active confirms), so it does not take over with a hole in its backlog.
    public var isCaughtUp: Bool {
        guard let firstInput, hasReadConfirmation else { return false }
        return firstInput <= confirmed + 1
    }

    /// The token the member publishes under, while it is active and not fenced.
    public var publishingToken: FencingToken? {
        switch role {
        case .active(let publishing): publishing.token
        case .standby, .activating, .fenced: nil
        }
    }

    // MARK: Events

    /// A message of the input feed arrived.
    public mutating func inputReceived(sequence: Int64, payload: [UInt8], now: Instant) -> [Action] {
        if let lastInput, sequence <= lastInput { return [.ignoredInput(sequence: sequence, last: lastInput)] }
        lastInput = sequence
        if firstInput == nil { firstInput = sequence }
        if sequence > confirmed {
            backlog.append(Entry(sequence: sequence, payload: payload, receivedAt: now))
            trim(now: now)
        }
        return publishNext(now: now)
    }

    /// Periodic: a standby reads the checkpoint; an active resumes after a failed write; old messages are trimmed.
    public mutating func tick(now: Instant) -> [Action] {
        trim(now: now)
        switch role {
        case .standby(reading: nil):
            let id = nextRead()
            role = .standby(reading: id)
            return [.readConfirmation(id)]
        case .activating(let token, reading: nil):
            let id = nextRead()
            role = .activating(token, reading: id)
            return [.readConfirmation(id)]
        case .active(var publishing):
            let confirm = confirmIfDue(&publishing)
            role = .active(publishing)
            return confirm + publishNext(now: now)
        case .standby, .activating, .fenced:
            return []
        }
    }

    /// The member activated with `token`: it first reads the confirmed position, then re-sends what follows it.
    public mutating func activated(_ token: FencingToken, now: Instant) -> [Action] {
        let id = nextRead()
        role = .activating(token, reading: id)
        return [.readConfirmation(id)]
    }

    /// The member deactivated: it stops publishing and keeps its backlog as a standby.
    public mutating func deactivated(now: Instant) -> [Action] {
        role = .standby(reading: nil)
        return []
    }

    /// The checkpoint holds `position` (0 when never written).
    public mutating func confirmationRead(_ position: Int64, for id: ReadID, now: Instant) -> [Action] {
        hasReadConfirmation = true
        confirm(position)
        trim(now: now)
        switch role {
        case .standby(reading: id):
            role = .standby(reading: nil)
            return []
        case .activating(let token, reading: id):
            role = .active(Publishing(token: token, published: confirmed))
            return [.resend(from: confirmed + 1, count: backlogCount)] + publishNext(now: now)
        case .standby, .activating, .active, .fenced:
            return []
        }
    }

    /// The checkpoint read `id` failed; the next tick reads again.
    public mutating func confirmationReadFailed(_ id: ReadID, now: Instant) -> [Action] {
        switch role {
        case .standby(reading: id): role = .standby(reading: nil)
        case .activating(let token, reading: id): role = .activating(token, reading: nil)
        case .standby, .activating, .active, .fenced: break
        }
        return []
    }

    /// The sink answered the write in flight.
    public mutating func sinkAnswered(_ answer: ContinuityAppend, now: Instant) -> [Action] {
        guard case .active(var publishing) = role, publishing.inFlight != nil else { return [] }
        publishing.inFlight = nil
        switch answer {
        case .accepted(let position, _):
            publishing.published = max(publishing.published, position)
        case .outOfSequence(let position):
            // The sink's position is the truth: continue from it (what the backlog no longer holds is a gap).
            publishing.published = position
        case .staleEpoch(let current):
            role = .fenced(publishing.token)
            return [.fenced(publishing.token, reason: "the sink accepted the newer epoch \(current)")]
        }
        let confirm = confirmIfDue(&publishing)
        role = .active(publishing)
        return confirm + publishNext(now: now)
    }

    /// The write in flight to the sink failed (the sink may or may not have applied it): after the retry delay,
    /// the same records are written again, which the sink skips as duplicates if it had.
    public mutating func sinkFailed(now: Instant) -> [Action] {
        guard case .active(var publishing) = role, publishing.inFlight != nil else { return [] }
        publishing.inFlight = nil
        publishing.pausedUntil = now + configuration.retryDelay
        role = .active(publishing)
        return []
    }

    /// The checkpoint write in flight was answered.
    public mutating func confirmationWritten(_ write: CheckpointWrite, now: Instant) -> [Action] {
        guard case .active(var publishing) = role, let position = publishing.confirming else { return [] }
        publishing.confirming = nil
        switch write {
        case .accepted:
            confirm(position)
            trim(now: now)
        case .rejected(let rejection):
            role = .fenced(publishing.token)
            return [.fenced(publishing.token, reason: "the checkpoint refused it: \(rejection)")]
        }
        let confirm = confirmIfDue(&publishing)
        role = .active(publishing)
        return confirm
    }

    /// The checkpoint write in flight failed; the next sink answer or tick writes it again.
    public mutating func confirmationWriteFailed(now: Instant) -> [Action] {
        guard case .active(var publishing) = role else { return [] }
        publishing.confirming = nil
        role = .active(publishing)
        return []
    }

    // MARK: Rules

    /// The next batch to the sink, when active with none in flight: the backlog after the sink's position, with
    /// a gap record wherever a sequence is missing.
    private mutating func publishNext(now: Instant) -> [Action] {
        guard case .active(var publishing) = role, publishing.inFlight == nil else { return [] }
        if let until = publishing.pausedUntil {
            guard now >= until else { return [] }
            publishing.pausedUntil = nil
        }
        var records: [ContinuityRecord] = []
        var gaps: [Action] = []
        var next = publishing.published + 1
        func gap(upTo end: Int64) {
            guard end > next else { return }
            records.append(.gap(first: next, count: end - next))
            gaps.append(.reportGap(first: next, count: end - next))
            next = end
        }
        var index = firstIndex(after: publishing.published)
        while index < backlog.count, records.count < configuration.batchLimit {
            let entry = backlog[index]
            gap(upTo: entry.sequence)
            guard records.count < configuration.batchLimit else { break }
            records.append(.message(sequence: entry.sequence, payload: entry.payload))
            next = entry.sequence + 1
            index += 1
        }
        // Inputs received but no longer kept (trimmed before they were confirmed) are lost too.
        if index == backlog.count, records.count < configuration.batchLimit, let lastInput { gap(upTo: lastInput + 1) }
        guard let last = records.last else {
            role = .active(publishing)
            return []
        }
        publishing.inFlight = last.last
        role = .active(publishing)
        return gaps + [.publish(records, token: publishing.token)]
    }

    /// Confirms the sink's position if it is ahead of the confirmed one and no confirmation is in flight.
    private func confirmIfDue(_ publishing: inout Publishing) -> [Action] {
        guard publishing.confirming == nil, publishing.published > confirmed else { return [] }
        publishing.confirming = publishing.published
        return [.confirm(position: publishing.published, token: publishing.token)]
    }

    private mutating func nextRead() -> ReadID {
        reads += 1
        return ReadID(rawValue: reads)
    }

    private mutating func confirm(_ position: Int64) {
        confirmed = max(confirmed, position)
        backlogStart = firstIndex(after: confirmed)
        compact()
    }

    /// The index of the first kept entry after `sequence` (entries are in increasing order).
    private func firstIndex(after sequence: Int64) -> Int {
        var (low, high) = (backlogStart, backlog.count)
        while low < high {
            let middle = (low + high) / 2
            if backlog[middle].sequence <= sequence { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Drops the oldest entries beyond the bounds of count and age.
    private mutating func trim(now: Instant) {
        backlogStart = max(backlogStart, backlog.count - configuration.backlogLimit)
        if let age = configuration.backlogAge {
            while backlogStart < backlog.count, now - backlog[backlogStart].receivedAt > age { backlogStart += 1 }
        }
        compact()
    }

    /// Reclaims dropped entries once they are half the storage, so trimming costs O(1) amortized.
    private mutating func compact() {
        guard backlogStart > 0, backlogStart * 2 >= backlog.count else { return }
        backlog.removeFirst(backlogStart)
        backlogStart = 0
    }
}
