import Testing
import UnderstudyCore

@Suite("Snapshot catch-up")
struct SnapshotCatchUpTests {
    static func applied(_ actions: [SnapshotCatchUp<String>.Action]) -> [Int64] {
        actions.flatMap { action -> [Int64] in
            if case .apply(let updates) = action { updates.map(\.sequence) } else { [] }
        }
    }

    static func gaps(_ actions: [SnapshotCatchUp<String>.Action]) -> [ClosedRange<Int64>] {
        actions.compactMap { action in
            if case .reportGap(let first, let count) = action { first...(first + count - 1) } else { nil }
        }
    }

    @Test func bootstrap_appliesWhatArrivedAfterTheSnapshot_andNothingTwice() {
        var catchUp = SnapshotCatchUp<String>(bootstrapping: true)
        for sequence in Int64(8)...12 { #expect(catchUp.received(sequence: sequence, update: "u\(sequence)").isEmpty) }
        let actions = catchUp.snapshotLoaded(at: 10)
        #expect(Self.applied(actions) == [11, 12] && Self.gaps(actions).isEmpty)
        #expect(Self.applied(catchUp.received(sequence: 13, update: "u13")) == [13])
        #expect(catchUp.lastApplied == 13)
    }

    @Test func bootstrap_withASnapshotOlderThanTheFeedItKept_reportsTheGap() {
        var catchUp = SnapshotCatchUp<String>(bootstrapping: true)
        _ = catchUp.received(sequence: 20, update: "u20")
        let actions = catchUp.snapshotLoaded(at: 15)
        #expect(Self.gaps(actions) == [16...19] && Self.applied(actions) == [20])
    }

    @Test func bootstrap_withASnapshotNewerThanEverythingKept_goesLiveFromTheSnapshot() {
        var catchUp = SnapshotCatchUp<String>(bootstrapping: true)
        _ = catchUp.received(sequence: 5, update: "u5")
        #expect(catchUp.snapshotLoaded(at: 9).isEmpty && catchUp.lastApplied == 9)
        #expect(Self.applied(catchUp.received(sequence: 9, update: "u9")).isEmpty)
        #expect(Self.applied(catchUp.received(sequence: 10, update: "u10")) == [10])
    }

    @Test func live_reportsAJumpInTheFeed_andIgnoresOldUpdates() {
        var catchUp = SnapshotCatchUp<String>(bootstrapping: false)
        _ = catchUp.received(sequence: 3, update: "u3")
        let actions = catchUp.received(sequence: 6, update: "u6")
        #expect(Self.gaps(actions) == [4...5] && Self.applied(actions) == [6])
        #expect(Self.applied(catchUp.received(sequence: 6, update: "again")).isEmpty)
    }
}
