import Testing
import UnderstudyCore

/// Whole groups of ``MemberStateMachine``s against one ``GroupLedger``, on a clock the test advances by hand.
/// Unless told otherwise I = 1s and T = 3s, so an active self-fences 2s after sending its last confirmed renewal.
@Suite("Group scenarios")
struct GroupScenarioTests {
    // MARK: Grant, renewal, expiry

    @Test func singleMember_activatesAtOnce_andKeepsItsLeaseWhileRenewing() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"))
        group.advance(by: .zero)
        #expect(group.timedEvents(a).map(\.at) == [.zero])
        #expect(group.events(a) == [.activate(token(1))])

        group.advance(to: at(.seconds(60)))
        #expect(group.events(a) == [.activate(token(1))])
        #expect(group.holders == [a])
        #expect(group.ledger.lastToken == token(1))
        #expect(group.node(a).leaseValidUntil.last == at(.milliseconds(62_500)))  // Sent at 60s, + T − I/2.
    }

    @Test func ranking_slotFreed_goesToHeaviestThenEarliestStandby() throws {
        let group = TestGroup(try Fixture.configuration())
        let active = group.join(try Fixture.member("active", weight: 100))
        group.advance(to: at(.milliseconds(500)))
        let light = group.join(try Fixture.member("light", weight: 10))
        let early = group.join(try Fixture.member("early", weight: 60))
        let late = group.join(try Fixture.member("late", weight: 60))
        group.advance(to: at(.seconds(5)))
        group.crash(active)
        group.advance(to: at(.seconds(15)))
        #expect(group.events(early) == [.activate(token(2))])
        #expect(group.events(late).isEmpty)
        #expect(group.events(light).isEmpty)
        #expect(group.ledger.lastToken == token(2))
    }

    /// Joiners that reach an empty group at once: the first applied sees nobody else and takes the slot; a
    /// heavier one then takes over by preemption. The group converges on the ranking.
    @Test func ranking_simultaneousJoiners_convergeOnTheHeaviest() throws {
        let group = TestGroup(try Fixture.configuration())
        let link = TestGroup.Link(toStore: .milliseconds(10), toMember: .milliseconds(10))
        let light = group.join(try Fixture.member("light", weight: 10), link: link)
        let heavy = group.join(try Fixture.member("heavy", weight: 90), link: link)
        let middle = group.join(try Fixture.member("middle", weight: 50), link: link)
        group.advance(to: at(.seconds(10)))
        #expect(group.events(light) == [.activate(token(1)), .deactivate(.preempted)])
        #expect(group.events(heavy) == [.prepareToActivate, .activate(token(2))])
        #expect(group.events(middle).isEmpty)
        #expect(group.holders == [heavy])
    }

    @Test func crashedActive_leaseExpiresAfterT_andNextInLineTakesOver() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        group.advance(to: at(.milliseconds(4_500)))
        group.crash(a)  // Its last heartbeat reached the store at 4s.

        group.advance(to: at(.seconds(7)) - .nanoseconds(1))
        #expect(group.events(b).isEmpty)
        group.advance(to: at(.seconds(8)))
        #expect(group.events(b) == [.activate(token(2))])
        let activatedAt = try #require(group.timedEvents(b).first?.at)
        #expect(activatedAt >= at(.seconds(7)))
        #expect(activatedAt < at(.seconds(8)))
    }

    // MARK: Self-fencing and slow stores

    @Test func storeUnreachable_activeSelfFencesAtSentPlusTMinusI_beforeStoreCanRegrant() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        group.advance(to: at(.milliseconds(4_500)))
        group.setLink(a) { $0.reachable = false }  // The renewal sent at 4s was the last to be confirmed.

        group.advance(to: at(.seconds(8)))
        let fence = try #require(group.timedEvents(a).last)
        #expect(fence.event == .deactivate(.selfFenced))
        #expect(fence.at == at(.seconds(6)))
        #expect(group.node(a).stopWorkBy.map(\.deadline) == [at(.milliseconds(6_500))])  // 4s + T − I/2

        // The store could grant the slot only once the lease expired at 4s + T.
        let takeover = try #require(group.timedEvents(b).first)
        #expect(takeover.event == .activate(token(2)))
        #expect(takeover.at >= at(.seconds(7)))
        #expect(takeover.at.nanoseconds - fence.at.nanoseconds >= Duration.seconds(1).nanoseconds)
    }

    @Test func slowStore_roundTripBelowTMinusTwoI_keepsRenewalsAlive() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"), link: .init(toStore: .milliseconds(450), toMember: .milliseconds(499)))
        group.advance(to: at(.seconds(60)))
        #expect(group.events(a) == [.activate(token(1))])
        #expect(group.ledger.lastToken == token(1))
    }

    @Test func slowStore_roundTripAboveTMinusTwoI_selfFences() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"), link: .init(toStore: .milliseconds(550), toMember: .milliseconds(550)))
        group.advance(to: at(.seconds(10)))
        #expect(Array(group.events(a).prefix(2)) == [.activate(token(1)), .deactivate(.selfFenced)])
    }

    @Test func lostReplies_activeSelfFences_thenSlotPassesAfterExpiry() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        group.advance(to: at(.milliseconds(2_500)))
        // The store keeps applying a's renewals but a never hears back: the store extends, a fences anyway.
        group.setLink(a) { $0.dropsReplies = true }
        group.advance(to: at(.seconds(4)) - .nanoseconds(1))
        #expect(group.events(a) == [.activate(token(1))])
        group.advance(to: at(.seconds(4)))
        #expect(group.events(a) == [.activate(token(1)), .deactivate(.selfFenced)])
        group.advance(to: at(.seconds(20)))
        #expect(group.events(b).first == .activate(token(2)))
    }

    @Test func renewal_lateReplyToOvertakenRequest_doesNotDeactivate() throws {
        let group = TestGroup(try Fixture.configuration(activation: .seconds(5)))
        let a = group.join(try Fixture.member("a"))
        group.advance(to: at(.milliseconds(500)))
        // The renewal sent at 1s is slow; the one sent at 2s overtakes it.
        group.setLink(a) { $0.toMember = .milliseconds(1_500) }
        group.advance(to: at(.milliseconds(1_500)))
        group.setLink(a) { $0.toMember = .zero }
        group.advance(to: at(.seconds(30)))
        #expect(group.events(a) == [.activate(token(1))])
    }

    // MARK: Resigning

    @Test func workEnded_releasesAtOnce_restsForT_thenCompetesAgain() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"))
        group.advance(to: at(.milliseconds(5_500)))
        group.endWork(a)
        group.advance(by: .zero)
        #expect(group.events(a) == [.activate(token(1)), .deactivate(.resigned)])
        #expect(group.holders.isEmpty)
        #expect(group.status(a) == .resting)

        group.advance(to: at(.milliseconds(8_500)) - .nanoseconds(1))
        #expect(group.events(a).count == 2)
        #expect(group.appliedIntents(a, since: at(.milliseconds(5_600))).allSatisfy { $0 == .none })

        group.advance(to: at(.seconds(10)))
        let last = try #require(group.timedEvents(a).last)
        #expect(last.event == .activate(token(2)))
        #expect(last.at == at(.milliseconds(8_500)))
    }

    @Test func workEnded_standbyTakesOverAtItsNextHeartbeat_andResterDoesNotPreemptBack() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        group.advance(to: at(.milliseconds(5_500)))
        group.endWork(a)
        group.advance(to: at(.seconds(6)))
        #expect(group.events(b) == [.activate(token(2))])
        group.advance(to: at(.seconds(30)))
        #expect(group.events(a) == [.activate(token(1)), .deactivate(.resigned)])
        #expect(group.events(b) == [.activate(token(2))])
        #expect(group.status(a) == .standby)
    }

    /// Known liveness gap: a standby whose heartbeats reach the store but whose replies never come back stays
    /// live and best-ranked in everyone's view, so no other standby takes the freed slot, and it never learns
    /// the slot is free. Nothing bounds this for a standby the way self-fencing bounds it for an active.
    @Test func halfDeafStandby_doesNotBlockTakeoverForever() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a", weight: 90))
        let b = group.join(try Fixture.member("b", weight: 50))
        let c = group.join(try Fixture.member("c", weight: 10))
        group.advance(to: at(.milliseconds(2_500)))
        group.setLink(b) { $0.dropsReplies = true }
        group.crash(a)
        group.advance(to: at(.seconds(60)))
        // b reports itself resting once it has heard nothing for T, so c takes the slot.
        #expect(group.activations.count == 2)
        #expect(group.holders == [c])
    }

    // MARK: Shutdown

    @Test func shutdown_ofActive_releasesOnLeave_standbyAcquiresAtNextHeartbeatWithoutWaitingForExpiry() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        group.setWorkStopDelay(a, .milliseconds(200))
        group.advance(to: at(.milliseconds(5_300)))
        group.shutdown(a)
        #expect(group.events(a).last == .deactivate(.shutdown))
        #expect(group.holders == [a])  // Kept until the work has stopped.

        group.advance(to: at(.milliseconds(5_500)))
        #expect(group.node(a).finished == .some(nil))
        #expect(group.appliedIntents(a, since: at(.milliseconds(5_500))) == [.leave(releasing: token(1))])
        #expect(group.holders.isEmpty)
        #expect(group.ledger.view(now: group.now).members.map(\.info.id.rawValue) == ["b"])

        // a's last renewal (sent at 5s) would have kept the slot until 8s.
        group.advance(to: at(.seconds(6)))
        #expect(group.timedEvents(b).map(\.at) == [at(.seconds(6))])
        #expect(group.events(b) == [.activate(token(2))])
    }

    @Test func shutdown_ofStandby_leavesWithoutDisturbingActive() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        group.advance(to: at(.milliseconds(2_500)))
        group.shutdown(b)
        group.advance(to: at(.seconds(10)))
        #expect(group.node(b).finished == .some(nil))
        #expect(group.events(b).isEmpty)
        #expect(group.events(a) == [.activate(token(1))])
        #expect(group.ledger.view(now: group.now).members.map(\.info.id.rawValue) == ["a"])
    }

    @Test func shutdown_whileAcquireInFlight_givesGrantedSlotBack() throws {
        let group = TestGroup(try Fixture.configuration())
        let link = TestGroup.Link(toStore: .milliseconds(100), toMember: .milliseconds(100))
        let a = group.join(try Fixture.member("a"), link: link)
        // a's acquire leaves at 200ms and is granted at 300ms; the shutdown comes in between.
        group.advance(to: at(.milliseconds(250)))
        group.shutdown(a)
        let b = group.join(try Fixture.member("b"))
        group.advance(to: at(.seconds(2)))
        #expect(group.events(a).isEmpty)
        #expect(group.node(a).finished == .some(nil))
        #expect(group.events(b) == [.activate(token(2))])
    }

    @Test func duplicateMemberID_secondProcessIsRejectedNamingTheFirst() throws {
        let group = TestGroup(try Fixture.configuration())
        let first = group.join(try Fixture.member("a", incarnation: "boot-1", pid: 101))
        group.advance(to: at(.seconds(1)))
        let second = group.join(try Fixture.member("a", incarnation: "boot-2", pid: 202))
        group.advance(to: at(.seconds(5)))
        let expected: HeartbeatRejection = .memberIDInUse(try MemberID("a"), host: "host-a", pid: 101)
        #expect(group.node(second).finished == .some(expected))
        #expect(group.events(second).isEmpty)
        #expect(group.events(first) == [.activate(token(1))])
    }

    @Test func activeGoalMismatch_memberIsRejectedAndFinishes() throws {
        let group = TestGroup(try Fixture.configuration(activeGoal: 1))
        let a = group.join(try Fixture.member("a"))
        group.advance(to: at(.seconds(1)))
        let b = group.join(try Fixture.member("b"), configuration: try Fixture.configuration(activeGoal: 2))
        group.advance(to: at(.seconds(5)))
        #expect(group.node(b).finished == .some(.activeGoalMismatch(group: Fixture.groupName, stored: 1, requested: 2)))
        #expect(group.events(b).isEmpty)
        #expect(group.events(a) == [.activate(token(1))])
    }

    // MARK: Preparation

    @Test func prepare_activeSilentForP_nextInLinePreparesThenActivatesWithoutWithdrawal() throws {
        let group = TestGroup(try Fixture.configuration(preparation: .milliseconds(1_500)))
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        let c = group.join(try Fixture.member("c"))
        group.advance(to: at(.milliseconds(4_500)))
        group.crash(a)  // Last heartbeat at 4s.

        group.advance(to: at(.seconds(10)))
        let events = group.timedEvents(b)
        #expect(events.map(\.event) == [.prepareToActivate, .activate(token(2))])
        #expect(events.first?.at == at(.seconds(6)))  // b's first heartbeat at or after 4s + P.
        #expect(events.last?.at == at(.seconds(7)))   // Lease expired at 4s + T.
        #expect(group.events(c).isEmpty)
    }

    @Test func prepare_withdrawnWhenActiveRecovers() throws {
        // T = 5s so the active can miss two heartbeats without fencing itself.
        let group = TestGroup(try Fixture.configuration(activation: .seconds(5), preparation: .milliseconds(1_500)))
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        group.advance(to: at(.milliseconds(4_500)))
        group.setLink(a) { $0.reachable = false }
        group.advance(to: at(.milliseconds(6_500)))
        group.setLink(a) { $0.reachable = true }
        group.advance(to: at(.seconds(12)))
        #expect(group.events(a) == [.activate(token(1))])
        #expect(group.timedEvents(b).map(\.event) == [.prepareToActivate, .prepareWithdrawn])
        #expect(group.timedEvents(b).map(\.at) == [at(.seconds(6)), at(.seconds(7))])
    }

    @Test func prepare_withdrawnAfterTwoTWithoutActivation() throws {
        let group = TestGroup(try Fixture.configuration(preparation: .milliseconds(1_500)))
        let a = group.join(try Fixture.member("a"))
        let b = group.join(try Fixture.member("b"))
        group.advance(to: at(.milliseconds(4_500)))
        group.crash(a)
        group.advance(to: at(.milliseconds(6_500)))
        #expect(group.events(b) == [.prepareToActivate])
        group.setLink(b) { $0.reachable = false }  // b can no longer reach the store to take the slot.

        group.advance(to: at(.seconds(12)) - .nanoseconds(1))
        #expect(group.events(b) == [.prepareToActivate])
        group.advance(to: at(.seconds(12)))
        #expect(group.events(b) == [.prepareToActivate, .prepareWithdrawn])

        group.setLink(b) { $0.reachable = true }
        group.advance(to: at(.seconds(20)))
        #expect(group.events(b) == [.prepareToActivate, .prepareWithdrawn, .activate(token(2))])
    }

    // MARK: Preemption

    @Test func preemption_heavierJoiner_preparesThenOrderlyHandover() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a", weight: 50))
        group.setWorkStopDelay(a, .milliseconds(300))
        group.advance(to: at(.milliseconds(5_200)))
        let b = group.join(try Fixture.member("b", weight: 90))
        group.advance(to: at(.seconds(15)))

        #expect(group.events(a) == [.activate(token(1)), .deactivate(.preempted)])
        #expect(group.events(b) == [.prepareToActivate, .activate(token(2))])
        let deactivatedAt = try #require(group.timedEvents(a).last?.at)
        let activatedAt = try #require(group.timedEvents(b).last?.at)
        #expect(deactivatedAt == at(.seconds(6)))  // a's first renewal after b joined.
        // b takes the slot only after a released it, well before a's lease could have expired.
        #expect(activatedAt >= deactivatedAt + .milliseconds(300))
        #expect(activatedAt < deactivatedAt + .seconds(3))
        #expect(group.status(a) == .standby)
        #expect(group.holders == [b])
    }

    @Test func preemption_slowHandover_successorStaysPreparedUntilActivated() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("a", weight: 50))
        group.setWorkStopDelay(a, .milliseconds(1_800))  // a reports `stopping` in two heartbeats before releasing.
        group.advance(to: at(.milliseconds(5_200)))
        let b = group.join(try Fixture.member("b", weight: 90))
        group.advance(to: at(.seconds(15)))
        #expect(group.events(a) == [.activate(token(1)), .deactivate(.preempted)])
        #expect(group.events(b) == [.prepareToActivate, .activate(token(2))])
    }

    @Test func preemption_withPreparationInterval_onlySuccessorPrepares() throws {
        let group = TestGroup(try Fixture.configuration(preparation: .milliseconds(1_500)))
        let a = group.join(try Fixture.member("a", weight: 50))
        let c = group.join(try Fixture.member("c", weight: 10))
        group.advance(to: at(.milliseconds(5_200)))
        let b = group.join(try Fixture.member("b", weight: 90))
        group.advance(to: at(.seconds(15)))
        #expect(group.events(b) == [.prepareToActivate, .activate(token(2))])
        #expect(group.events(a) == [.activate(token(1)), .deactivate(.preempted)])
        #expect(group.events(c).isEmpty)
    }

    @Test func preemption_equalWeight_neverPreempts() throws {
        let group = TestGroup(try Fixture.configuration())
        let a = group.join(try Fixture.member("z", weight: 50))
        group.advance(to: at(.seconds(3)))
        let b = group.join(try Fixture.member("a", weight: 50))
        group.advance(to: at(.seconds(30)))
        #expect(group.events(a) == [.activate(token(1))])
        #expect(group.events(b).isEmpty)
    }

    @Test func preemption_disabled_heavierJoinerWaits() throws {
        let group = TestGroup(try Fixture.configuration(preemption: false))
        let a = group.join(try Fixture.member("a", weight: 0))
        group.advance(to: at(.seconds(3)))
        let b = group.join(try Fixture.member("b", weight: 1_000))
        group.advance(to: at(.seconds(30)))
        #expect(group.events(a) == [.activate(token(1))])
        #expect(group.events(b).isEmpty)

        group.crash(a)
        group.advance(to: at(.seconds(40)))
        #expect(group.events(b) == [.activate(token(2))])
    }

    @Test func preemption_returningHeavyMember_takesSlotBackOnce() throws {
        let group = TestGroup(try Fixture.configuration())
        let heavy = group.join(try Fixture.member("heavy", weight: 90))
        let light = group.join(try Fixture.member("light", weight: 10))
        group.advance(to: at(.milliseconds(3_500)))
        group.crash(heavy)
        group.advance(to: at(.seconds(10)))
        #expect(group.events(light) == [.activate(token(2))])

        let back = group.join(try Fixture.member("heavy", weight: 90, incarnation: "heavy-2"))
        group.advance(to: at(.seconds(30)))
        #expect(group.events(light) == [.activate(token(2)), .deactivate(.preempted)])
        #expect(group.events(back) == [.prepareToActivate, .activate(token(3))])
    }

    // MARK: Active goal N > 1

    @Test func goalTwo_simultaneousJoiners_convergeOnTheTwoBest() throws {
        let group = TestGroup(try Fixture.configuration(activeGoal: 2))
        let link = TestGroup.Link(toStore: .milliseconds(10), toMember: .milliseconds(10))
        let members = try [("a", 30), ("b", 80), ("c", 60), ("d", 10)].map { group.join(try Fixture.member($0.0, weight: $0.1), link: link) }
        group.advance(to: at(.seconds(20)))
        #expect(group.holders == [members[1], members[2]])
        #expect(group.events(members[3]).isEmpty)
        #expect(group.ledger.view(now: group.now).leases.count == 2)
    }

    @Test func goalTwo_crashOfOneActive_onlyBestStandbyTakesTheSlot() throws {
        let group = TestGroup(try Fixture.configuration(activeGoal: 2))
        let a = group.join(try Fixture.member("a", weight: 50))
        let b = group.join(try Fixture.member("b", weight: 50))
        group.advance(to: at(.seconds(2)))
        let c = group.join(try Fixture.member("c", weight: 10))
        let d = group.join(try Fixture.member("d", weight: 30))
        let e = group.join(try Fixture.member("e", weight: 30))
        group.advance(to: at(.milliseconds(6_500)))
        #expect(group.holders == [a, b])

        group.crash(a)
        group.advance(to: at(.seconds(20)))
        #expect(group.holders == [b, d])
        #expect(group.events(d) == [.activate(token(3))])
        #expect(group.events(c).isEmpty)
        #expect(group.events(e).isEmpty)
        #expect(group.events(b) == [.activate(token(2))])
    }

    @Test func goalThree_crashOfTwoActives_bestTwoStandbysTakeOver() throws {
        let group = TestGroup(try Fixture.configuration(activeGoal: 3, preparation: .seconds(2)))
        let actives = try ["a1", "a2", "a3"].map { group.join(try Fixture.member($0, weight: 70)) }
        group.advance(to: at(.seconds(1)))
        let standbys = try [("s1", 20), ("s2", 60), ("s3", 40), ("s4", 60)].map { group.join(try Fixture.member($0.0, weight: $0.1)) }
        group.advance(to: at(.milliseconds(6_500)))
        #expect(group.holders == Set(actives))

        group.crash(actives[0])
        group.crash(actives[2])
        group.advance(to: at(.seconds(20)))
        #expect(group.holders == [actives[1], standbys[1], standbys[3]])
        #expect(group.events(standbys[1]) == [.prepareToActivate, .activate(token(4))])
        #expect(group.events(standbys[3]) == [.prepareToActivate, .activate(token(5))])
        #expect(group.events(standbys[0]).isEmpty)
        #expect(group.events(standbys[2]).isEmpty)
    }

    @Test func goalTwo_heavierJoinerPreemptsOnlyTheLightestActive() throws {
        let group = TestGroup(try Fixture.configuration(activeGoal: 2))
        let strong = group.join(try Fixture.member("strong", weight: 80))
        let weak = group.join(try Fixture.member("weak", weight: 20))
        group.advance(to: at(.seconds(3)))
        let newcomer = group.join(try Fixture.member("newcomer", weight: 50))
        group.advance(to: at(.seconds(20)))
        #expect(group.events(strong) == [.activate(token(1))])
        #expect(group.events(weak) == [.activate(token(2)), .deactivate(.preempted)])
        #expect(group.events(newcomer) == [.prepareToActivate, .activate(token(3))])
        #expect(group.holders == [strong, newcomer])
    }

    @Test func churn_manyMembersWithFaults_neverExceedGoalAndTokensOnlyRise() throws {
        // The group checks both properties on every activation; this drives it through many handovers.
        let group = TestGroup(try Fixture.configuration(activeGoal: 2, preparation: .seconds(1)))
        var handles: [TestGroup.Handle] = []
        for (index, weight) in [50, 70, 30, 70, 90, 10].enumerated() {
            handles.append(group.join(try Fixture.member("m\(index)", weight: weight), link: .init(toStore: .milliseconds(30 * Int64(index)), toMember: .milliseconds(20))))
        }
        for round in 0..<12 {
            group.advance(by: .milliseconds(2_700))
            let victim = handles[round % handles.count]
            switch round % 4 {
            case 0: group.setLink(victim) { $0.reachable.toggle() }
            case 1: if case .active = group.status(victim) { group.endWork(victim) }
            case 2: group.setLink(victim) { $0.dropsReplies.toggle() }
            default: group.setLink(victim) { $0.toMember = $0.toMember == .zero ? .milliseconds(900) : .zero }
            }
        }
        group.advance(by: .seconds(30))
        #expect(group.activations.count >= 3)
        #expect(group.ledger.view(now: group.now).leases.count <= 2)
    }
}
