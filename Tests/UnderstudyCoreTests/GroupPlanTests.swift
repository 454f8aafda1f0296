import Testing
import UnderstudyCore

@Suite("GroupPlan")
struct GroupPlanTests {
    private func plan(_ view: GroupView, preemption: Bool = true, preparation: Duration? = nil) -> GroupPlan {
        GroupPlan(view: view, preemption: preemption, preparationInterval: preparation)
    }

    private func ids(_ names: String...) throws -> Set<MemberID> { Set(try names.map { try MemberID($0) }) }

    // MARK: Ranking

    @Test func ranking_isWeightDescThenEarliestJoinThenID() throws {
        let members = [
            Fixture.viewMember(try Fixture.member("late-heavy", weight: 90), join: 9),
            Fixture.viewMember(try Fixture.member("b", weight: 50), join: 2),
            Fixture.viewMember(try Fixture.member("zero", weight: 0), join: 1),
            Fixture.viewMember(try Fixture.member("a", weight: 50), join: 2),
            Fixture.viewMember(try Fixture.member("early", weight: 50), join: 1),
        ]
        let ranked = plan(Fixture.view(members: members)).ranked.map(\.info.id.rawValue)
        #expect(ranked == ["late-heavy", "early", "a", "b", "zero"])
    }

    @Test func ranking_ignoresInputOrder() throws {
        let members = [
            Fixture.viewMember(try Fixture.member("x", weight: 10), join: 1),
            Fixture.viewMember(try Fixture.member("y", weight: 20), join: 2),
            Fixture.viewMember(try Fixture.member("z", weight: 20), join: 3),
        ]
        let forward = plan(Fixture.view(members: members)).ranked
        let backward = plan(Fixture.view(members: members.reversed())).ranked
        #expect(forward == backward)
        #expect(forward.map(\.info.id.rawValue) == ["y", "z", "x"])
    }

    // MARK: Acquirers

    @Test func acquirers_areBestEligibleStandbys_onePerFreeSlot() throws {
        let a = try Fixture.member("a", weight: 50), b = try Fixture.member("b", weight: 70)
        let c = try Fixture.member("c", weight: 60), d = try Fixture.member("d", weight: 40)
        let view = Fixture.view(
            activeGoal: 3,
            members: [Fixture.viewMember(a, join: 1, phase: .active), Fixture.viewMember(b, join: 2),
                      Fixture.viewMember(c, join: 3), Fixture.viewMember(d, join: 4)],
            leases: [Fixture.lease(a, token: 1)]
        )
        let plan = plan(view, preemption: false)
        #expect(plan.acquirers == (try ids("b", "c")))
        #expect(plan.nextInLine == (try MemberID("b")))
    }

    @Test func acquirers_skipRestingAndStoppingMembers() throws {
        let a = try Fixture.member("a", weight: 90), b = try Fixture.member("b", weight: 80), c = try Fixture.member("c", weight: 10)
        let view = Fixture.view(members: [
            Fixture.viewMember(a, join: 1, phase: .resting), Fixture.viewMember(b, join: 2, phase: .stopping),
            Fixture.viewMember(c, join: 3),
        ])
        let plan = plan(view)
        #expect(plan.acquirers == (try ids("c")))
        #expect(plan.nextInLine == c.id)
    }

    @Test func acquirers_preparingMemberIsEligible() throws {
        let a = try Fixture.member("a")
        let plan = plan(Fixture.view(members: [Fixture.viewMember(a, join: 1, phase: .preparing)]))
        #expect(plan.acquirers == [a.id])
    }

