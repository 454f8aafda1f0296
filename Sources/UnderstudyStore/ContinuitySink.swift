import Synchronization
import UnderstudyCore

/// Where a continuous publisher group writes its output stream: it accepts only the next sequence of the stream
/// and refuses an older epoch, applying ``ContinuitySinkRule`` atomically to each batch.
public protocol ContinuitySink: Sendable {
    /// Appends `records` under `epoch` (the writer's fencing token), or refuses them whole.
    ///
    /// A failure (thrown) leaves the caller unsure whether the batch was applied; writing the same batch again is
    /// safe, since the sink skips what it already holds.
    func append(_ records: [ContinuityRecord], epoch: FencingToken) async throws -> ContinuityAppend
}

/// A sink in memory, for tests and examples: ``ContinuitySinkRule`` over an array.
public final class InMemoryContinuitySink: ContinuitySink {
    private let state = Mutex<(stream: ContinuityStream, records: [ContinuityRecord])>((stream: ContinuityStream(), records: [ContinuityRecord]()))

    public init() {}

    public func append(_ records: [ContinuityRecord], epoch: FencingToken) async throws -> ContinuityAppend {
        state.withLock { state in
            let (answer, appended, stream) = ContinuitySinkRule.append(records, epoch: epoch, to: state.stream)
            state.stream = stream
            state.records += appended
            return answer
        }
    }

    /// The stream's epoch and position.
    public var stream: ContinuityStream { state.withLock { $0.stream } }
    /// Every record accepted, in order.
    public var records: [ContinuityRecord] { state.withLock { $0.records } }
}
