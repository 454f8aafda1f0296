import Testing
import UnderstudyCore
import UnderstudySimulator

/// How a failing seed is reported: the violation, the last events and the seed to replay.
private func report(_ result: PartitionSimulationResult) -> Comment {
    guard let violation = result.violation else { return "seed \(result.seed) passed" }
    return Comment(rawValue: "seed \(result.seed): \(violation)\n" + violation.recentTrace.joined(separator: "\n"))
}

private func run(seed: UInt64, _ options: PartitionSimulationOptions) throws -> PartitionSimulationResult {
    var simulation = try PartitionSimulation(seed: seed, options: options)
    return simulation.run()
}

/// The first seed in `seeds` whose run breaks an invariant.
private func firstFailure(_ options: PartitionSimulationOptions, seeds: ClosedRange<UInt64>) throws -> PartitionSimulationResult? {
    for seed in seeds {
        let result = try run(seed: seed, options)
        if result.violation != nil { return result }
    }
    return nil
}

@Suite struct PartitionSimulationTests {
    @Test func test_hundredSeeds_withEveryFault_holdEveryInvariant() throws {
        let summary = try PartitionSimulationSummary(seeds: 1...100, options: PartitionSimulationOptions())
        #expect(summary.runs == 100)
        for failure in summary.failures {
            Issue.record(report(failure))
        }
        // The faults must bite, and membership changes of a steady group must be checked.
        for fault in PartitionFault.allCases where fault != .delay {
            #expect(summary.injected[fault, default: 0] > 20, "\(fault) struck only \(summary.injected[fault, default: 0]) times")
        }
        for kind in PartitionChangeKind.allCases {
            #expect(!summary.changes(kind).isEmpty, "no \(kind) of a steady group was checked")
        }
        #expect(summary.handovers > 100)
        #expect(summary.worstOverCeiling.map { $0 <= 0 } ?? false)
    }

    /// Found by this simulator: members that saw a join only after the first moved partition came free computed
    /// no more moves (a free partition meant "not a join" to ``PartitionAssignment``), so the newcomer kept one
    /// partition, below its share rounded down less one, and the sticky assignment never corrected it.
    @Test func test_aJoinWhoseFirstHandoverEndsBeforeTheOthersSeeIt_stillBringsTheNewcomerToItsShare() throws {
        let result = try run(seed: 46, PartitionSimulationOptions())
        #expect(result.violation == nil, "\(report(result))")
    }

    @Test func test_faultFree_settlesOnce_andNothingMoves() throws {
        let options = PartitionSimulationOptions(faults: [])
        let summary = try PartitionSimulationSummary(seeds: 1...50, options: options)
        for failure in summary.failures.prefix(3) {
            Issue.record(report(failure))
        }
        #expect(summary.recoveryTimes.count == 50)
        // One round trip per member per interval, for all its partitions.
        #expect(summary.heartbeatsPerMemberInterval.map { $0 < 1.05 } ?? false, "\(String(describing: summary.heartbeatsPerMemberInterval))")
    }

    @Test func test_sameSeed_twice_givesIdenticalTrace() throws {
        let first = try run(seed: 4_242, PartitionSimulationOptions())
        let second = try run(seed: 4_242, PartitionSimulationOptions())
        #expect(first == second)
        let other = try run(seed: 4_243, PartitionSimulationOptions())
        #expect(other.traceHash != first.traceHash)
    }

    // MARK: The checker can fail

    @Test(arguments: [
        (PartitionWeakening.storeGrantsHeldPartitions, PartitionInvariant.exclusiveWork),
        (.shellReportsStopEarly, .exclusiveWork),
        (.noWatchdog, .exclusiveWork),
        (.storeResetsTokens, .tokens),
        (.storeKeepsMemberships, .liveness),
        (.viewDropsLeases(probability: 1), .movement),
    ])
    func test_injectedBug_isCaughtByItsInvariant(weakening: PartitionWeakening, invariant: PartitionInvariant) throws {
        let failure = try firstFailure(PartitionSimulationOptions(weakening: weakening), seeds: 1...50)
        #expect(failure?.violation?.invariant == invariant, "\(weakening): \(failure.map(report) ?? "never caught")")
    }

    @Test func test_viewMissingSomeLeases_movesPartitionsInASteadyGroup() throws {
        let options = PartitionSimulationOptions(faults: [], weakening: .viewDropsLeases(probability: 0.05))
        let failure = try firstFailure(options, seeds: 1...20)
        #expect(failure?.violation?.invariant == .steadyState, "\(failure.map(report) ?? "never caught")")
    }

    @Test func test_invalidOptions_areRefusedWithAReason() {
        #expect(throws: PartitionSimulationOptionsError.membersOutOfRange(0)) {
            try PartitionSimulation(seed: 1, options: PartitionSimulationOptions(members: 0))
        }
        #expect(throws: PartitionSimulationOptionsError.invalidGroup(.partitionsOutOfRange(0))) {
            try PartitionSimulation(seed: 1, options: PartitionSimulationOptions(partitions: 0))
        }
    }
}
