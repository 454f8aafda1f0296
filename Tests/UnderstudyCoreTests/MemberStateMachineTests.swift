import Testing
import UnderstudyCore

/// Single handlers of ``MemberStateMachine``, judged by the actions they return (I = 1s, T = 3s).
///
/// With `s` the send time of the newest confirmed renewal: self-fence at s + T − I = s + 2s; the work must
/// have stopped by s + T − I/2 = s + 2.5s (`stopWorkBy`, `leaseValid`), half an interval before the store
/// can regrant at s + T, as a margin for clock drift.
@Suite("MemberStateMachine handlers")
struct MemberStateMachineTests {
    let me: MemberInfo
    let other: MemberInfo

    init() throws {
        me = try Fixture.member("me")
        other = try Fixture.member("other")
    }

    private func expectedHeartbeat(_ intent: Heartbeat.Intent, phase: MemberPhase, configuration: GroupConfiguration, sentAt: Instant) -> Heartbeat {
        Heartbeat(
            group: configuration.name,
            activeGoal: configuration.activeGoal,
            activationInterval: configuration.activationInterval,
            member: me,
            phase: phase,
            intent: intent,
            sentAt: sentAt
        )
    }

    private func aloneView() -> GroupView { Fixture.view(members: [Fixture.viewMember(me, join: 1)]) }

    private func heldView(token value: UInt64 = 1, age: Duration = .zero, phase: MemberPhase = .active, others: [GroupView.Member] = []) -> GroupView {
        Fixture.view(members: [Fixture.viewMember(me, join: 1, phase: phase, age: age)] + others, leases: [Fixture.lease(me, token: value)])
    }

