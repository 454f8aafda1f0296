import Testing
import UnderstudyCore

/// One member of a publisher group: inputs 1…n carry the payload [n]; the sink and the checkpoint are answered
/// by hand.
@Suite("Continuity state machine")
struct ContinuityStateMachineTests {
    static func machine(backlogLimit: Int = 100, backlogAge: Duration? = nil, batchLimit: Int = 100) throws -> ContinuityStateMachine {
        ContinuityStateMachine(configuration: try ContinuityConfiguration(backlogLimit: backlogLimit, backlogAge: backlogAge, batchLimit: batchLimit))
    }

    static func receive(_ sequences: ClosedRange<Int64>, into machine: inout ContinuityStateMachine, now: Instant = .zero) -> [ContinuityStateMachine.Action] {
        sequences.flatMap { machine.inputReceived(sequence: $0, payload: [UInt8($0 % 256)], now: now) }
    }

    static func messages(_ sequences: ClosedRange<Int64>) -> [ContinuityRecord] {
        sequences.map { .message(sequence: $0, payload: [UInt8($0 % 256)]) }
    }

    /// Activates `machine` with `token` and answers its checkpoint read with `position`.
    static func activate(_ machine: inout ContinuityStateMachine, token: UInt64, confirmed position: Int64) -> [ContinuityStateMachine.Action] {
        let read = machine.activated(FencingToken(rawValue: token), now: .zero)
        guard case .readConfirmation(let id) = read.first, read.count == 1 else {
            Issue.record("activation did not read the checkpoint: \(read)")
            return []
        }
        return machine.confirmationRead(position, for: id, now: .zero)
    }

    @Test func standby_keepsWhatItWouldHaveSent_andTrimsItAsTheCheckpointPasses() throws {
        var machine = try Self.machine()
        #expect(Self.receive(1...10, into: &machine).isEmpty)
        #expect(machine.backlogCount == 10)
        guard case .readConfirmation(let id) = machine.tick(now: .zero).first else { Issue.record("no read"); return }
        #expect(machine.tick(now: .zero).isEmpty)  // one read at a time
        #expect(machine.confirmationRead(7, for: id, now: .zero).isEmpty)
        #expect(machine.backlogCount == 3 && machine.confirmed == 7)
        // Inputs the checkpoint has already passed are not kept.
        var late = try Self.machine()
        guard case .readConfirmation(let lateRead) = late.tick(now: .zero).first else { Issue.record("no read"); return }
        _ = late.confirmationRead(5, for: lateRead, now: .zero)
        _ = Self.receive(1...6, into: &late)
        #expect(late.backlogCount == 1)
    }

