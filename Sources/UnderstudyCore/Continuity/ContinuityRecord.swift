/// One record of a continuous output stream: a message, or a declared gap of messages no member could reproduce.
///
/// Output sequence numbers are the input sequence numbers of the feed that every member of the publisher group
/// receives, so every member computes the same record for the same input, and a standby knows which of its
/// records the active has already confirmed. Sequences start at 1; a stream's position 0 means nothing was
/// published yet.
public enum ContinuityRecord: Hashable, Sendable {
    case message(sequence: Int64, payload: [UInt8])
    /// Messages `first ..< first + count` were lost for good (the interruption outlasted every backlog): the sink
    /// records the hole instead of waiting for it, so it is visible downstream and never silent.
    case gap(first: Int64, count: Int64)

    /// The first sequence the record covers.
    public var first: Int64 {
        switch self {
        case .message(let sequence, _): sequence
        case .gap(let first, _): first
        }
    }

    /// The last sequence the record covers.
    public var last: Int64 {
        switch self {
        case .message(let sequence, _): sequence
        case .gap(let first, let count): first + count - 1
        }
    }
}

/// What a continuity sink answered to a batch of records written under an epoch (the writer's fencing token).
public enum ContinuityAppend: Hashable, Sendable {
    /// The records after the stream's position were appended (those at or before it were duplicates and
    /// skipped); `position` is the stream's last sequence now.
    case accepted(position: Int64, duplicates: Int)
    /// A batch with the newer epoch `current` was accepted: this writer is stale, and nothing was written.
    case staleEpoch(current: FencingToken)
    /// The batch does not continue the stream, whose last sequence is `position`: nothing was written.
    case outOfSequence(position: Int64)
}

/// The value of a continuity checkpoint: the last confirmed output sequence, in decimal ASCII, so programs in any
/// language can read it with `understudy checkpoint get`.
public enum ContinuityPosition {
    public static func encode(_ position: Int64) -> [UInt8] { Array(String(position).utf8) }

    /// The position in `value`, 0 for a checkpoint never written; `nil` when the value is not a position.
    public static func decode(_ value: [UInt8]?) -> Int64? {
        guard let value else { return 0 }
        guard let position = Int64(String(decoding: value, as: UTF8.self)), position >= 0 else { return nil }
        return position
    }
}

/// Where a stream stands at its sink: the newest epoch that wrote to it and its last sequence.
public struct ContinuityStream: Hashable, Sendable {
    /// The newest epoch (fencing token) whose batch was accepted; 0 before any.
    public var epoch: FencingToken
    /// The last sequence accepted; 0 before any.
    public var position: Int64

    public init(epoch: FencingToken = FencingToken(rawValue: 0), position: Int64 = 0) {
        self.epoch = epoch
        self.position = position
    }
}

/// The rule every continuity sink applies to a batch, atomically (the protocol in docs/continuity.md):
///
/// 1. a batch whose epoch is older than the stream's is refused whole (``ContinuityAppend/staleEpoch(current:)``);
/// 2. records that end at or before the stream's position, at the head of the batch, are duplicates: skipped;
/// 3. the rest must continue the stream without a hole or an overlap, or the batch is refused whole
///    (``ContinuityAppend/outOfSequence(position:)``);
/// 4. otherwise they are appended, and the stream takes the batch's epoch, so no older epoch writes again.
public enum ContinuitySinkRule {
    /// What the sink answers, the records it appends and the stream after `records` under `epoch`.
    public static func append(_ records: [ContinuityRecord], epoch: FencingToken, to stream: ContinuityStream)
        -> (answer: ContinuityAppend, appended: [ContinuityRecord], stream: ContinuityStream)
    {
        guard epoch >= stream.epoch else { return (.staleEpoch(current: stream.epoch), [], stream) }
        var next = stream.position
        var duplicates = 0
        for record in records {
            if record.last <= stream.position, next == stream.position {
                duplicates += 1
            } else if record.first != next + 1 || record.last < record.first {
                return (.outOfSequence(position: stream.position), [], stream)
            } else {
                next = record.last
            }
        }
        let appended = Array(records.dropFirst(duplicates))
        return (.accepted(position: next, duplicates: duplicates), appended, ContinuityStream(epoch: epoch, position: next))
    }
}