    @Test func acquirers_noneWhenAllSlotsHeld() throws {
        let a = try Fixture.member("a"), b = try Fixture.member("b")
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .active), Fixture.viewMember(b, join: 2)],
            leases: [Fixture.lease(a, token: 1)]
        )
        let plan = plan(view)
        #expect(plan.acquirers.isEmpty)
        #expect(plan.nextInLine == b.id)
        #expect(plan.leases[a.id]?.token == token(1))
    }

    // MARK: Preemption

    @Test func preemption_strictlyHigherWeight_pairsSuccessorWithYielder() throws {
        let a = try Fixture.member("a", weight: 50), b = try Fixture.member("b", weight: 51)
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .active), Fixture.viewMember(b, join: 2)],
            leases: [Fixture.lease(a, token: 1)]
        )
        let plan = plan(view)
        #expect(plan.yielders == [a.id])
        #expect(plan.successors == [b.id])
    }

    @Test func preemption_equalWeight_neverPreempts() throws {
        let a = try Fixture.member("a", weight: 50), b = try Fixture.member("b", weight: 50)
        // Even a member that ranks first by id does not displace an active of equal weight.
        let view = Fixture.view(
            members: [Fixture.viewMember(b, join: 1, phase: .active), Fixture.viewMember(a, join: 1)],
            leases: [Fixture.lease(b, token: 1)]
        )
        let plan = plan(view)
        #expect(plan.yielders.isEmpty)
        #expect(plan.successors.isEmpty)
    }

    @Test func preemption_disabled_neverPreempts() throws {
        let a = try Fixture.member("a", weight: 0), b = try Fixture.member("b", weight: 1_000)
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .active), Fixture.viewMember(b, join: 2)],
            leases: [Fixture.lease(a, token: 1)]
        )
        let plan = plan(view, preemption: false)
        #expect(plan.yielders.isEmpty)
        #expect(plan.successors.isEmpty)
    }

    @Test func preemption_bestStandbyReplacesWorstActive_only() throws {
        let high = try Fixture.member("high", weight: 80), low = try Fixture.member("low", weight: 20)
        let new1 = try Fixture.member("new1", weight: 60), new2 = try Fixture.member("new2", weight: 30)
        let view = Fixture.view(
            activeGoal: 2,
            members: [Fixture.viewMember(high, join: 1, phase: .active), Fixture.viewMember(low, join: 2, phase: .active),
                      Fixture.viewMember(new1, join: 3), Fixture.viewMember(new2, join: 4)],
            leases: [Fixture.lease(high, token: 1), Fixture.lease(low, token: 2, slot: 1)]
        )
        let plan = plan(view)
        #expect(plan.yielders == [low.id])
        #expect(plan.successors == [new1.id])
    }

    @Test func preemption_twoHeavierStandbys_replaceBothLighterActives() throws {
        let a = try Fixture.member("a", weight: 10), b = try Fixture.member("b", weight: 20)
        let c = try Fixture.member("c", weight: 90), d = try Fixture.member("d", weight: 80)
        let view = Fixture.view(
            activeGoal: 2,
            members: [Fixture.viewMember(a, join: 1, phase: .active), Fixture.viewMember(b, join: 2, phase: .active),
                      Fixture.viewMember(c, join: 3), Fixture.viewMember(d, join: 4)],
            leases: [Fixture.lease(a, token: 1), Fixture.lease(b, token: 2, slot: 1)]
        )
        let plan = plan(view)
        #expect(plan.yielders == [a.id, b.id])
        #expect(plan.successors == [c.id, d.id])
    }

    @Test func preemption_holderAlreadyStopping_staysPairedWithItsSuccessor() throws {
        let a = try Fixture.member("a", weight: 10), b = try Fixture.member("b", weight: 90)
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .stopping), Fixture.viewMember(b, join: 2, phase: .preparing)],
            leases: [Fixture.lease(a, token: 1)]
        )
        let plan = plan(view)
        #expect(plan.yielders == [a.id])
        #expect(plan.successors == [b.id])
        #expect(plan.nextInLine == b.id)
    }

    @Test func preemption_holderStoppingAnyway_absorbsTheHeavierStandby_noOtherActiveIsPreempted() throws {
        let x = try Fixture.member("x", weight: 10), y = try Fixture.member("y", weight: 20)
        let c = try Fixture.member("c", weight: 90), d = try Fixture.member("d", weight: 15)
        let view = Fixture.view(
            activeGoal: 2,
            members: [Fixture.viewMember(x, join: 1, phase: .stopping), Fixture.viewMember(y, join: 2, phase: .active),
                      Fixture.viewMember(c, join: 3), Fixture.viewMember(d, join: 4)],
            leases: [Fixture.lease(x, token: 1), Fixture.lease(y, token: 2, slot: 1)]
        )
        let plan = plan(view)
        #expect(!plan.yielders.contains(y.id))
        #expect(plan.successors == [c.id])
    }

    @Test func preemption_freshHolderNotYetReportedActive_isPaired() throws {
        let a = try Fixture.member("a", weight: 10), b = try Fixture.member("b", weight: 90)
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .standby), Fixture.viewMember(b, join: 2)],
            leases: [Fixture.lease(a, token: 1)]
        )
        #expect(plan(view).yielders == [a.id])
    }

    @Test func preemption_restingHeavierMember_doesNotPreempt() throws {
        let a = try Fixture.member("a", weight: 10), b = try Fixture.member("b", weight: 90)
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .active), Fixture.viewMember(b, join: 2, phase: .resting)],
            leases: [Fixture.lease(a, token: 1)]
        )
        #expect(plan(view).yielders.isEmpty)
    }

    // MARK: Preparation

    @Test func preparers_noneWithoutPreparationInterval() throws {
        let a = try Fixture.member("a"), b = try Fixture.member("b")
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .active, age: .seconds(100)), Fixture.viewMember(b, join: 2)],
            leases: [Fixture.lease(a, token: 1)]
        )
        #expect(plan(view, preparation: nil).preparers.isEmpty)
    }

    @Test func preparers_nextInLine_whenActiveSilentForP() throws {
        let a = try Fixture.member("a"), b = try Fixture.member("b"), c = try Fixture.member("c")
        func view(age: Duration) -> GroupView {
            Fixture.view(
                members: [Fixture.viewMember(a, join: 1, phase: .active, age: age), Fixture.viewMember(b, join: 2),
                          Fixture.viewMember(c, join: 3)],
                leases: [Fixture.lease(a, token: 1)]
            )
        }
        #expect(plan(view(age: .milliseconds(1_500) - .nanoseconds(1)), preparation: .milliseconds(1_500)).preparers.isEmpty)
        #expect(plan(view(age: .milliseconds(1_500)), preparation: .milliseconds(1_500)).preparers == [b.id])
    }

    @Test func preparers_onePerSilentActive_withGoalTwo() throws {
        let a = try Fixture.member("a"), b = try Fixture.member("b"), c = try Fixture.member("c"), d = try Fixture.member("d")
        let view = Fixture.view(
            activeGoal: 2,
            members: [Fixture.viewMember(a, join: 1, phase: .active, age: .seconds(2)),
                      Fixture.viewMember(b, join: 2, phase: .active, age: .milliseconds(100)),
                      Fixture.viewMember(c, join: 3), Fixture.viewMember(d, join: 4)],
            leases: [Fixture.lease(a, token: 1), Fixture.lease(b, token: 2, slot: 1)]
        )
        #expect(plan(view, preparation: .seconds(1)).preparers == [c.id])
    }

    @Test func preparers_holderNoLongerAMember_countsAsSilent() throws {
        let a = try Fixture.member("a"), b = try Fixture.member("b")
        let view = Fixture.view(members: [Fixture.viewMember(b, join: 2)], leases: [Fixture.lease(a, token: 1)])
        #expect(plan(view, preparation: .seconds(1)).preparers == [b.id])
    }

    /// A yielder is handed over to its successor, who is told to prepare; nobody else is next in line for it.
    @Test func preparers_yielderWithFreshHeartbeat_preparesNobodyBeyondSuccessor() throws {
        let a = try Fixture.member("a", weight: 50), b = try Fixture.member("b", weight: 90), c = try Fixture.member("c", weight: 10)
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .active, age: .zero), Fixture.viewMember(b, join: 2),
                      Fixture.viewMember(c, join: 3)],
            leases: [Fixture.lease(a, token: 1)]
        )
        let plan = plan(view, preparation: .seconds(1))
        #expect(plan.successors == [b.id])
        #expect(plan.preparers.isEmpty)
    }

    @Test func preparers_restingMember_isSkipped() throws {
        let a = try Fixture.member("a"), b = try Fixture.member("b", weight: 90), c = try Fixture.member("c")
        let view = Fixture.view(
            members: [Fixture.viewMember(a, join: 1, phase: .active, age: .seconds(2)), Fixture.viewMember(b, join: 2, phase: .resting),
                      Fixture.viewMember(c, join: 3)],
            leases: [Fixture.lease(a, token: 1)]
        )
        #expect(plan(view, preparation: .seconds(1)).preparers == [c.id])
    }
}