    @Test func activation_resendsEverythingAfterTheConfirmedPosition_inOrder_underTheNewToken_thenGoesLive() throws {
        var machine = try Self.machine()
        _ = Self.receive(1...10, into: &machine)
        let actions = Self.activate(&machine, token: 7, confirmed: 6)
        #expect(actions == [.resend(from: 7, count: 4), .publish(Self.messages(7...10), token: token(7))])
        // Live input waits for the batch in flight, then goes out in the next one.
        #expect(Self.receive(11...12, into: &machine).isEmpty)
        #expect(machine.sinkAnswered(.accepted(position: 10, duplicates: 0), now: .zero)
            == [.confirm(position: 10, token: token(7)), .publish(Self.messages(11...12), token: token(7))])
        // The next confirmation waits for the one in flight.
        #expect(machine.sinkAnswered(.accepted(position: 12, duplicates: 0), now: .zero).isEmpty)
        #expect(machine.confirmationWritten(.accepted(Checkpoint(value: [], token: token(7), version: 1)), now: .zero)
            == [.confirm(position: 12, token: token(7))])
        #expect(machine.backlogCount == 2 && machine.confirmed == 10)
    }

    @Test func activation_readsTheCheckpointAfresh_notAnAnswerToAReadSentBefore() throws {
        var machine = try Self.machine()
        _ = Self.receive(1...4, into: &machine)
        guard case .readConfirmation(let before) = machine.tick(now: .zero).first else { Issue.record("no read"); return }
        guard case .readConfirmation(let after) = machine.activated(token(2), now: .zero).first else { Issue.record("no read"); return }
        #expect(machine.confirmationRead(1, for: before, now: .zero).isEmpty)
        #expect(machine.confirmationRead(3, for: after, now: .zero) == [.resend(from: 4, count: 1), .publish(Self.messages(4...4), token: token(2))])
    }

    @Test func sinkSkippingDuplicates_movesThePublisherToTheSinksPosition() throws {
        var machine = try Self.machine()
        _ = Self.receive(1...10, into: &machine)
        _ = Self.activate(&machine, token: 3, confirmed: 2)
        // The old active had published up to 8 without confirming it: the sink skips 3…8 and takes 9…10.
        #expect(machine.sinkAnswered(.accepted(position: 10, duplicates: 6), now: .zero) == [.confirm(position: 10, token: token(3))])
    }

    @Test func interruptionOutlastingTheBacklog_isPublishedAndReportedAsAGap() throws {
        var machine = try Self.machine(backlogLimit: 3)
        _ = Self.receive(1...10, into: &machine)
        #expect(machine.backlogCount == 3)
        let actions = Self.activate(&machine, token: 4, confirmed: 2)
        #expect(actions == [
            .resend(from: 3, count: 3), .reportGap(first: 3, count: 5),
            .publish([.gap(first: 3, count: 5)] + Self.messages(8...10), token: token(4)),
        ])
    }

    @Test func backlogAge_dropsOldMessages_andALostInputInTheMiddleIsAGapToo() throws {
        var machine = try Self.machine(backlogAge: .seconds(5))
        _ = Self.receive(1...3, into: &machine, now: at(.zero))
        _ = Self.receive(5...6, into: &machine, now: at(.seconds(4)))  // 4 never arrived
        _ = machine.tick(now: at(.seconds(6)))
        #expect(machine.backlogCount == 2)
        let actions = Self.activate(&machine, token: 1, confirmed: 0)
        #expect(actions.contains(.publish([.gap(first: 1, count: 4)] + Self.messages(5...6), token: token(1))))
        #expect(actions.contains(.reportGap(first: 1, count: 4)))
    }

    @Test func activeThatLostEveryKeptMessage_reportsTheGapUpToItsLastInput() throws {
        var machine = try Self.machine(backlogAge: .seconds(1))
        _ = Self.receive(1...5, into: &machine, now: at(.zero))
        _ = machine.tick(now: at(.seconds(2)))
        #expect(Self.activate(&machine, token: 1, confirmed: 2) == [.resend(from: 3, count: 0), .reportGap(first: 3, count: 3), .publish([.gap(first: 3, count: 3)], token: token(1))])
    }

    @Test func batches_areBoundedAndFollowEachOther() throws {
        var machine = try Self.machine(batchLimit: 4)
        _ = Self.receive(1...6, into: &machine)
        #expect(Self.activate(&machine, token: 1, confirmed: 0).last == .publish(Self.messages(1...4), token: token(1)))
        #expect(machine.sinkAnswered(.accepted(position: 4, duplicates: 0), now: .zero).last == .publish(Self.messages(5...6), token: token(1)))
    }

    @Test func staleEpochOrRefusedCheckpoint_fencesThePublisherUntilItActivatesAgain() throws {
        var machine = try Self.machine()
        _ = Self.receive(1...3, into: &machine)
        _ = Self.activate(&machine, token: 5, confirmed: 0)
        #expect(machine.sinkAnswered(.staleEpoch(current: token(6)), now: .zero) == [.fenced(token(5), reason: "the sink accepted the newer epoch 6")])
        #expect(Self.receive(4...5, into: &machine).isEmpty && machine.publishingToken == nil)
        #expect(machine.tick(now: .zero).isEmpty)

        var other = try Self.machine()
        _ = Self.receive(1...3, into: &other)
        _ = Self.activate(&other, token: 5, confirmed: 0)
        _ = other.sinkAnswered(.accepted(position: 3, duplicates: 0), now: .zero)
        let actions = other.confirmationWritten(.rejected(.superseded(by: token(6))), now: .zero)
        #expect(actions.count == 1 && other.publishingToken == nil)
        // Deactivated and activated again, it re-sends what is still unconfirmed.
        _ = other.deactivated(now: .zero)
        #expect(Self.activate(&other, token: 8, confirmed: 1).first == .resend(from: 2, count: 2))
    }

    @Test func failedSinkWrite_isRetriedAfterTheDelay_withTheSameRecords() throws {
        var machine = try Self.machine()
        _ = Self.receive(1...2, into: &machine, now: at(.zero))
        _ = Self.activate(&machine, token: 1, confirmed: 0)
        #expect(machine.sinkFailed(now: at(.zero)).isEmpty)
        #expect(Self.receive(3...3, into: &machine, now: at(.milliseconds(50))).isEmpty)
        #expect(machine.tick(now: at(.milliseconds(100))) == [.publish(Self.messages(1...3), token: token(1))])
    }

    @Test func newMember_isCaughtUp_onceTheConfirmedPositionReachesBackToItsFirstMessage() throws {
        var machine = try Self.machine()
        _ = Self.receive(40...50, into: &machine)
        #expect(!machine.isCaughtUp)  // it has not read the checkpoint yet
        guard case .readConfirmation(let first) = machine.tick(now: .zero).first else { Issue.record("no read"); return }
        _ = machine.confirmationRead(30, for: first, now: .zero)
        #expect(!machine.isCaughtUp)  // 31…39 are unconfirmed and it never had them
        guard case .readConfirmation(let second) = machine.tick(now: .zero).first else { Issue.record("no read"); return }
        _ = machine.confirmationRead(39, for: second, now: .zero)
        #expect(machine.isCaughtUp)
    }

    @Test func duplicateInput_isIgnoredAndSaysSo() throws {
        var machine = try Self.machine()
        _ = Self.receive(1...3, into: &machine)
        #expect(machine.inputReceived(sequence: 2, payload: [], now: .zero) == [.ignoredInput(sequence: 2, last: 3)])
        #expect(machine.backlogCount == 3)
    }

    @Test func answersThatComeTooLateOrOutOfTurn_changeNothing() throws {
        var machine = try Self.machine()
        _ = Self.receive(1...3, into: &machine)
        #expect(machine.sinkAnswered(.accepted(position: 3, duplicates: 0), now: .zero).isEmpty)
        #expect(machine.confirmationWritten(.accepted(Checkpoint(value: [], token: token(1), version: 1)), now: .zero).isEmpty)
        #expect(machine.confirmed == 0 && machine.backlogCount == 3)
    }

    @Test func backlogPosition_roundTripsAndRejectsWhatIsNotOne() {
        #expect(ContinuityPosition.decode(ContinuityPosition.encode(1_234)) == 1_234)
        #expect(ContinuityPosition.decode(nil) == 0)
        #expect(ContinuityPosition.decode(Array("x1".utf8)) == nil && ContinuityPosition.decode(Array("-1".utf8)) == nil)
    }

    @Test func configuration_refusesEmptyBounds() {
        #expect(throws: ConfigurationError.nonPositiveLimit(name: "backlog limit", 0)) { try ContinuityConfiguration(backlogLimit: 0) }
        #expect(throws: ConfigurationError.self) { try ContinuityConfiguration(backlogAge: .zero) }
    }
}

