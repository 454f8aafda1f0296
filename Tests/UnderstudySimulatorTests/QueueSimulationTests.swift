import Testing
import UnderstudyCore
import UnderstudySimulator

/// How a failing seed is reported: the violation, the last events and the seed to replay.
private func report(_ result: QueueSimulationResult) -> Comment {
    guard let violation = result.violation else { return "seed \(result.seed) passed" }
    return Comment(rawValue: "seed \(result.seed): \(violation)\n" + violation.recentTrace.joined(separator: "\n"))
}

private func run(seed: UInt64, _ options: QueueSimulationOptions) throws -> QueueSimulationResult {
    var simulation = try QueueSimulation(seed: seed, options: options)
    return simulation.run()
}

@Suite struct QueueSimulationTests {
    @Test func test_twoHundredSeeds_withEveryFault_holdEveryInvariant() throws {
        let options = QueueSimulationOptions()
        let summary = try QueueSimulationSummary(seeds: 1...200, options: options)
        #expect(summary.runs == 200)
        for failure in summary.failures.prefix(3) {
            Issue.record(report(failure))
        }
        #expect(summary.done + summary.dead == 200 * options.jobs)
        #expect(summary.dead >= 200, "the job that always fails ends dead in every run")
        // The faults must bite: claims lost, work done again, commands killed, claims given back.
        #expect(summary.claimsLost > 200)
        #expect(summary.reRuns > 100)
        #expect(summary.released > 0)
        for fault in QueueFault.allCases where fault != .loss && fault != .drift {
            #expect(summary.injected[fault, default: 0] > 50, "\(fault) struck only \(summary.injected[fault, default: 0]) times")
        }
    }

    @Test func test_manyWorkersAndJobs_withEveryFault_holdEveryInvariant() throws {
        let options = QueueSimulationOptions(workers: 6, jobs: 60, concurrency: 3)
        let summary = try QueueSimulationSummary(seeds: 1...40, options: options)
        for failure in summary.failures.prefix(3) {
            Issue.record(report(failure))
        }
    }

    @Test func test_faultFree_everyJobRunsUntilItsOutcome_noClaimIsLost() throws {
        let options = QueueSimulationOptions(faults: [])
        let summary = try QueueSimulationSummary(seeds: 1...50, options: options)
        for failure in summary.failures.prefix(3) {
            Issue.record(report(failure))
        }
        #expect(summary.claimsLost == 0)
        // The two findings of QueueWorkerStateMachineTests' "found by the simulator" tests, fixed.
        #expect(summary.lostButRecorded == 0)
        #expect(summary.reRuns == 0)
        #expect(summary.claimsIgnored == 0)
        #expect(summary.dead == 50, "only the job that always fails is dead")
        #expect(summary.deadByLostClaims == 0)
        #expect(summary.completionTimes.count == 50 * options.jobs)
    }

    @Test func test_sameSeed_twice_givesIdenticalTrace() throws {
        let first = try run(seed: 4_242, QueueSimulationOptions())
        let second = try run(seed: 4_242, QueueSimulationOptions())
        #expect(first.traceHash == second.traceHash)
        #expect(first.traceLength == second.traceLength)
        #expect(first == second)
        let other = try run(seed: 4_243, QueueSimulationOptions())
        #expect(other.traceHash != first.traceHash)
    }

    @Test func test_manySeeds_twice_giveIdenticalSummaries() throws {
        let options = QueueSimulationOptions(workers: 4, jobs: 30)
        let first = try QueueSimulationSummary(seeds: 1...30, options: options)
        let second = try QueueSimulationSummary(seeds: 1...30, options: options)
        #expect(first.traceHash == second.traceHash)
        #expect(first == second)
    }

    // MARK: The checker can fail

    @Test func test_workerIgnoringTheFence_isCaughtWithinFiftySeeds() throws {
        let options = QueueSimulationOptions(weakening: .workerIgnoresFence)
        let summary = try QueueSimulationSummary(seeds: 1...50, options: options)
        let caught = summary.failures.compactMap(\.violation?.invariant)
        #expect(caught.contains { $0 == .exclusiveWork || $0 == .ordering }, "caught: \(caught)")
    }

    @Test func test_storeExpiringClaimsOneRenewIntervalEarly_isCaughtWithinAHundredSeeds() throws {
        // A frozen worker's command is killed I/4 before its work deadline, s + T − 3·I/4; a store that expires
        // the claim I early hands the job on from s + T − I on.
        let options = QueueSimulationOptions(faults: [.freeze], weakening: .storeExpiresEarly(by: .seconds(1)))
        let summary = try QueueSimulationSummary(seeds: 1...100, options: options)
        let caught = summary.failures.compactMap(\.violation?.invariant)
        #expect(caught.contains { $0 == .exclusiveWork || $0 == .ordering }, "caught: \(caught)")
    }

    @Test func test_watchdogGivenNoDeadlines_isCaughtWithinFiftySeeds() throws {
        // Only the worker process would then stop a command: a frozen one cannot.
        let options = QueueSimulationOptions(faults: [.freeze], weakening: .watchdogIgnoresDeadlines)
        let summary = try QueueSimulationSummary(seeds: 1...50, options: options)
        let caught = summary.failures.compactMap(\.violation?.invariant)
        #expect(caught.contains { $0 == .exclusiveWork || $0 == .ordering }, "caught: \(caught)")
    }

    @Test func test_frozenWorkers_haveTheirCommandsKilledByTheWatchdog_everyInvariantHolds() throws {
        let options = QueueSimulationOptions(faults: [.freeze, .drift])
        let summary = try QueueSimulationSummary(seeds: 1...100, options: options)
        for failure in summary.failures.prefix(3) {
            Issue.record(report(failure))
        }
        #expect(summary.injected[.freeze, default: 0] > 50)
        #expect(summary.claimsLost > 0, "no frozen worker held a claim past its fence")
    }

    @Test func test_invalidOptions_areRefusedWithAReason() {
        #expect(throws: QueueSimulationOptionsError.workersOutOfRange(0)) {
            _ = try QueueSimulation(seed: 1, options: QueueSimulationOptions(workers: 0))
        }
        #expect(throws: QueueSimulationOptionsError.jobsOutOfRange(0)) {
            _ = try QueueSimulation(seed: 1, options: QueueSimulationOptions(jobs: 0))
        }
        #expect(throws: QueueSimulationOptionsError.self) {
            _ = try QueueSimulation(seed: 1, options: QueueSimulationOptions(claimLease: .seconds(2), renewInterval: .seconds(1)))
        }
        #expect(throws: QueueSimulationOptionsError.nonPositiveCallTimeout) {
            _ = try QueueSimulation(seed: 1, options: QueueSimulationOptions(callTimeout: .zero))
        }
    }
}
