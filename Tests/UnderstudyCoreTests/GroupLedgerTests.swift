import Testing
import UnderstudyCore

/// The store semantics every backend implements, on the store's clock (T = 3s).
@Suite("GroupLedger")
struct GroupLedgerTests {
    let a: MemberInfo
    let b: MemberInfo
    let c: MemberInfo

    init() throws {
        a = try Fixture.member("a")
        b = try Fixture.member("b")
        c = try Fixture.member("c")
    }

    private func apply(_ ledger: inout GroupLedger, _ heartbeat: Heartbeat, at instant: Instant) throws -> HeartbeatReply {
        try ledger.apply(heartbeat, now: instant)
    }

    private func newLedger(activeGoal: Int = 1) -> GroupLedger {
        GroupLedger(group: Fixture.groupName, activeGoal: activeGoal)
    }

    // MARK: Membership

    @Test func shouldAnnounce_joinsAndReleasesOfHeldSlots_only() throws {
        var ledger = newLedger()
        func released(_ heartbeat: Heartbeat, at instant: Instant) throws -> Bool {
            let before = ledger
            _ = try apply(&ledger, heartbeat, at: instant)
            return ledger.shouldAnnounce(heartbeat, from: before)
        }
        #expect(try released(Fixture.heartbeat(a, .acquire), at: .zero))  // a joins
        let token = FencingToken(rawValue: 1)
        #expect(try released(Fixture.heartbeat(b, .release(token)), at: at(.milliseconds(1))))  // b joins
        #expect(try released(Fixture.heartbeat(b, .release(token)), at: at(.milliseconds(1))) == false)  // not b's
        #expect(try released(Fixture.heartbeat(a, .release(FencingToken(rawValue: 9))), at: at(.milliseconds(2))) == false)
        #expect(try released(Fixture.heartbeat(a, .renew(token)), at: at(.milliseconds(3))) == false)
        #expect(try released(Fixture.heartbeat(a, .release(token)), at: at(.milliseconds(4))))
        #expect(try released(Fixture.heartbeat(a, .release(token)), at: at(.milliseconds(5))) == false)  // already free
        _ = try apply(&ledger, Fixture.heartbeat(b, .acquire), at: at(.milliseconds(6)))
        #expect(try released(Fixture.heartbeat(b, .leave(releasing: FencingToken(rawValue: 2))), at: at(.milliseconds(7))))
        // Silent for T, a is forgotten; when it comes back it joins anew.
        #expect(try released(Fixture.heartbeat(a), at: at(.seconds(10))))
    }

    @Test func heartbeat_newMember_joinsWithNextSequence() throws {
        var ledger = newLedger()
        let first = try apply(&ledger, Fixture.heartbeat(a), at: .zero)
        let second = try apply(&ledger, Fixture.heartbeat(b), at: at(.milliseconds(10)))
        #expect(first.outcome == .none)
        #expect(first.view.members.map(\.info.id) == [a.id])
        #expect(second.view.members.map(\.joinSequence) == [1, 2])
        #expect(second.view.members.map(\.heartbeatAge) == [.milliseconds(10), .zero])
    }