@Suite("Continuity sink rule")
struct ContinuitySinkRuleTests {
    static func messages(_ sequences: ClosedRange<Int64>) -> [ContinuityRecord] {
        sequences.map { .message(sequence: $0, payload: []) }
    }

    @Test func rule_appendsTheNext_skipsLeadingDuplicates_refusesHolesOverlapsAndOlderEpochs() {
        let stream = ContinuityStream(epoch: token(4), position: 5)
        let next = ContinuitySinkRule.append(Self.messages(4...7), epoch: token(4), to: stream)
        #expect(next.answer == .accepted(position: 7, duplicates: 2) && next.appended == Self.messages(6...7))
        #expect(next.stream == ContinuityStream(epoch: token(4), position: 7))
        #expect(ContinuitySinkRule.append(Self.messages(7...7), epoch: token(4), to: stream).answer == .outOfSequence(position: 5))
        #expect(ContinuitySinkRule.append([.gap(first: 5, count: 2)], epoch: token(4), to: stream).answer == .outOfSequence(position: 5))
        #expect(ContinuitySinkRule.append(Self.messages(6...6) + Self.messages(3...3), epoch: token(4), to: stream).answer == .outOfSequence(position: 5))
        #expect(ContinuitySinkRule.append(Self.messages(6...6), epoch: token(3), to: stream).answer == .staleEpoch(current: token(4)))
        // A newer epoch takes the stream even with duplicates only, so the older one is fenced.
        #expect(ContinuitySinkRule.append(Self.messages(5...5), epoch: token(9), to: stream).stream.epoch == token(9))
    }
}
