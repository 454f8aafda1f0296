import Testing
import UnderstudyCore
import UnderstudyStore

/// ``JobQueueStore``: the semantics of ``JobQueueLedger``. Stores whose wall clock reads 0, so tokens count from 1.
public enum JobQueueConformance {
    static let lease = Duration.seconds(10)

    static func job(
        _ payload: String = "job", queue: String = "q", priority: Int = 0, delay: Duration = .zero, maxAttempts: Int = 3,
        idempotencyKey: String? = nil, orderingKey: String? = nil
    ) throws -> JobSpec {
        try JobSpec(
            queue: QueueName(queue), payload: Array(payload.utf8), priority: priority, delay: delay, maxAttempts: maxAttempts,
            idempotencyKey: idempotencyKey, orderingKey: orderingKey
        )
    }

    static func worker(_ name: String) throws -> WorkerID {
        WorkerID(id: try MemberID(name), incarnation: "\(name)-1")
    }

    static func claim(_ store: any JobQueueStore, _ name: String = "w", queue: String = "q", limit: Int = 10) async throws -> [JobClaim] {
        try await store.claim(queue: QueueName(queue), worker: worker(name), limit: limit, lease: lease)
    }

    static func payloads(_ claims: [JobClaim]) -> [String] {
        claims.map { String(decoding: $0.payload, as: UTF8.self) }
    }