    @Test func heartbeat_existingMember_keepsJoinSequenceAndUpdatesPhase() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a), at: .zero)
        _ = try apply(&ledger, Fixture.heartbeat(b), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(a, phase: .resting), at: at(.seconds(1)))
        let memberA = try #require(reply.view.members.first { $0.info.id == a.id })
        #expect(memberA.joinSequence == 1)
        #expect(memberA.phase == .resting)
        #expect(memberA.heartbeatAge == .zero)
    }

    @Test func member_silentForT_isForgottenAndRejoinsAsNewest() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a), at: .zero)
        _ = try apply(&ledger, Fixture.heartbeat(b), at: at(.seconds(1)))
        #expect(ledger.view(now: at(.seconds(3)) - .nanoseconds(1)).members.map(\.info.id) == [a.id, b.id])
        #expect(ledger.view(now: at(.seconds(3))).members.map(\.info.id) == [b.id])

        let reply = try apply(&ledger, Fixture.heartbeat(a), at: at(.seconds(3)))
        #expect(reply.view.members.map(\.info.id) == [b.id, a.id])
        #expect(reply.view.members.map(\.joinSequence) == [2, 3])
    }

    @Test func expire_forgetsExpiredMembersAndFreesExpiredLeases_keepsToken() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        ledger.expire(now: at(.seconds(3)))
        #expect(ledger.members.isEmpty)
        #expect(ledger.leases == [GroupLedger.LeaseRecord(slot: 0, holder: nil)])
        #expect(ledger.lastToken == token(1))
    }

    @Test func memberID_aliveWithAnotherIncarnation_isRejectedNamingHostAndPid() throws {
        var ledger = newLedger()
        let first = try Fixture.member("a", incarnation: "boot-1", pid: 101)
        let second = try Fixture.member("a", incarnation: "boot-2", pid: 202)
        _ = try apply(&ledger, Fixture.heartbeat(first, .acquire), at: .zero)
        let before = ledger

        #expect(throws: HeartbeatRejection.memberIDInUse(first.id, host: "host-a", pid: 101)) {
            try ledger.apply(Fixture.heartbeat(second, .acquire), now: at(.seconds(1)))
        }
        #expect(ledger == before)
        let message = HeartbeatRejection.memberIDInUse(first.id, host: "host-a", pid: 101).description
        #expect(message.contains("host host-a, pid 101"))
    }

    @Test func memberID_ofExpiredIncarnation_canBeReused() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(try Fixture.member("a", incarnation: "boot-1")), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(try Fixture.member("a", incarnation: "boot-2"), .acquire), at: at(.seconds(3)))
        #expect(reply.outcome == .granted(token(1)))
        #expect(reply.view.members.map(\.info.incarnation) == ["boot-2"])
    }

    @Test func activeGoal_mismatchWhileOthersAlive_isRejected() throws {
        var ledger = newLedger(activeGoal: 1)
        _ = try apply(&ledger, Fixture.heartbeat(a), at: .zero)
        #expect(throws: HeartbeatRejection.activeGoalMismatch(group: Fixture.groupName, stored: 1, requested: 2)) {
            try ledger.apply(Fixture.heartbeat(b, activeGoal: 2), now: at(.seconds(1)))
        }
        #expect(ledger.members.keys.sorted() == [a.id])
    }

    @Test func activeGoal_mismatchWhileOwnLeaseValid_isRejected() throws {
        var ledger = newLedger(activeGoal: 1)
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        #expect(throws: HeartbeatRejection.activeGoalMismatch(group: Fixture.groupName, stored: 1, requested: 3)) {
            try ledger.apply(Fixture.heartbeat(a, .renew(token(1)), activeGoal: 3), now: at(.seconds(1)))
        }
    }

    @Test func activeGoal_changedAfterEveryoneExpired_isAdoptedAndTokensKeepRising() throws {
        var ledger = newLedger(activeGoal: 1)
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(b, .acquire, activeGoal: 2), at: at(.seconds(3)))
        #expect(reply.outcome == .granted(token(2)))
        #expect(reply.view.activeGoal == 2)
        #expect(ledger.leases.count == 2)
        let third = try apply(&ledger, Fixture.heartbeat(c, .acquire, activeGoal: 2), at: at(.seconds(3)))
        #expect(third.outcome == .granted(token(3)))
    }

    @Test func activeGoal_mismatchMessage_saysHowToFix() {
        let message = HeartbeatRejection.activeGoalMismatch(group: Fixture.groupName, stored: 1, requested: 2).description
        #expect(message.contains("runs with active goal 1 but this member asks for 2"))
    }

    // MARK: Grants

    @Test func acquire_freeSlot_isGrantedWithFirstToken() throws {
        var ledger = newLedger()
        let reply = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        #expect(reply.outcome == .granted(token(1)))
        #expect(reply.view.lastToken == token(1))
        #expect(reply.view.leases == [GroupView.Lease(slot: 0, holder: a.id, token: token(1), remaining: .seconds(3))])
    }

    @Test func acquire_slotHeld_isNotGranted_noDoubleGrant() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(b, .acquire), at: at(.seconds(3)) - .nanoseconds(1))
        #expect(reply.outcome == .notGranted)
        #expect(reply.view.leases.map(\.holder) == [a.id])
        #expect(reply.view.lastToken == token(1))
    }

    @Test func acquire_atExpiryInstant_isGrantedWithNextToken() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(b, .acquire), at: at(.seconds(3)))
        #expect(reply.outcome == .granted(token(2)))
        #expect(reply.view.leases.map(\.holder) == [b.id])
    }

    @Test func acquire_byHolder_confirmsSameTokenAndExtends() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: at(.seconds(2)))
        #expect(reply.outcome == .granted(token(1)))
        #expect(reply.view.leases.map(\.remaining) == [.seconds(3)])
        #expect(ledger.lastToken == token(1))
    }

    @Test func acquire_withGoalThree_fillsSlotsInOrderThenRefuses() throws {
        var ledger = newLedger(activeGoal: 3)
        let d = try Fixture.member("d")
        var outcomes: [HeartbeatReply.Outcome] = []
        for member in [a, b, c, d] {
            outcomes.append(try apply(&ledger, Fixture.heartbeat(member, .acquire, activeGoal: 3), at: .zero).outcome)
        }
        #expect(outcomes == [.granted(token(1)), .granted(token(2)), .granted(token(3)), .notGranted])
        #expect(ledger.view(now: .zero).leases.map(\.slot) == [0, 1, 2])
        #expect(ledger.view(now: .zero).leases.map(\.holder) == [a.id, b.id, c.id])
    }

    @Test func tokens_strictlyIncreaseAcrossExpiryReleaseAndLeave() throws {
        var ledger = newLedger()
        var granted: [FencingToken] = []
        func acquire(_ member: MemberInfo, at instant: Instant) throws {
            if case .granted(let token) = try apply(&ledger, Fixture.heartbeat(member, .acquire), at: instant).outcome {
                granted.append(token)
            }
        }
        try acquire(a, at: .zero)                                                     // 1
        try acquire(b, at: at(.seconds(3)))                                            // 2, after a expired
        _ = try apply(&ledger, Fixture.heartbeat(b, .release(token(2))), at: at(.seconds(4)))
        try acquire(a, at: at(.seconds(4)))                                            // 3, after b released
        _ = try apply(&ledger, Fixture.heartbeat(a, .leave(releasing: token(3))), at: at(.seconds(5)))
        try acquire(c, at: at(.seconds(5)))                                            // 4, after a left
        ledger.expire(now: at(.seconds(100)))
        try acquire(a, at: at(.seconds(100)))                                          // 5, after everyone expired
        #expect(granted == [token(1), token(2), token(3), token(4), token(5)])
    }

    // MARK: Renewals

    @Test func renewal_byHolderBeforeExpiry_extendsByT() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(a, .renew(token(1)), phase: .active), at: at(.seconds(3)) - .nanoseconds(1))
        #expect(reply.outcome == .renewed)
        #expect(reply.view.leases.map(\.remaining) == [.seconds(3)])
        #expect(ledger.view(now: at(.seconds(6)) - .nanoseconds(2)).leases.map(\.holder) == [a.id])
    }

    @Test func renewal_afterExpiry_isLost() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(a, .renew(token(1)), phase: .active), at: at(.seconds(3)))
        #expect(reply.outcome == .lost)
        #expect(reply.view.leases.isEmpty)
    }

    @Test func renewal_afterExpiryAndRegrant_isLost() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        _ = try apply(&ledger, Fixture.heartbeat(b, .acquire), at: at(.seconds(3)))
        let reply = try apply(&ledger, Fixture.heartbeat(a, .renew(token(1)), phase: .active), at: at(.seconds(3)))
        #expect(reply.outcome == .lost)
        #expect(reply.view.leases.map(\.holder) == [b.id])
    }

    @Test func renewal_withWrongToken_isLostAndLeavesLeaseAlone() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(a, .renew(token(7)), phase: .active), at: at(.seconds(1)))
        #expect(reply.outcome == .lost)
        #expect(reply.view.leases.map(\.remaining) == [.seconds(2)])
    }

    @Test func renewal_byNonHolder_isLost() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(b, .renew(token(1)), phase: .active), at: at(.seconds(1)))
        #expect(reply.outcome == .lost)
        #expect(reply.view.leases.map(\.holder) == [a.id])
    }

    @Test func renewal_byAnotherIncarnationOfHolder_isLost() throws {
        var ledger = newLedger()
        let old = try Fixture.member("a", incarnation: "boot-1")
        let new = try Fixture.member("a", incarnation: "boot-2")
        _ = try apply(&ledger, Fixture.heartbeat(old, .acquire), at: .zero)
        // The old process leaves without giving the lease up; its lease stays until expiry.
        _ = try apply(&ledger, Fixture.heartbeat(old, .leave(releasing: nil)), at: at(.seconds(1)))
        let reply = try apply(&ledger, Fixture.heartbeat(new, .renew(token(1)), phase: .active), at: at(.seconds(1)))
        #expect(reply.outcome == .lost)
        #expect(ledger.leases[0].holder?.incarnation == "boot-1")
    }

    // MARK: Release and leave

    @Test func release_byHolder_freesSlotForImmediateGrant() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let released = try apply(&ledger, Fixture.heartbeat(a, .release(token(1)), phase: .stopping), at: at(.seconds(1)))
        #expect(released.outcome == .released)
        #expect(released.view.leases.isEmpty)
        #expect(released.view.members.map(\.info.id) == [a.id])
        let reply = try apply(&ledger, Fixture.heartbeat(b, .acquire), at: at(.seconds(1)))
        #expect(reply.outcome == .granted(token(2)))
    }

    @Test func release_withWrongToken_keepsLease() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(a, .release(token(9))), at: at(.seconds(1)))
        #expect(reply.outcome == .released)
        #expect(reply.view.leases.map(\.holder) == [a.id])
    }

    @Test func release_byNonHolder_keepsLease() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(b, .release(token(1))), at: at(.seconds(1)))
        #expect(reply.view.leases.map(\.holder) == [a.id])
    }

    @Test func leave_withToken_releasesLeaseAndForgetsMember() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        _ = try apply(&ledger, Fixture.heartbeat(b), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(a, .leave(releasing: token(1)), phase: .stopping), at: at(.seconds(1)))
        #expect(reply.outcome == .left)
        #expect(reply.view.members.map(\.info.id) == [b.id])
        #expect(reply.view.leases.isEmpty)
        #expect(try apply(&ledger, Fixture.heartbeat(b, .acquire), at: at(.seconds(1))).outcome == .granted(token(2)))
    }

    @Test func leave_withoutToken_keepsLeaseUntilExpiry() throws {
        var ledger = newLedger()
        _ = try apply(&ledger, Fixture.heartbeat(a, .acquire), at: .zero)
        let reply = try apply(&ledger, Fixture.heartbeat(a, .leave(releasing: nil)), at: at(.seconds(1)))
        #expect(reply.outcome == .left)
        #expect(reply.view.members.isEmpty)
        #expect(reply.view.leases.map(\.holder) == [a.id])
    }

    @Test func leave_unknownMember_isLeft() throws {
        var ledger = newLedger()
        let reply = try apply(&ledger, Fixture.heartbeat(a, .leave(releasing: nil)), at: .zero)
        #expect(reply.outcome == .left)
        #expect(ledger.members.isEmpty)
        #expect(ledger.nextJoinSequence == 1)
    }

    // MARK: View

    @Test func view_showsOnlyLiveMembersAndValidLeases_inJoinAndSlotOrder() throws {
        var ledger = newLedger(activeGoal: 2)
        _ = try apply(&ledger, Fixture.heartbeat(c, .acquire, activeGoal: 2), at: .zero)
        _ = try apply(&ledger, Fixture.heartbeat(a, activeGoal: 2), at: at(.seconds(1)))
        _ = try apply(&ledger, Fixture.heartbeat(b, .acquire, activeGoal: 2), at: at(.seconds(2)))
        let view = ledger.view(now: at(.milliseconds(3_500)))
        #expect(view.members.map(\.info.id) == [a.id, b.id])
        #expect(view.members.map(\.heartbeatAge) == [.milliseconds(2_500), .milliseconds(1_500)])
        #expect(view.leases == [GroupView.Lease(slot: 1, holder: b.id, token: token(2), remaining: .milliseconds(1_500))])
        #expect(view.lastToken == token(2))
    }

    // MARK: A store that forgets

    @Test func grant_takesTheTokenFloorWhenLarger_andTheCounterAfterwards() throws {
        var ledger = newLedger(activeGoal: 2)
        let floor = FencingToken(rawValue: 1_000_000)
        let first = try ledger.apply(Fixture.heartbeat(a, .acquire, activeGoal: 2), at: StoreMoment(now: .zero, tokenFloor: floor))
        #expect(first.outcome == .granted(floor))
        // A floor below the counter (a wall clock set back) never makes a token repeat.
        let second = try ledger.apply(Fixture.heartbeat(b, .acquire, activeGoal: 2), at: StoreMoment(now: .zero, tokenFloor: FencingToken(rawValue: 5)))
        #expect(second.outcome == .granted(FencingToken(rawValue: 1_000_001)))
    }

    @Test func grant_withinTOfTheRecordBecomingComplete_isRefused_thenGranted() throws {
        var ledger = newLedger()
        let since = at(.seconds(10))
        let early = try ledger.apply(Fixture.heartbeat(a, .acquire), at: StoreMoment(now: at(.seconds(13)) - .nanoseconds(1), recordCompleteSince: since))
        #expect(early.outcome == .notGranted)
        let onTime = try ledger.apply(Fixture.heartbeat(a, .acquire), at: StoreMoment(now: at(.seconds(13)), recordCompleteSince: since))
        #expect(onTime.outcome == .granted(FencingToken(rawValue: 1)))
        // The holder's own renewals and confirmations are not grants: they go on.
        let confirmed = try ledger.apply(Fixture.heartbeat(a, .acquire), at: StoreMoment(now: at(.seconds(14)), recordCompleteSince: at(.seconds(14))))
        #expect(confirmed.outcome == .granted(FencingToken(rawValue: 1)))
    }

    @Test func exhaustedCounters_neitherTrapNorRepeat() throws {
        var ledger = GroupLedger(
            group: Fixture.groupName, activeGoal: 1, lastToken: .maximum, nextJoinSequence: .max, members: [:],
            leases: [.init(slot: 0, holder: nil)]
        )
        let reply = try ledger.apply(Fixture.heartbeat(a, .acquire), now: .zero)
        #expect(reply.outcome == .notGranted)
        #expect(ledger.lastToken == .maximum)
        _ = try ledger.apply(Fixture.heartbeat(b, .none), now: .zero)
        #expect(ledger.members[b.id]?.joinSequence == .max)
    }
}
