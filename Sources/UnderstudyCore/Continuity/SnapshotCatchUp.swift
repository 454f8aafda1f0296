/// How a warm standby keeps the same data state as the active (TIBCO Rendezvous's parallel data state): every
/// member applies the same sequenced updates of the feed, and a new member starts from a snapshot taken from a
/// running one, then catches up with no gap between the snapshot and the live feed, as a sans-IO state machine.
///
/// A new member listens to the feed *before* it asks for the snapshot, keeping what arrives; once the snapshot
/// (taken at sequence s) is loaded it applies what it kept after s, and goes live. If what it kept begins after
/// s + 1, the updates between are lost and reported, never skipped silently. A live member reports a jump in the
/// feed's sequences the same way.
public struct SnapshotCatchUp<Update: Sendable>: Sendable {
    public enum Action: Sendable {
        /// Apply these updates, in order.
        case apply([(sequence: Int64, update: Update)])
        /// Updates `first ..< first + count` are lost: the state misses them.
        case reportGap(first: Int64, count: Int64)
        /// Report: an update at or before the last one applied was ignored.
        case ignored(sequence: Int64)
    }

    private enum State: Sendable {
        /// Waiting for the snapshot, keeping the feed.
        case buffering([(sequence: Int64, update: Update)])
        /// Applying the feed; `last` is the last sequence applied (`nil` before the first update of a first member).
        case live(last: Int64?)
    }

    private var state: State

    /// A member with a snapshot to wait for (`bootstrapping`), or the first member, which applies the feed from
    /// its first update on.
    public init(bootstrapping: Bool) {
        state = bootstrapping ? .buffering([]) : .live(last: nil)
    }

    /// The last sequence applied, `nil` while waiting for the snapshot or before the first update.
    public var lastApplied: Int64? {
        switch state {
        case .buffering: nil
        case .live(let last): last
        }
    }

    /// An update of the feed arrived.
    public mutating func received(sequence: Int64, update: Update) -> [Action] {
        switch state {
        case .buffering(var kept):
            kept.append((sequence, update))
            state = .buffering(kept)
            return []
        case .live(let last):
            if let last, sequence <= last { return [.ignored(sequence: sequence)] }
            state = .live(last: sequence)
            let gap: [Action] = if let last, sequence > last + 1 { [.reportGap(first: last + 1, count: sequence - last - 1)] } else { [] }
            return gap + [.apply([(sequence, update)])]
        }
    }

    /// The snapshot, taken at sequence `sequence`, is loaded: apply what was kept after it, and go live.
    public mutating func snapshotLoaded(at sequence: Int64) -> [Action] {
        switch state {
        case .buffering(let kept):
            let after = kept.filter { $0.sequence > sequence }
            state = .live(last: max(sequence, after.last?.sequence ?? sequence))
            var actions: [Action] = []
            if let first = after.first, first.sequence > sequence + 1 {
                actions.append(.reportGap(first: sequence + 1, count: first.sequence - sequence - 1))
            }
            if !after.isEmpty { actions.append(.apply(after)) }
            return actions
        case .live:
            return []
        }
    }
}