    public static let checks: [ConformanceCheck<any JobQueueStore>] = [
        ConformanceCheck("claim_deliversPayloadAttemptAndAFirstToken_andCompletionIsRecordedOnce") { context in
            let store = try await context.store()
            let bytes: [UInt8] = [0, 255, 10, 0, 13, 7]
            let ids = try await store.enqueue([try JobSpec(queue: QueueName("q"), payload: bytes), try job("second")])
            #expect(ids.map(\.deduplicated) == [false, false])
            #expect(ids[0].id < ids[1].id)
            let claims = try await claim(store, limit: 1)
            #expect(claims.map(\.id) == [ids[0].id])
            #expect(claims.first?.payload == bytes)
            #expect(claims.first?.attempt == 1)
            #expect(claims.first?.token == FencingToken(rawValue: 1))
            let first = try #require(claims.first)
            #expect(try await store.record([.completed(first.reference)]) == [.recorded(.done)])
            #expect(try await store.record([.completed(first.reference)]) == [.stale])
            #expect(try await store.job(first.id)?.state == .done)
            #expect(try await claim(store).map(\.id) == [ids[1].id])
        },

        ConformanceCheck("claim_goesByPriorityThenAvailabilityThenID_withinItsQueueAndLimit") { context in
            let store = try await context.store()
            _ = try await store.enqueue([
                try job("low", priority: -5), try job("a"), try job("other", queue: "elsewhere"), try job("high", priority: 7),
                try job("b"), try job("later", delay: .seconds(1)),
            ])
            context.clock.advance(by: .seconds(2))
            #expect(payloads(try await claim(store, limit: 2)) == ["high", "a"])
            #expect(payloads(try await claim(store, limit: 10)) == ["b", "later", "low"])
            #expect(try await claim(store).isEmpty)
            #expect(payloads(try await claim(store, queue: "elsewhere")) == ["other"])
        },

        ConformanceCheck("delay_keepsAJobScheduledUntilItsRunAtOnTheStoreClock") { context in
            let store = try await context.store()
            let id = try await store.enqueue([try job(delay: .seconds(5))])[0].id
            #expect(try await store.job(id)?.state == .scheduled)
            #expect(try await claim(store).isEmpty)
            context.clock.advance(by: .milliseconds(4_999))
            #expect(try await claim(store).isEmpty)
            context.clock.advance(by: .milliseconds(1))
            #expect(try await store.job(id)?.state == .pending)
            #expect(try await claim(store).map(\.id) == [id])
        },

        ConformanceCheck("idempotencyKey_returnsTheJobThatHoldsIt_inItsQueueOnly_untilDeleted") { context in
            let store = try await context.store()
            let first = try await store.enqueue([try job("one", idempotencyKey: "k")])[0]
            let again = try await store.enqueue([try job("two", idempotencyKey: "k"), try job("three", queue: "other", idempotencyKey: "k")])
            #expect(again[0] == Enqueued(id: first.id, deduplicated: true))
            #expect(again[1].deduplicated == false)
            let one = try #require(try await claim(store).first)
            #expect(payloads([one]) == ["one"])
            _ = try await store.record([.completed(one.reference)])
            #expect(try await store.enqueue([try job("four", idempotencyKey: "k")])[0] == Enqueued(id: first.id, deduplicated: true))
            context.clock.advance(by: .seconds(60))
            #expect(try await store.prune(retention: .seconds(60), limit: 100) == 1)
            #expect(try await store.enqueue([try job("five", idempotencyKey: "k")])[0].deduplicated == false)
        },

        ConformanceCheck("orderingKey_runsItsJobsOneAtATimeInEnqueueOrder_andADeadJobDoesNotBlockIt") { context in
            let store = try await context.store()
            _ = try await store.enqueue([
                try job("k1", maxAttempts: 1, orderingKey: "k"), try job("free"), try job("k2", orderingKey: "k"),
                try job("k3", priority: 9, orderingKey: "k"),
            ])
            let first = try await claim(store)
            #expect(payloads(first) == ["k1", "free"])
            #expect(try await claim(store).isEmpty)
            let k1 = try #require(first.first)
            #expect(try await store.record([.failed(k1.reference, error: "boom", retryAfter: .zero)]) == [.recorded(.dead)])
            #expect(payloads(try await claim(store)) == ["k2"])
        },

        ConformanceCheck("expiredClaim_isClaimableAtOnce_withALargerToken_andTheOldOutcomeIsStale") { context in
            let store = try await context.store()
            let id = try await store.enqueue([try job()])[0].id
            let first = try #require(try await claim(store, "a").first)
            context.clock.advance(by: lease - .milliseconds(1))
            #expect(try await claim(store, "b").isEmpty)
            #expect(try await store.job(id)?.state == .running)
            context.clock.advance(by: .milliseconds(1))
            #expect(try await store.job(id)?.state == .pending)
            let second = try #require(try await claim(store, "b").first)
            #expect(second.id == id)
            #expect(second.attempt == 2)
            #expect(second.token > first.token)
            #expect(second.waited == .zero)
            #expect(try await store.renew([first.reference], lease: lease) == [false])
            #expect(try await store.record([.completed(first.reference)]) == [.stale])
            #expect(try await store.record([.completed(second.reference)]) == [.recorded(.done)])
        },

        ConformanceCheck("renew_extendsEveryValidClaimFromNow_andReportsTheLostOnes") { context in
            let store = try await context.store()
            _ = try await store.enqueue([try job("a"), try job("b")])
            let claims = try await claim(store)
            context.clock.advance(by: .seconds(6))
            let bogus = ClaimReference(id: claims[1].id, token: FencingToken(rawValue: 99))
            #expect(try await store.renew([claims[0].reference, bogus], lease: lease) == [true, false])
            context.clock.advance(by: .seconds(6))
            #expect(try await store.renew([claims[0].reference, claims[1].reference], lease: lease) == [true, false])
            #expect(try await store.record([.completed(claims[0].reference)]) == [.recorded(.done)])
        },

        ConformanceCheck("failure_retriesAfterItsBackoff_thenGoesToTheDeadLetterWithItsError_andRedriveRevivesIt") { context in
            let store = try await context.store()
            let id = try await store.enqueue([try job(maxAttempts: 2)])[0].id
            let first = try #require(try await claim(store).first)
            #expect(try await store.record([.failed(first.reference, error: "first", retryAfter: .seconds(3))]) == [.recorded(.scheduled)])
            #expect(try await store.job(id)?.state == .scheduled)
            #expect(try await claim(store).isEmpty)
            context.clock.advance(by: .seconds(3))
            let second = try #require(try await claim(store).first)
            #expect(second.attempt == 2)
            #expect(try await store.record([.failed(second.reference, error: "second", retryAfter: .seconds(3))]) == [.recorded(.dead)])
            let dead = try #require(try await store.job(id))
            #expect(dead.state == .dead)
            #expect(dead.lastError == "second")
            #expect(try await store.jobs(queue: QueueName("q"), state: .dead, after: nil, limit: 10).map(\.id) == [id])
            #expect(try await store.redrive(queue: QueueName("q"), ids: nil) == 1)
            let revived = try #require(try await claim(store).first)
            #expect(revived.attempt == 1)
            #expect(revived.token > second.token)
        },

        ConformanceCheck("claimExpiringOnTheLastAttempt_sendsTheJobToTheDeadLetter") { context in
            let store = try await context.store()
            let id = try await store.enqueue([try job(maxAttempts: 1)])[0].id
            _ = try await claim(store)
            context.clock.advance(by: lease)
            #expect(try await claim(store).isEmpty)
            let dead = try #require(try await store.job(id))
            #expect(dead.state == .dead)
            #expect(dead.lastError == JobQueueLedger.expiredOnLastAttempt(1))
        },

        ConformanceCheck("release_makesTheJobClaimableAtOnce_andTheAttemptDoesNotCount") { context in
            let store = try await context.store()
            _ = try await store.enqueue([try job(maxAttempts: 1)])
            let first = try #require(try await claim(store, "a").first)
            try await store.release([first.reference])
            let second = try #require(try await claim(store, "b").first)
            #expect(second.attempt == 1)
            #expect(second.token > first.token)
            #expect(try await store.renew([first.reference], lease: lease) == [false])
        },

        ConformanceCheck("cancel_endsAJobThatIsNotDone_andItsClaimIsLost") { context in
            let store = try await context.store()
            let ids = try await store.enqueue([try job("running"), try job("pending"), try job("done")]).map(\.id)
            let claims = try await claim(store)
            _ = try await store.record([.completed(claims[2].reference)])
            #expect(try await store.cancel(ids[0]) == .cancelled)
            #expect(try await store.cancel(ids[1]) == .cancelled)
            #expect(try await store.cancel(ids[2]) == .done)
            #expect(try await store.cancel(JobID(rawValue: 999_999)) == nil)
            #expect(try await store.renew([claims[0].reference], lease: lease) == [false])
            #expect(try await store.record([.completed(claims[1].reference)]) == [.stale])
            #expect(try await claim(store).isEmpty)
        },

        ConformanceCheck("prune_deletesDoneAndCancelledJobsAfterTheRetention_andKeepsTheDead") { context in
            let store = try await context.store()
            let ids = try await store.enqueue([try job("done"), try job("dead", maxAttempts: 1), try job("cancelled"), try job("waiting")]).map(\.id)
            let claims = try await claim(store, limit: 2)
            _ = try await store.record([.completed(claims[0].reference), .failed(claims[1].reference, error: "x", retryAfter: .zero)])
            _ = try await store.cancel(ids[2])
            context.clock.advance(by: .seconds(59))
            #expect(try await store.prune(retention: .seconds(60), limit: 100) == 0)
            context.clock.advance(by: .seconds(1))
            #expect(try await store.prune(retention: .seconds(60), limit: 1) == 1)
            #expect(try await store.prune(retention: .seconds(60), limit: 100) == 1)
            #expect(try await store.job(ids[0]) == nil)
            #expect(try await store.job(ids[2]) == nil)
            #expect(try await store.job(ids[1])?.state == .dead)
            #expect(try await store.job(ids[3])?.state == .pending)
        },

        ConformanceCheck("stats_countEveryStateByQueue_withTheOldestPendingAge") { context in
            let store = try await context.store()
            _ = try await store.enqueue([try job("a"), try job("b"), try job("c", delay: .seconds(30)), try job("z", queue: "zz")])
            context.clock.advance(by: .seconds(2))
            _ = try await claim(store, limit: 1)
            let stats = try await store.stats(queue: nil)
            #expect(stats.map(\.queue.rawValue) == ["q", "zz"])
            #expect(stats[0].counts == [.pending: 1, .running: 1, .scheduled: 1])
            #expect(stats[0].oldestPendingAge == .seconds(2))
            #expect(try await store.stats(queue: QueueName("zz")).map { $0.count(.pending) } == [1])
            #expect(try await store.stats(queue: QueueName("none")).isEmpty)
            let pending = try await store.jobs(queue: nil, state: .pending, after: nil, limit: 10)
            #expect(pending.map(\.queue.rawValue) == ["q", "zz"])
            #expect(pending.first?.payloadSize == 1)
            #expect(try await store.jobs(queue: nil, state: .pending, after: pending[0].id, limit: 10).map(\.id) == [pending[1].id])
        },

        ConformanceCheck("racingClaims_neverGiveOneJobToTwoWorkers") { context in
            let stores = try await context.stores(4)
            let specs = try (0..<200).map { try job("j\($0)") }
            _ = try await stores[0].enqueue(specs)
            let claimed = try await withThrowingTaskGroup(of: [JobID].self) { group in
                for index in 0..<8 {
                    let store = stores[index % stores.count]
                    group.addTask {
                        var mine: [JobID] = []
                        while true {
                            let claims = try await claim(store, "w\(index)", limit: 7)
                            if claims.isEmpty { return mine }
                            mine += claims.map(\.id)
                            _ = try await store.record(claims.map { .completed($0.reference) })
                        }
                    }
                }
                return try await group.reduce(into: [JobID]()) { $0 += $1 }
            }
            #expect(claimed.count == 200)
            #expect(Set(claimed).count == 200)
            #expect(try await stores[0].stats(queue: QueueName("q")).first?.counts == [.done: 200])
        },

        ConformanceCheck("enqueue_isAnnouncedToTheOtherHandles_ofItsQueueOnly") { context in
            let stores = try await context.stores(2)
            var announced = stores[1].enqueued(on: try QueueName("q")).makeAsyncIterator()
            _ = try await stores[0].enqueue([try job()])
            #expect(await announced.next() != nil)
        },
    ]
}