    /// A machine that joined at 0 and holds token 1, granted to an acquire sent at `grantSentAt`.
    private func activeMachine(
        _ configuration: GroupConfiguration? = nil,
        grantSentAt: Instant = .zero,
        grantAnsweredAt: Instant? = nil
    ) throws -> MemberStateMachine {
        var machine = MemberStateMachine(configuration: try configuration ?? Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let acquire = try #require(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: join.id, now: grantSentAt).onlyHeartbeat())
        #expect(acquire.heartbeat.intent == .acquire)
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .granted(token(1)), view: heldView(phase: .standby)), to: acquire.id, now: grantAnsweredAt ?? grantSentAt)
        #expect(actions.events == [.activate(token(1))])
        #expect(actions.workCues == [.startWork(token(1))])
        #expect(machine.activeToken == token(1))
        return machine
    }

    // MARK: Joining and activation

    @Test func start_sendsJoinHeartbeatAtOnce_andSchedulesNextAfterI() throws {
        let configuration = try Fixture.configuration()
        var machine = MemberStateMachine(configuration: configuration, member: me)
        let actions = machine.start(now: at(.milliseconds(250)))
        let id = try #require(actions.onlyHeartbeat()).id
        #expect(actions == [
            .sendHeartbeat(expectedHeartbeat(.none, phase: .standby, configuration: configuration, sentAt: at(.milliseconds(250))), id),
            .scheduleTick(at: at(.milliseconds(1_250))),
        ])
        #expect(machine.status == .standby)
    }

    @Test func start_twice_sendsNothingMore() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        _ = machine.start(now: .zero)
        #expect(machine.start(now: at(.milliseconds(10))) == [.scheduleTick(at: at(.seconds(1)))])
    }

    @Test func joinReply_freeSlotAndBestRanked_acquiresAtOnce() throws {
        let configuration = try Fixture.configuration()
        var machine = MemberStateMachine(configuration: configuration, member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: join.id, now: at(.milliseconds(40)))
        let acquire = try #require(actions.onlyHeartbeat())
        #expect(actions == [
            .sendHeartbeat(expectedHeartbeat(.acquire, phase: .standby, configuration: configuration, sentAt: at(.milliseconds(40))), acquire.id),
            .scheduleTick(at: at(.milliseconds(1_040))),
        ])
    }

    @Test func joinReply_slotHeldByOther_waits_andAcquiresOnlyOnAFreshViewOfAFreeSlot() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let view = Fixture.view(
            members: [Fixture.viewMember(other, join: 1, phase: .active), Fixture.viewMember(me, join: 2)],
            leases: [Fixture.lease(other, token: 1)]
        )
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: view), to: join.id, now: .zero) == [.scheduleTick(at: at(.seconds(1)))])
        // Next in line, but the view is a heartbeat old: a better-ranked member may have joined since.
        let next = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        #expect(next.heartbeat.intent == .none)
        let free = Fixture.view(members: [Fixture.viewMember(me, join: 2)])
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: free), to: next.id, now: at(.seconds(1))).intents == [.acquire])
    }

    @Test func changeAnnounced_standbyNextInLine_asksAtOnce_othersWait() throws {
        func standby(joinedAs join: Int64, ahead: [GroupView.Member]) throws -> MemberStateMachine {
            var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
            let first = try #require(machine.start(now: .zero).onlyHeartbeat())
            let view = Fixture.view(
                members: [Fixture.viewMember(other, join: 1, phase: .active)] + ahead + [Fixture.viewMember(me, join: join)],
                leases: [Fixture.lease(other, token: 1)]
            )
            _ = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: view), to: first.id, now: .zero)
            return machine
        }
        var next = try standby(joinedAs: 2, ahead: [])
        #expect(next.changeAnnounced(now: at(.milliseconds(300))).intents == [.none])
        // A request in flight answers soon enough: no second one.
        #expect(next.changeAnnounced(now: at(.milliseconds(301))).intents.isEmpty)
        var behind = try standby(joinedAs: 3, ahead: [Fixture.viewMember(try Fixture.member("second"), join: 2)])
        #expect(behind.changeAnnounced(now: at(.milliseconds(300))).intents.isEmpty)
    }

    @Test func changeAnnounced_active_renewsAtOnce_andYieldsToAJoinerThatOutranksIt() throws {
        let configuration = try Fixture.configuration()
        var machine = try activeMachine(configuration)
        let renewal = try #require(machine.changeAnnounced(now: at(.milliseconds(300))).onlyHeartbeat())
        #expect(renewal.heartbeat.intent == .renew(token(1)))
        let heavier = try Fixture.member("heavier", weight: 90)
        let view = heldView(others: [Fixture.viewMember(heavier, join: 2)])
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: view), to: renewal.id, now: at(.milliseconds(301)))
        #expect(actions.events == [.deactivate(.preempted)])
    }

    @Test func joinReply_betterRankedStandbyTakesFreeSlot_sendsNothing() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let view = Fixture.view(members: [Fixture.viewMember(other, join: 1), Fixture.viewMember(me, join: 2)])
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: view), to: join.id, now: .zero).heartbeats.isEmpty)
        #expect(machine.tick(now: at(.seconds(1))).intents == [.none])
    }

    @Test func grant_activatesWithToken_leaseValidFromSendTime() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let acquire = try #require(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: join.id, now: at(.milliseconds(100))).onlyHeartbeat())
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .granted(token(7)), view: heldView(token: 7, phase: .standby)), to: acquire.id, now: at(.milliseconds(900)))
        #expect(actions == [
            .emit(.activate(token(7))),
            .startWork(token(7)),
            .leaseValid(until: at(.milliseconds(2_600))),
            .scheduleTick(at: at(.milliseconds(1_100))),
        ])
        #expect(machine.activeToken == token(7))
        #expect(machine.status == .active)
    }

    @Test func notGranted_staysStandby() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let acquire = try #require(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: join.id, now: .zero).onlyHeartbeat())
        let view = Fixture.view(members: [Fixture.viewMember(me, join: 1), Fixture.viewMember(other, join: 2, phase: .active)], leases: [Fixture.lease(other, token: 1)])
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .notGranted, view: view), to: acquire.id, now: .zero)
        #expect(actions.events.isEmpty)
        #expect(machine.status == .standby)
    }

    // MARK: Heartbeat phase

    @Test func phase_putsPeriodicHeartbeatsOnItsGrid_evenWhenTicksComeLate() throws {
        // I = 1s, phase 300ms: the grid is …, 0.3s, 1.3s, 2.3s, …
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me, heartbeatPhase: .milliseconds(300))
        #expect(machine.start(now: at(.milliseconds(250))).last == .scheduleTick(at: at(.milliseconds(300))))
        #expect(machine.tick(now: at(.milliseconds(299))).last == .scheduleTick(at: at(.milliseconds(300))))
        let late = machine.tick(now: at(.milliseconds(340)))
        #expect(late.onlyHeartbeat() != nil)
        #expect(late.last == .scheduleTick(at: at(.milliseconds(1_300))))
        #expect(machine.tick(now: at(.milliseconds(1_300))).last == .scheduleTick(at: at(.milliseconds(2_300))))
    }

    @Test(arguments: [0, 999, 1_000, 1_001, 123_456_789])
    func phase_neverPutsTheNextHeartbeatMoreThanAnIntervalAway(sentAtMilliseconds: Int64) throws {
        for phase in [Duration.zero, .milliseconds(1), .milliseconds(999), .seconds(7), .milliseconds(-250)] {
            var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me, heartbeatPhase: phase)
            let now = at(.milliseconds(sentAtMilliseconds))
            guard case .scheduleTick(let next) = machine.start(now: now).last else {
                Issue.record("no tick scheduled")
                continue
            }
            #expect(next > now && next <= now + .seconds(1), "phase \(phase)")
            #expect((next - Instant.zero - phase).nanoseconds % 1_000_000_000 == 0, "phase \(phase)")
        }
    }

    // MARK: Renewal and self-fencing

    @Test func active_tickAtHeartbeat_renewsWithToken() throws {
        let configuration = try Fixture.configuration()
        var machine = try activeMachine(configuration)
        let actions = machine.tick(now: at(.seconds(1)))
        let renew = try #require(actions.onlyHeartbeat())
        #expect(actions == [
            .sendHeartbeat(expectedHeartbeat(.renew(token(1)), phase: .active, configuration: configuration, sentAt: at(.seconds(1))), renew.id),
            .scheduleTick(at: at(.seconds(2))),
        ])
    }

    @Test func active_tickBeforeHeartbeatDue_sendsNothing() throws {
        var machine = try activeMachine()
        #expect(machine.tick(now: at(.milliseconds(999))) == [.scheduleTick(at: at(.seconds(1)))])
    }

    @Test func renewal_confirmed_extendsLeaseFromItsSendTime() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: heldView()), to: renew.id, now: at(.milliseconds(1_700)))
        #expect(actions == [.leaseValid(until: at(.milliseconds(3_500))), .scheduleTick(at: at(.seconds(2)))])
    }

    @Test func selfFence_happensExactlyAtSentPlusTMinusI_withStopWorkByHalfIntervalBeforeExpiry() throws {
        var machine = try activeMachine()
        // The renewal sent at 1s is never answered; the grant was sent at 0.
        _ = machine.tick(now: at(.seconds(1)))
        #expect(machine.tick(now: at(.seconds(2)) - .nanoseconds(1)) == [.scheduleTick(at: at(.seconds(2)))])
        #expect(machine.activeToken == token(1))

        let actions = machine.tick(now: at(.seconds(2)))
        #expect(Array(actions.prefix(3)) == [.emit(.deactivate(.selfFenced)), .stopWork(.selfFenced), .stopWorkBy(at(.milliseconds(2_500)))])
        #expect(actions.intents == [.none])
        #expect(actions.heartbeats.map(\.heartbeat.phase) == [.stopping])
        #expect(machine.status == .stopping)
    }

    @Test func selfFence_countsFromSendTimeOfLastConfirmedRenewal_notFromReply() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        _ = machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: heldView()), to: renew.id, now: at(.milliseconds(1_900)))
        _ = machine.tick(now: at(.seconds(2)))  // renewal never answered
        #expect(machine.tick(now: at(.seconds(3)) - .nanoseconds(1)).events.isEmpty)
        let actions = machine.tick(now: at(.seconds(3)))
        #expect(Array(actions.prefix(3)) == [.emit(.deactivate(.selfFenced)), .stopWork(.selfFenced), .stopWorkBy(at(.milliseconds(3_500)))])
    }

    @Test func selfFence_grantAnsweredLate_countsFromAcquireSendTime() throws {
        var machine = try activeMachine(grantSentAt: at(.milliseconds(100)), grantAnsweredAt: at(.milliseconds(1_500)))
        _ = machine.tick(now: at(.milliseconds(1_500)))
        let actions = machine.tick(now: at(.milliseconds(2_100)))
        #expect(actions.events == [.deactivate(.selfFenced)])
        #expect(actions.contains(.stopWorkBy(at(.milliseconds(2_600)))))
    }

    /// A grant answered at or after its acquire's send time plus T − I, e.g. over a store round trip between
    /// T − I and T, comes too late to be used. Acquiring again would have the
    /// store extend a lease the member can never use, for ever, and keep the slot from a member that can.
    @Test func grantTooLateToUse_isReleased_andTheMemberRestsWithoutCompeting() throws {
        let configuration = try Fixture.configuration()  // I = 1 s, T = 3 s
        var machine = MemberStateMachine(configuration: configuration, member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let acquire = try #require(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: join.id, now: .zero).onlyHeartbeat())
        let late = machine.heartbeatReplied(
            HeartbeatReply(outcome: .granted(token(1)), view: heldView(phase: .standby)), to: acquire.id, now: at(.seconds(2))
        )
        #expect(late.events.isEmpty)
        #expect(late.intents == [.release(token(1))])
        let release = try #require(late.onlyHeartbeat())
        let free = Fixture.view(members: [Fixture.viewMember(me, join: 1, phase: .resting)])
        _ = machine.heartbeatReplied(HeartbeatReply(outcome: .released, view: free), to: release.id, now: at(.milliseconds(2_100)))
        #expect(machine.status == .resting)
        // Resting for T: it neither asks for the free slot nor reports itself eligible.
        let next = machine.tick(now: at(.milliseconds(3_100)))
        #expect(next.intents == [.none])
        #expect(next.heartbeats.map(\.heartbeat.phase) == [.resting])
    }

    /// A standby answered T − I or more after it sent (a slow store, or a wait behind the round trip under way)
    /// could not use a grant sent at that pace: it rests, neither acquiring a free slot nor reporting itself
    /// eligible, so it does not take, or preempt a member out of, a slot it cannot hold.
    @Test func answerTooLateToVouchForAGrant_makesAStandbyRest_insteadOfAcquiring() throws {
        let configuration = try Fixture.configuration()  // I = 1 s, T = 3 s
        var machine = MemberStateMachine(configuration: configuration, member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        // The slot is free: an answer in time would make this member acquire at once.
        let late = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: join.id, now: at(.seconds(2)))
        #expect(late.intents.isEmpty)
        #expect(machine.status == .resting)
        let next = machine.tick(now: at(.seconds(3)))
        #expect(next.intents == [.none])
        #expect(next.heartbeats.map(\.heartbeat.phase) == [.resting])
    }

    @Test func selfFenced_stopsRenewing_andReleasesAfterWorkStopped() throws {
        var machine = try activeMachine()
        _ = machine.tick(now: at(.seconds(1)))
        _ = machine.tick(now: at(.seconds(2)))
        #expect(machine.tick(now: at(.seconds(3))).intents == [.none])
        let actions = machine.workStopped(now: at(.milliseconds(3_100)))
        #expect(actions.intents == [.release(token(1))])
        #expect(machine.status == .stopping)
    }

    // MARK: Drain

    @Test func drain_active_stepsDown_releases_andStaysRestingUntilResumed() throws {
        var machine = try activeMachine()
        let drain = machine.drainRequested(now: at(.milliseconds(500)))
        #expect(drain.events == [.deactivate(.drained)])
        #expect(drain.workCues == [.stopWork(.drained)])
        let release = try #require(machine.workStopped(now: at(.milliseconds(600))).onlyHeartbeat())
        #expect(release.heartbeat.intent == .release(token(1)))
        _ = machine.heartbeatReplied(HeartbeatReply(outcome: .released, view: aloneView()), to: release.id, now: at(.milliseconds(650)))
        // A free slot on a fresh view does not tempt a drained member: it reports itself resting and asks for nothing.
        let tick = try #require(machine.tick(now: at(.seconds(2))).onlyHeartbeat())
        #expect(tick.heartbeat.phase == .resting)
        #expect(tick.heartbeat.intent == Heartbeat.Intent.none)
        let idle = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: tick.id, now: at(.milliseconds(2_050)))
        #expect(idle.intents.isEmpty)
        #expect(machine.status == .resting)
        let resume = try #require(machine.resumeRequested(now: at(.milliseconds(2_100))).onlyHeartbeat())
        #expect(resume.heartbeat.phase == .standby)
        let acquire = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: resume.id, now: at(.milliseconds(2_150)))
        #expect(acquire.intents == [.acquire])
    }

    @Test func drain_standby_neverAcquires_andAGrantInFlightIsGivenBack() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let acquire = try #require(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: join.id, now: at(.milliseconds(10))).onlyHeartbeat())
        #expect(acquire.heartbeat.intent == .acquire)
        #expect(machine.drainRequested(now: at(.milliseconds(20))).heartbeats.map(\.heartbeat.phase) == [.resting])
        let granted = machine.heartbeatReplied(HeartbeatReply(outcome: .granted(token(1)), view: heldView(phase: .standby)), to: acquire.id, now: at(.milliseconds(30)))
        #expect(granted.events.isEmpty)
        #expect(granted.intents == [.release(token(1))])
        #expect(machine.activeToken == nil)
    }

    @Test func heartbeatFailed_doesNotPostponeSelfFence() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        #expect(machine.heartbeatFailed(renew.id, now: at(.milliseconds(1_200))) == [.scheduleTick(at: at(.seconds(2)))])
        #expect(machine.tick(now: at(.seconds(2))).events == [.deactivate(.selfFenced)])
    }

    @Test func lateReply_toOvertakenRequest_isIgnored() throws {
        var machine = try activeMachine(try Fixture.configuration(activation: .seconds(5)))
        let first = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let second = try #require(machine.tick(now: at(.seconds(2))).onlyHeartbeat())
        _ = machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: heldView()), to: second.id, now: at(.milliseconds(2_100)))
        // The older request's answer arrives last and says the lease is gone: it is stale news.
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .lost, view: heldView()), to: first.id, now: at(.milliseconds(2_200)))
        #expect(actions == [.scheduleTick(at: at(.seconds(3)))])
        #expect(machine.activeToken == token(1))
    }

    @Test func reply_toUnknownRequest_isIgnored() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        _ = machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: heldView()), to: renew.id, now: at(.milliseconds(1_100)))
        let again = machine.heartbeatReplied(HeartbeatReply(outcome: .lost, view: heldView()), to: renew.id, now: at(.milliseconds(1_200)))
        #expect(again == [.scheduleTick(at: at(.seconds(2)))])
        #expect(machine.activeToken == token(1))
    }

    @Test func renewal_lost_deactivatesWithLeaseLostAndStopWorkNow() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let view = Fixture.view(members: [Fixture.viewMember(me, join: 1, phase: .active)])
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .lost, view: view), to: renew.id, now: at(.milliseconds(1_300)))
        #expect(Array(actions.prefix(3)) == [.emit(.deactivate(.leaseLost)), .stopWork(.leaseLost), .stopWorkBy(at(.milliseconds(1_300)))])
        #expect(machine.status == .stopping)
        #expect(machine.workStopped(now: at(.milliseconds(1_400))).intents == [.release(token(1))])
    }

    @Test func inFlightRequests_areCappedWhileStoreIsSilent() throws {
        var machine = try activeMachine(try Fixture.configuration(heartbeat: .milliseconds(100), activation: .seconds(3)))
        var sent = 0
        for step in 1...10 {
            sent += machine.tick(now: at(.milliseconds(100 * step))).heartbeats.count
        }
        #expect(sent == MemberStateMachine.maximumRequestsInFlight)
    }

    // MARK: Resigning

    @Test func workEnded_deactivatesResigned_releasesAtOnce() throws {
        let configuration = try Fixture.configuration()
        var machine = try activeMachine(configuration)
        let actions = machine.workEnded(now: at(.milliseconds(500)))
        let release = try #require(actions.onlyHeartbeat())
        #expect(actions == [
            .emit(.deactivate(.resigned)),
            .sendHeartbeat(expectedHeartbeat(.release(token(1)), phase: .stopping, configuration: configuration, sentAt: at(.milliseconds(500))), release.id),
            .scheduleTick(at: at(.milliseconds(1_500))),
        ])
    }

    @Test func workEnded_restsForT_thenCompetesAgain() throws {
        let configuration = try Fixture.configuration()
        var machine = try activeMachine(configuration)
        let release = try #require(machine.workEnded(now: at(.milliseconds(500))).onlyHeartbeat())
        let freeView = Fixture.view(members: [Fixture.viewMember(me, join: 1, phase: .stopping)])
        let afterRelease = machine.heartbeatReplied(HeartbeatReply(outcome: .released, view: freeView), to: release.id, now: at(.milliseconds(500)))
        #expect(afterRelease.heartbeats.map(\.heartbeat.phase) == [.resting])
        #expect(afterRelease.intents == [.none])
        #expect(machine.status == .resting)

        // While resting, a free slot is not taken even though this member is the only one.
        let restingView = Fixture.view(members: [Fixture.viewMember(me, join: 1, phase: .resting)])
        let tick = try #require(machine.tick(now: at(.milliseconds(1_500))).onlyHeartbeat())
        #expect(tick.heartbeat.intent == .none)
        let reply = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: restingView), to: tick.id, now: at(.milliseconds(1_500)))
        #expect(reply.heartbeats.isEmpty)
        #expect(reply.tick == at(.milliseconds(2_500)))

        _ = machine.tick(now: at(.milliseconds(2_500)))
        #expect(machine.status == .resting)
        let wake = machine.tick(now: at(.milliseconds(3_500)))
        #expect(machine.status == .standby)
        let hello = try #require(wake.onlyHeartbeat())
        #expect(hello.heartbeat.phase == .standby)
        let standbyView = Fixture.view(members: [Fixture.viewMember(me, join: 1)])
        let acquire = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: standbyView), to: hello.id, now: at(.milliseconds(3_500)))
        #expect(acquire.intents == [.acquire])
    }

    @Test func grant_whileResting_isGivenBackUnused() throws {
        var machine = try activeMachine()
        let release = try #require(machine.workEnded(now: at(.milliseconds(500))).onlyHeartbeat())
        // A grant to a stale acquire is answered after the member began resting.
        let rest = machine.heartbeatReplied(HeartbeatReply(outcome: .released, view: aloneView()), to: release.id, now: at(.milliseconds(500)))
        let hello = try #require(rest.onlyHeartbeat())
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .granted(token(2)), view: heldView(token: 2, phase: .resting)), to: hello.id, now: at(.milliseconds(600)))
        #expect(actions.events.isEmpty)
        #expect(actions.intents == [.release(token(2))])
    }

    // MARK: Shutdown

    @Test func shutdown_ofActive_deactivatesAndKeepsLeaseUntilWorkStopped() throws {
        var machine = try activeMachine()
        #expect(machine.shutdownRequested(now: at(.milliseconds(300))) == [.emit(.deactivate(.shutdown)), .stopWork(.shutdown), .scheduleTick(at: at(.seconds(1)))])
        #expect(machine.status == .stopping)
        // Still stopping at the next heartbeat: the lease is renewed, nobody may take the slot yet.
        #expect(machine.tick(now: at(.seconds(1))).intents == [.renew(token(1))])
    }

    @Test func shutdown_ofActive_afterWorkStopped_leavesReleasingLease_thenFinishes() throws {
        let configuration = try Fixture.configuration()
        var machine = try activeMachine(configuration)
        _ = machine.shutdownRequested(now: at(.milliseconds(300)))
        let actions = machine.workStopped(now: at(.milliseconds(400)))
        let leave = try #require(actions.onlyHeartbeat())
        #expect(actions == [
            .sendHeartbeat(expectedHeartbeat(.leave(releasing: token(1)), phase: .stopping, configuration: configuration, sentAt: at(.milliseconds(400))), leave.id),
            .scheduleTick(at: at(.milliseconds(1_400))),
        ])
        #expect(machine.status == .leaving)
        let done = machine.heartbeatReplied(HeartbeatReply(outcome: .left, view: Fixture.view(members: [])), to: leave.id, now: at(.milliseconds(450)))
        #expect(done == [.finish(nil)])
        #expect(machine.status == .finished)
    }

    @Test func shutdown_ofStandby_leavesAtOnce() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        _ = machine.start(now: .zero)
        let actions = machine.shutdownRequested(now: at(.milliseconds(10)))
        #expect(actions.intents == [.leave(releasing: nil)])
        let leave = try #require(actions.onlyHeartbeat())
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .left, view: Fixture.view(members: [])), to: leave.id, now: at(.milliseconds(20))) == [.finish(nil)])
    }

    @Test func shutdown_beforeStart_finishesAtOnce() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        #expect(machine.shutdownRequested(now: .zero) == [.finish(nil)])
        #expect(machine.status == .finished)
    }

    @Test func shutdown_leaveNeverAnswered_finishesAfterT() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        _ = machine.start(now: .zero)
        _ = machine.shutdownRequested(now: at(.milliseconds(10)))
        _ = machine.tick(now: at(.milliseconds(1_010)))
        _ = machine.tick(now: at(.milliseconds(2_010)))
        #expect(machine.tick(now: at(.milliseconds(3_010)) - .nanoseconds(1)).contains(.finish(nil)) == false)
        #expect(machine.tick(now: at(.milliseconds(3_010))) == [.finish(nil)])
    }

    @Test func shutdown_grantArrivingAfterShutdownBegan_isReleasedBeforeFinishing() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let acquire = try #require(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: join.id, now: .zero).onlyHeartbeat())
        let leave = try #require(machine.shutdownRequested(now: at(.milliseconds(10))).onlyHeartbeat())
        #expect(leave.heartbeat.intent == .leave(releasing: nil))

        // The store applied the acquire before the leave: the slot is this member's although it never acted.
        let granted = machine.heartbeatReplied(HeartbeatReply(outcome: .granted(token(1)), view: heldView(phase: .standby)), to: acquire.id, now: at(.milliseconds(20)))
        #expect(granted.events.isEmpty)
        #expect(granted.intents == [.leave(releasing: token(1))])
    }

    @Test func shutdown_ofPreemptedMemberStillStopping_leavesOnceWorkStopped() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let view = heldView(others: [Fixture.viewMember(try Fixture.member("heavy", weight: 90), join: 2)])
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: view), to: renew.id, now: at(.seconds(1))).workCues == [.stopWork(.preempted)])
        // Stopping already: no second deactivation, and the slot is still given back only once the work stopped.
        #expect(machine.shutdownRequested(now: at(.milliseconds(1_100))) == [.scheduleTick(at: at(.seconds(2)))])
        #expect(machine.workStopped(now: at(.milliseconds(1_200))).intents == [.leave(releasing: token(1))])
        #expect(machine.status == .leaving)
    }

    @Test func workStopped_withoutWorkToStop_isIgnored() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        _ = machine.start(now: .zero)
        #expect(machine.workStopped(now: at(.milliseconds(10))) == [.scheduleTick(at: at(.seconds(1)))])
        #expect(machine.status == .standby)
    }

    // MARK: Rejection

    @Test func rejection_ofStandby_finishesWithIt() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let rejection = HeartbeatRejection.activeGoalMismatch(group: Fixture.groupName, stored: 2, requested: 1)
        #expect(machine.heartbeatRejected(join.id, rejection, now: at(.milliseconds(5))) == [.finish(rejection)])
        #expect(machine.status == .finished)
        #expect(machine.tick(now: at(.seconds(5))).heartbeats.isEmpty)
    }

    /// The id is alive in the group: a live duplicate, or this member's own previous process that died less than
    /// T ago (a restart under systemd). The member asks again for T + I, by when a dead process's row has expired.
    @Test func idInUse_whileJoining_isAskedAgainForTPlusI_thenFinishesWithIt() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)  // I = 1 s, T = 3 s
        var request = try #require(machine.start(now: .zero).onlyHeartbeat())
        let rejection = HeartbeatRejection.memberIDInUse(me.id, host: "elsewhere", pid: 77)
        for second in 1...3 {
            #expect(machine.heartbeatRejected(request.id, rejection, now: at(.seconds(second - 1))).contains { if case .finish = $0 { true } else { false } } == false)
            request = try #require(machine.tick(now: at(.seconds(second))).onlyHeartbeat())
            #expect(request.heartbeat.intent == .none)
        }
        #expect(machine.heartbeatRejected(request.id, rejection, now: at(.seconds(4))) == [.finish(rejection)])
        #expect(machine.status == .finished)
    }

    @Test func idInUse_untilTheDeadProcesssRowExpires_thenJoins() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let rejection = HeartbeatRejection.memberIDInUse(me.id, host: "host-me", pid: 4241)
        #expect(machine.heartbeatRejected(join.id, rejection, now: at(.milliseconds(5))) == [.scheduleTick(at: at(.seconds(1)))])
        let retry = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: aloneView()), to: retry.id, now: at(.milliseconds(1_010)))
        #expect(actions.intents == [.acquire])
        #expect(machine.status == .standby)
    }

    @Test func rejection_ofActive_stopsWorkNow_thenFinishesWithIt() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let rejection = HeartbeatRejection.activeGoalMismatch(group: Fixture.groupName, stored: 2, requested: 1)
        let actions = machine.heartbeatRejected(renew.id, rejection, now: at(.milliseconds(1_100)))
        #expect(Array(actions.prefix(3)) == [.emit(.deactivate(.leaseLost)), .stopWork(.leaseLost), .stopWorkBy(at(.milliseconds(1_100)))])
        #expect(machine.workStopped(now: at(.milliseconds(1_200))) == [.finish(rejection)])
    }

    @Test func rejection_ofStoppingMember_winsOverAShutdownRequestedLater() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let rejection = HeartbeatRejection.activeGoalMismatch(group: Fixture.groupName, stored: 2, requested: 1)
        _ = machine.heartbeatRejected(renew.id, rejection, now: at(.milliseconds(1_100)))
        #expect(machine.shutdownRequested(now: at(.milliseconds(1_150))).events.isEmpty)
        #expect(machine.workStopped(now: at(.milliseconds(1_200))) == [.finish(rejection)])
    }

    // MARK: Preparation and preemption

    @Test func prepare_nextInLineWhileActiveSilentForP_thenWithdrawnAfterTwoT() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(preparation: .milliseconds(1_500)), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let silent = Fixture.view(
            members: [Fixture.viewMember(other, join: 1, phase: .active, age: .milliseconds(1_500)), Fixture.viewMember(me, join: 2)],
            leases: [Fixture.lease(other, token: 1, remaining: .milliseconds(1_500))]
        )
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: silent), to: join.id, now: at(.milliseconds(100)))
        #expect(actions == [.emit(.prepareToActivate), .scheduleTick(at: at(.seconds(1)))])
        #expect(machine.status == .preparing)
        #expect(machine.tick(now: at(.seconds(1))).heartbeats.map(\.heartbeat.phase) == [.preparing])

        #expect(machine.tick(now: at(.milliseconds(6_100)) - .nanoseconds(1)).events.isEmpty)
        #expect(machine.tick(now: at(.milliseconds(6_100))).events == [.prepareWithdrawn])
        #expect(machine.status == .standby)

        // The same reason again does not prepare again until it has gone away once.
        let again = try #require(machine.tick(now: at(.milliseconds(7_100))).onlyHeartbeat())
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .notGranted, view: silent), to: again.id, now: at(.milliseconds(7_100))).events.isEmpty)
        let healthy = Fixture.view(
            members: [Fixture.viewMember(other, join: 1, phase: .active), Fixture.viewMember(me, join: 2)],
            leases: [Fixture.lease(other, token: 1)]
        )
        let third = try #require(machine.tick(now: at(.milliseconds(8_100))).onlyHeartbeat())
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .notGranted, view: healthy), to: third.id, now: at(.milliseconds(8_100))).events.isEmpty)
        let fourth = try #require(machine.tick(now: at(.milliseconds(9_100))).onlyHeartbeat())
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .notGranted, view: silent), to: fourth.id, now: at(.milliseconds(9_100))).events == [.prepareToActivate])
    }

    @Test func prepare_withdrawnWhenActiveRecovers() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(preparation: .seconds(1)), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        func view(age: Duration) -> GroupView {
            Fixture.view(
                members: [Fixture.viewMember(other, join: 1, phase: .active, age: age), Fixture.viewMember(me, join: 2)],
                leases: [Fixture.lease(other, token: 1)]
            )
        }
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: view(age: .seconds(1))), to: join.id, now: .zero).events == [.prepareToActivate])
        let next = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .notGranted, view: view(age: .milliseconds(200))), to: next.id, now: at(.seconds(1))).events == [.prepareWithdrawn])
        #expect(machine.status == .standby)
    }

    @Test func prepare_notSentWithoutPreparationInterval() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(preparation: nil), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let view = Fixture.view(
            members: [Fixture.viewMember(other, join: 1, phase: .active, age: .seconds(2)), Fixture.viewMember(me, join: 2)],
            leases: [Fixture.lease(other, token: 1)]
        )
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: view), to: join.id, now: .zero).events.isEmpty)
    }

    @Test func shutdown_ofPreparedStandby_withdrawsPreparation() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(preparation: .seconds(1)), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let view = Fixture.view(
            members: [Fixture.viewMember(other, join: 1, phase: .active, age: .seconds(2)), Fixture.viewMember(me, join: 2)],
            leases: [Fixture.lease(other, token: 1)]
        )
        _ = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: view), to: join.id, now: .zero)
        let actions = machine.shutdownRequested(now: at(.milliseconds(10)))
        #expect(actions.events == [.prepareWithdrawn])
        #expect(actions.intents == [.leave(releasing: nil)])
    }

    @Test func preemption_successor_isToldToPrepare() throws {
        let heavy = try Fixture.member("me", weight: 90)
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: heavy)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let view = Fixture.view(
            members: [Fixture.viewMember(other, join: 1, phase: .active), Fixture.viewMember(heavy, join: 2)],
            leases: [Fixture.lease(other, token: 1)]
        )
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: view), to: join.id, now: .zero).events == [.prepareToActivate])
    }

    @Test func preemption_yielder_deactivatesPreempted_keepsRenewingUntilWorkStopped_thenReleases() throws {
        var machine = try activeMachine()
        let heavy = try Fixture.member("heavy", weight: 90)
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let view = heldView(others: [Fixture.viewMember(heavy, join: 2)])
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: view), to: renew.id, now: at(.seconds(1)))
        #expect(actions == [.leaseValid(until: at(.milliseconds(3_500))), .emit(.deactivate(.preempted)), .stopWork(.preempted), .scheduleTick(at: at(.seconds(2)))])
        #expect(machine.tick(now: at(.seconds(2))).intents == [.renew(token(1))])
        #expect(machine.workStopped(now: at(.milliseconds(2_500))).intents == [.release(token(1))])
    }

    @Test func preemption_byEqualWeight_doesNothing() throws {
        var machine = try activeMachine()
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let view = heldView(others: [Fixture.viewMember(try Fixture.member("aaa", weight: 50), join: 2)])
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: view), to: renew.id, now: at(.seconds(1))).events.isEmpty)
        #expect(machine.activeToken == token(1))
    }

    @Test func preemption_disabled_doesNothing() throws {
        var machine = try activeMachine(try Fixture.configuration(preemption: false))
        let renew = try #require(machine.tick(now: at(.seconds(1))).onlyHeartbeat())
        let view = heldView(others: [Fixture.viewMember(try Fixture.member("heavy", weight: 1_000), join: 2)])
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .renewed, view: view), to: renew.id, now: at(.seconds(1))).events.isEmpty)
    }

    @Test func nextInLine_slotFreesBeforeNextHeartbeat_asksJustAfter() throws {
        var machine = MemberStateMachine(configuration: try Fixture.configuration(), member: me)
        let join = try #require(machine.start(now: .zero).onlyHeartbeat())
        let view = Fixture.view(
            members: [Fixture.viewMember(other, join: 1, phase: .active, age: .milliseconds(2_600)), Fixture.viewMember(me, join: 2)],
            leases: [Fixture.lease(other, token: 1, remaining: .milliseconds(400))]
        )
        let actions = machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: view), to: join.id, now: at(.milliseconds(100)))
        #expect(actions == [.scheduleTick(at: at(.milliseconds(501)))])
        let next = try #require(machine.tick(now: at(.milliseconds(501))).onlyHeartbeat())
        let free = Fixture.view(members: [Fixture.viewMember(me, join: 2)])
        #expect(machine.heartbeatReplied(HeartbeatReply(outcome: .none, view: free), to: next.id, now: at(.milliseconds(501))).intents == [.acquire])
    }
}
