import Foundation
import Logging
import UnderstudyCore
import UnderstudyStore

/// One message of the input feed every member of a publisher group receives: its sequence in the feed (1, 2, …)
/// becomes the sequence of its output record.
public struct FeedMessage: Hashable, Sendable {
    public let sequence: Int64
    public let payload: [UInt8]

    public init(sequence: Int64, payload: [UInt8]) {
        self.sequence = sequence
        self.payload = payload
    }
}

/// What a ``ContinuityPublisher`` reports, in order, besides its log and metrics.
public enum ContinuityEvent: Hashable, Sendable {
    /// Activated with `token`, the member re-sends the `count` unconfirmed messages it keeps after the confirmed
    /// position `from − 1` (0 when it has none), then goes live; `lastInput` is the last feed sequence it had
    /// received. Without a loss, `count` is `lastInput − from + 1` (or 0 when `lastInput` is older).
    case resending(token: FencingToken, from: Int64, count: Int, lastInput: Int64)
    /// Messages `first ..< first + count` were lost for good and published as a gap.
    case gap(first: Int64, count: Int64)
    /// The sink or the checkpoint refused `token`: another member took over.
    case fenced(FencingToken, reason: String)
    /// The member joined its group, caught up (see ``ContinuityStateMachine/isCaughtUp``) or, when `caughtUp` is
    /// false, because the warm-up ran out: taking over before it catches up would publish a gap.
    case joined(caughtUp: Bool)
    /// The member deactivated: it publishes no more and keeps its backlog as a standby.
    case deactivated(DeactivationReason)
    /// The sink accepted a batch: the stream's position is now `position`; `duplicates` records of the batch were
    /// already there (sent by the previous active before it stopped, unconfirmed).
    case published(token: FencingToken, position: Int64, duplicates: Int)
}

/// Publishes the output of a group whose members all receive the same feed, so the output stream crosses failover
/// with no hole and no duplicate: it drives ``ContinuityStateMachine`` with a ``Member``'s activations, a fenced
/// checkpoint (the confirmed position) and a ``ContinuitySink``.
///
/// ```swift
/// let publisher = ContinuityPublisher(member: member, checkpoints: store, checkpoint: try CheckpointName("feed"), sink: sink)
/// try await publisher.run(feed: messages)  // runs the member too, until graceful shutdown or cancellation
/// ```
///
/// The publisher consumes the member's ``Member/events``; the member MUST NOT be run by anyone else.
public actor ContinuityPublisher {
    /// Resending, gap, fenced, deactivated and published events, in order. Single consumer; the newest 4,096 are buffered.
    public nonisolated let events: AsyncStream<ContinuityEvent>

    private let member: Member
    private let checkpoints: any CheckpointStore
    private let checkpoint: CheckpointName
    private let sink: any ContinuitySink
    private let pollInterval: Duration
    private let warmUp: Duration
    private var machine: ContinuityStateMachine
    private var logger: Logger
    private let metrics: ContinuityMetrics
    private let eventSink: AsyncStream<ContinuityEvent>.Continuation
    private let inputs: AsyncStream<Input>.Continuation
    private let inputStream: AsyncStream<Input>

    private enum Input: Sendable {
        case feed(FeedMessage)
        case member(MemberEvent)
        case tick
        case read(ContinuityStateMachine.ReadID, Result<Int64, any Error>)
        case appended([ContinuityRecord], Result<ContinuityAppend, any Error>)
        case written(Result<CheckpointWrite, any Error>)
    }

    /// - Parameters:
    ///   - checkpoints: the store holding the group's checkpoints (usually the member's store).
    ///   - checkpoint: the checkpoint of the confirmed position; one per output stream.
    ///   - pollInterval: how often a standby reads the checkpoint to trim its backlog.
    ///   - warmUp: the longest the member waits, listening to the feed, before it joins its group without having
    ///     caught up (when no active confirms, nothing ever catches up).
    public init(
        member: Member,
        checkpoints: any CheckpointStore,
        checkpoint: CheckpointName,
        sink: any ContinuitySink,
        configuration: ContinuityConfiguration = try! ContinuityConfiguration(),
        pollInterval: Duration = .milliseconds(200),
        warmUp: Duration = .seconds(10),
        logger: Logger = Logger(label: "understudy.continuity")
    ) {
        self.warmUp = warmUp
        self.member = member
        self.checkpoints = checkpoints
        self.checkpoint = checkpoint
        self.sink = sink
        self.pollInterval = pollInterval
        machine = ContinuityStateMachine(configuration: configuration)
        var logger = logger
        logger[metadataKey: "group"] = "\(member.configuration.name)"
        logger[metadataKey: "member"] = "\(member.id)"
        self.logger = logger
        metrics = ContinuityMetrics(group: member.configuration.name, member: member.id)
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(4_096))
        (inputStream, inputs) = AsyncStream.makeStream()
    }

    /// Listens to `feed`, joins the group once caught up (or after the warm-up) and publishes through the member
    /// until it leaves (graceful shutdown, cancellation, or ``Member/leave()``). A feed that ends leaves the member
    /// running, as a standby or an idle active.
    ///
    /// - Throws: what ``Member/run()`` throws.
    public func run<Feed: AsyncSequence & Sendable>(feed: Feed) async throws where Feed.Element == FeedMessage {
        let (inputs, member, pollInterval) = (inputs, member, pollInterval)
        defer { eventSink.finish() }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                for await event in member.events { inputs.yield(.member(event)) }
            }
            group.addTask {
                do {
                    for try await message in feed { inputs.yield(.feed(message)) }
                } catch where Task.isCancelled {}
            }
            group.addTask {
                while (try? await Task.sleep(for: pollInterval)) != nil { inputs.yield(.tick) }
            }
            let joinBy = MonotonicClock.now() + warmUp
            var joined = false
            for await input in inputStream {
                execute(handle(input), in: &group)
                if !joined, machine.isCaughtUp || MonotonicClock.now() >= joinBy {
                    joined = true
                    join(in: &group)
                }
            }
            group.cancelAll()
        }
    }

    /// Starts the member; the publisher ends when it has left.
    private func join(in group: inout ThrowingDiscardingTaskGroup<any Error>) {
        let (inputs, member, caughtUp) = (inputs, member, machine.isCaughtUp)
        if caughtUp {
            logger.info("caught up with the confirmed position: joining")
        } else {
            logger.warning("joining before catching up: a takeover now would publish a gap", metadata: ["warm_up": "\(warmUp.formatted)"])
        }
        eventSink.yield(.joined(caughtUp: caughtUp))
        group.addTask {
            defer { inputs.finish() }
            try await member.run()
        }
    }

    /// How many unconfirmed messages the member keeps.
    public var backlogCount: Int { machine.backlogCount }

    // MARK: Loop

    private func handle(_ input: Input) -> [ContinuityStateMachine.Action] {
        let now = MonotonicClock.now()
        switch input {
        case .feed(let message):
            return machine.inputReceived(sequence: message.sequence, payload: message.payload, now: now)
        case .member(.activate(let token)):
            return machine.activated(token, now: now)
        case .member(.deactivate(let reason)):
            eventSink.yield(.deactivated(reason))
            return machine.deactivated(now: now)
        case .member(.prepareToActivate), .member(.prepareWithdrawn):
            return []
        case .tick:
            return machine.tick(now: now)
        case .read(let id, .success(let position)):
            return machine.confirmationRead(position, for: id, now: now)
        case .read(let id, .failure(let error)):
            logger.warning("reading the confirmed position failed", metadata: ["error": "\(error)"])
            return machine.confirmationReadFailed(id, now: now)
        case .appended(let records, .success(let answer)):
            if case .accepted(let position, let duplicates) = answer, let token = machine.publishingToken {
                let fresh = records.dropFirst(duplicates).count { if case .message = $0 { true } else { false } }
                metrics.published.increment(by: fresh)
                eventSink.yield(.published(token: token, position: position, duplicates: duplicates))
            }
            return machine.sinkAnswered(answer, now: now)
        case .appended(_, .failure(let error)):
            logger.warning("writing to the sink failed; writing again", metadata: ["error": "\(error)"])
            return machine.sinkFailed(now: now)
        case .written(.success(let write)):
            return machine.confirmationWritten(write, now: now)
        case .written(.failure(let error)):
            logger.warning("confirming the position failed", metadata: ["error": "\(error)"])
            return machine.confirmationWriteFailed(now: now)
        }
    }

    private func execute(_ actions: [ContinuityStateMachine.Action], in group: inout ThrowingDiscardingTaskGroup<any Error>) {
        metrics.backlog.record(machine.backlogCount)
        for action in actions {
            let (inputs, checkpoints, checkpoint, sink, groupName) = (inputs, checkpoints, checkpoint, sink, member.configuration.name)
            switch action {
            case .readConfirmation(let id):
                group.addTask {
                    let result = await Result(awaiting: { () async throws -> Int64 in
                        let value = try await checkpoints.checkpoint(of: groupName, named: checkpoint)?.value
                        guard let position = ContinuityPosition.decode(value) else {
                            throw StoreError(.corrupt, "checkpoint \"\(checkpoint)\" of group \"\(groupName)\" holds no position")
                        }
                        return position
                    })
                    inputs.yield(.read(id, result))
                }
            case .publish(let records, let token):
                group.addTask {
                    let result = await Result(awaiting: { try await sink.append(records, epoch: token) })
                    inputs.yield(.appended(records, result))
                }
            case .confirm(let position, let token):
                group.addTask {
                    let result = await Result(awaiting: {
                        try await checkpoints.writeCheckpoint(of: groupName, named: checkpoint, value: ContinuityPosition.encode(position), token: token)
                    })
                    inputs.yield(.written(result))
                }
            case .resend(let from, let count):
                guard let token = machine.publishingToken else { continue }
                let lastInput = machine.lastInput ?? 0
                logger.notice("re-sending the unconfirmed window", metadata: [
                    "token": "\(token)", "from": "\(from)", "count": "\(count)", "last_input": "\(lastInput)",
                ])
                metrics.resent.increment(by: count)
                eventSink.yield(.resending(token: token, from: from, count: count, lastInput: lastInput))
            case .reportGap(let first, let count):
                logger.error("messages lost for good: publishing a gap", metadata: ["first": "\(first)", "count": "\(count)"])
                metrics.gapMessages.increment(by: Int(count))
                eventSink.yield(.gap(first: first, count: count))
            case .fenced(let token, let reason):
                logger.warning("fenced: publishing stops", metadata: ["token": "\(token)", "reason": "\(reason)"])
                metrics.fenced.increment()
                eventSink.yield(.fenced(token, reason: reason))
            case .ignoredInput(let sequence, let last):
                logger.debug("ignored an old feed message", metadata: ["sequence": "\(sequence)", "last": "\(last)"])
            }
        }
    }
}

extension Result where Failure == any Error {
    fileprivate init(awaiting body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
