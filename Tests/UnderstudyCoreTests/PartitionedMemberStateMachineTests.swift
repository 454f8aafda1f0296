import Testing
import UnderstudyCore

/// Members of one partitioned group against one ledger, on one virtual clock. Heartbeats are applied at once,
/// announcements delivered at once, and work stops at once when told to (unless a member is told to hold it).
private struct PartitionedGroup {
    var ledger = GroupLedger(group: Fixture.groupName, activeGoal: 1)
    var now = at(.seconds(10))
    var machines: [MemberID: PartitionedMemberStateMachine] = [:]
    /// Members whose heartbeats are lost (the store is unreachable for them).
    var cutOff: Set<MemberID> = []
    /// Members whose work does not stop by itself when told to.
    var holdingWork: Set<MemberID> = []
    var pendingStops: [MemberID: [Int]] = [:]
    var ticks: [MemberID: Instant] = [:]
    /// Every action each member took, in order.
    var log: [MemberID: [PartitionedMemberStateMachine.Action]] = [:]
    /// Heartbeats sent by each member.
    var heartbeats: [MemberID: Int] = [:]
    /// (partition, member) for every partition a member acts on; checked on every change.
    var acting: [Int: MemberID] = [:]

    let configuration: PartitionedGroupConfiguration

    init(partitions: Int, preemption: Bool = true) throws {
        configuration = try PartitionedGroupConfiguration(
            group: Fixture.configuration(preemption: preemption),
            partitions: partitions
        )
    }

    mutating func join(_ info: MemberInfo) {
        var machine = PartitionedMemberStateMachine(configuration: configuration, member: info)
        let actions = machine.start(now: now)
        machines[info.id] = machine
        run(actions, of: info.id)
    }

    mutating func drain(_ id: MemberID) {
        guard var machine = machines[id] else { return }
        let actions = machine.drainRequested(now: now)
        machines[id] = machine
        run(actions, of: id)
    }

    mutating func resume(_ id: MemberID) {
        guard var machine = machines[id] else { return }
        let actions = machine.resumeRequested(now: now)
        machines[id] = machine
        run(actions, of: id)
    }

    mutating func shutDown(_ id: MemberID) {
        guard var machine = machines[id] else { return }
        let actions = machine.shutdownRequested(now: now)
        machines[id] = machine
        run(actions, of: id)
    }

    /// The member's process dies: it sends nothing more.
    mutating func crash(_ id: MemberID) {
        machines[id] = nil
        ticks[id] = nil
        for (partition, holder) in acting where holder == id { acting[partition] = nil }
    }

    mutating func stopHeldWork(of id: MemberID) {
        holdingWork.remove(id)
        for partition in pendingStops.removeValue(forKey: id) ?? [] {
            guard var machine = machines[id] else { return }
            let actions = machine.workStopped(partition: partition, now: now)
            machines[id] = machine
            acting[partition] = nil
            run(actions, of: id)
        }
    }

    /// Moves the clock forward, firing every tick that falls due on the way.
    mutating func advance(by duration: Duration) {
        let end = now + duration
        while let (id, due) = ticks.filter({ $0.value <= end }).min(by: { $0.value < $1.value }) {
            now = max(now, due)
            ticks[id] = nil
            guard var machine = machines[id] else { continue }
            let actions = machine.tick(now: now)
            machines[id] = machine
            run(actions, of: id)
        }
        now = end
    }

    func owned(by id: MemberID) -> Set<Int> { Set(machines[id]?.activePartitions.keys.map { $0 } ?? []) }

    var ownedEverywhere: Int { machines.values.reduce(0) { $0 + $1.activePartitions.count } }

    private mutating func run(_ actions: [PartitionedMemberStateMachine.Action], of id: MemberID) {
        log[id, default: []] += actions
        var followUps: [(MemberID, [PartitionedMemberStateMachine.Action])] = []
        for action in actions {
            switch action {
            case .sendHeartbeat(let heartbeat, let request):
                heartbeats[id, default: 0] += 1
                guard !cutOff.contains(id) else {
                    guard var machine = machines[id] else { continue }
                    followUps.append((id, machine.heartbeatFailed(request, now: now)))
                    machines[id] = machine
                    continue
                }
                let before = ledger
                let result = Result { () throws(HeartbeatRejection) in try ledger.apply(heartbeat, at: StoreMoment(now: now)) }
                guard var machine = machines[id] else { continue }
                switch result {
                case .success(let reply): followUps.append((id, machine.heartbeatReplied(reply, to: request, now: now)))
                case .failure(let rejection): followUps.append((id, machine.heartbeatRejected(request, rejection, now: now)))
                }
                machines[id] = machine
                if ledger.shouldAnnounce(heartbeat, from: before) {
                    for other in machines.keys.sorted() where other != id && !cutOff.contains(other) {
                        var listener = machines[other]!
                        followUps.append((other, listener.changeAnnounced(now: now)))
                        machines[other] = listener
                    }
                }
            case .startWork(let partition, _):
                #expect(acting[partition] == nil, "partition \(partition) started on \(id) while \(acting[partition]!) acts on it")
                acting[partition] = id
            case .stopWork(let partition, _):
                if holdingWork.contains(id) {
                    pendingStops[id, default: []].append(partition)
                } else {
                    acting[partition] = nil
                    guard var machine = machines[id] else { continue }
                    followUps.append((id, machine.workStopped(partition: partition, now: now)))
                    machines[id] = machine
                }
            case .scheduleTick(let at):
                ticks[id] = at
            case .finish:
                ticks[id] = nil
                machines[id] = nil
            case .emit, .stopWorkBy, .leaseValid:
                break
            }
        }
        for (member, actions) in followUps { run(actions, of: member) }
    }
}

private func events(_ actions: [PartitionedMemberStateMachine.Action]) -> [PartitionEvent] {
    actions.compactMap { if case .emit(let event) = $0 { event } else { nil } }
}

@Suite("Partitioned member state machine")
struct PartitionedMemberStateMachineTests {
    @Test func aLoneMember_acquiresEveryPartition_inOneHeartbeat_eachWithItsOwnToken() throws {
        var group = try PartitionedGroup(partitions: 16)
        let a = try Fixture.member("a")
        group.join(a)
        #expect(group.owned(by: a.id) == Set(0..<16))
        // The join, then one heartbeat that acquires all sixteen.
        #expect(group.heartbeats[a.id] == 2)
        let tokens = group.machines[a.id]!.activePartitions.values
        #expect(Set(tokens).count == 16)
        let assigned = events(group.log[a.id]!).filter { if case .assigned = $0 { true } else { false } }
        #expect(assigned.count == 16)
    }

    @Test func aJoin_movesPartitionsOnlyToTheNewcomer_afterTheOldOwnerStopped_andInterruptsNoOther() throws {
        var group = try PartitionedGroup(partitions: 16)
        let a = try Fixture.member("a"), b = try Fixture.member("b"), c = try Fixture.member("c")
        group.join(a)
        group.join(b)
        let beforeC = (a: group.owned(by: a.id), b: group.owned(by: b.id))
        #expect(beforeC.a.count == 8 && beforeC.b.count == 8)
        let logLengths = (a: group.log[a.id]!.count, b: group.log[b.id]!.count)
        group.join(c)
        #expect(group.ownedEverywhere == 16)
        #expect(group.owned(by: c.id).count >= 5)
        #expect(group.owned(by: a.id).isSubset(of: beforeC.a))
        #expect(group.owned(by: b.id).isSubset(of: beforeC.b))
        // What a and b were told after c joined: only revocations of what moved, each a rebalance.
        let revokedA = events(Array(group.log[a.id]![logLengths.a...])).compactMap { event -> Int? in
            guard case .revoked(let partition, let reason) = event else { return nil }
            #expect(reason == .rebalanced)
            return partition
        }
        let revokedB = events(Array(group.log[b.id]![logLengths.b...])).compactMap { event -> Int? in
            if case .revoked(let partition, _) = event { partition } else { nil }
        }
        #expect(Set(revokedA + revokedB) == group.owned(by: c.id))
        #expect(revokedA.count + revokedB.count == group.owned(by: c.id).count)
    }

    @Test func aHandover_waitsForTheOldOwnersWorkToStop() throws {
        var group = try PartitionedGroup(partitions: 4)
        let a = try Fixture.member("a"), b = try Fixture.member("b")
        group.join(a)
        group.holdingWork = [a.id]
        group.join(b)
        // a was told to stop two partitions; until they have stopped, b holds nothing.
        #expect(group.owned(by: a.id).count == 2)
        #expect(group.owned(by: b.id).isEmpty)
        #expect(group.ledger.view(now: group.now).leases.allSatisfy { $0.holder == a.id })
        group.advance(by: .seconds(1))
        #expect(group.owned(by: b.id).isEmpty)
        group.stopHeldWork(of: a.id)
        #expect(group.owned(by: b.id).count == 2)
        #expect(group.ownedEverywhere == 4)
    }

    @Test func aCrashedMembersPartitions_areTakenOverWithinTPlusTwoHeartbeats_byTheOthersOnly() throws {
        var group = try PartitionedGroup(partitions: 12)
        let a = try Fixture.member("a"), b = try Fixture.member("b"), c = try Fixture.member("c")
        for member in [a, b, c] { group.join(member) }
        let kept = (a: group.owned(by: a.id), b: group.owned(by: b.id))
        let lost = group.owned(by: c.id)
        #expect(lost.count == 4)
        group.crash(c.id)
        group.advance(by: .seconds(3) + .seconds(2))
        #expect(group.ownedEverywhere == 12)
        #expect(kept.a.isSubset(of: group.owned(by: a.id)))
        #expect(kept.b.isSubset(of: group.owned(by: b.id)))
        #expect(group.owned(by: a.id).union(group.owned(by: b.id)) == Set(0..<12))
    }

    @Test func aMemberCutOffFromTheStore_fencesEveryPartition_beforeAnyoneElseCanBeGrantedOne() throws {
        var group = try PartitionedGroup(partitions: 6)
        let a = try Fixture.member("a"), b = try Fixture.member("b")
        group.join(a)
        group.join(b)
        let cut = group.owned(by: a.id)
        group.cutOff = [a.id]
        let start = group.now
        group.advance(by: .milliseconds(2_500))
        // a's last renewal was sent at most I ago; it fences at s + T − I, before the store's lease ends at s + T.
        #expect(group.owned(by: a.id).isEmpty)
        let fenced = events(group.log[a.id]!).compactMap { event -> Int? in
            if case .revoked(let partition, .selfFenced) = event { partition } else { nil }
        }
        #expect(Set(fenced) == cut)
        #expect(group.ledger.view(now: group.now).leases.contains { $0.holder == a.id } || group.now >= start + .seconds(3))
        group.advance(by: .seconds(3))
        #expect(group.owned(by: b.id) == Set(0..<6))
    }

    @Test func shutdown_stopsEveryPartition_releasesEachOnceStopped_thenLeaves() throws {
        var group = try PartitionedGroup(partitions: 8)
        let a = try Fixture.member("a"), b = try Fixture.member("b")
        group.join(a)
        group.join(b)
        group.holdingWork = [a.id]
        let sentBefore = group.heartbeats[a.id]!
        group.shutDown(a.id)
        #expect(group.owned(by: a.id).isEmpty)
        #expect(group.owned(by: b.id).count == 4)
        group.stopHeldWork(of: a.id)
        #expect(group.machines[a.id] == nil)
        #expect(group.owned(by: b.id) == Set(0..<8))
        let sent = group.log[a.id]!.compactMap { action -> PartitionHeartbeat? in
            if case .sendHeartbeat(let heartbeat, _) = action { heartbeat } else { nil }
        }.suffix(group.heartbeats[a.id]! - sentBefore)
        let released = sent.flatMap(\.operations).compactMap { operation -> Int? in
            if case .release(let partition, _) = operation { partition } else { nil }
        }
        #expect(released.count == 4)
        // Renewals while the work stops, a release as each stops, and the last with the leave.
        #expect(sent.last?.leaving == true)
        #expect(sent.filter(\.leaving).count == 1)
        #expect(sent.count <= 5)
    }

    @Test func aDrainedMember_givesEveryPartitionBack_staysInTheGroupResting_untilResumed() throws {
        var group = try PartitionedGroup(partitions: 8)
        let a = try Fixture.member("a"), b = try Fixture.member("b")
        group.join(a)
        group.join(b)
        let logLength = group.log[a.id]!.count
        group.drain(a.id)
        #expect(group.owned(by: a.id).isEmpty)
        #expect(group.owned(by: b.id) == Set(0..<8))
        let revoked = events(Array(group.log[a.id]![logLength...])).compactMap { event -> DeactivationReason? in
            if case .revoked(_, let reason) = event { reason } else { nil }
        }
        #expect(revoked == Array(repeating: .drained, count: 4))
        // For longer than a lease it stays a member, resting, and takes nothing.
        group.advance(by: group.configuration.group.activationInterval * 3)
        #expect(group.owned(by: a.id).isEmpty && group.ownedEverywhere == 8)
        #expect(group.machines[a.id]?.status == .resting)
        #expect(group.ledger.view(now: group.now).members.contains { $0.info.id == a.id && $0.phase == .resting })
        group.resume(a.id)
        group.advance(by: group.configuration.group.heartbeatInterval * 3)
        #expect(group.owned(by: a.id).count == 4 && group.owned(by: b.id).count == 4)
    }

    @Test func withoutPreemption_aNewcomerTakesOnlyPartitionsThatComeFree() throws {
        var group = try PartitionedGroup(partitions: 8, preemption: false)
        let a = try Fixture.member("a"), b = try Fixture.member("b")
        group.join(a)
        group.join(b)
        #expect(group.owned(by: a.id) == Set(0..<8))
        #expect(group.owned(by: b.id).isEmpty)
        group.shutDown(a.id)
        #expect(group.owned(by: b.id) == Set(0..<8))
    }

    @Test func aSteadyGroup_movesNothing_andSendsOneHeartbeatPerMemberPerInterval() throws {
        var group = try PartitionedGroup(partitions: 64)
        let members = try (0..<4).map { try Fixture.member("m\($0)") }
        for member in members { group.join(member) }
        let owners = members.map { group.owned(by: $0.id) }
        let sent = members.map { group.heartbeats[$0.id]! }
        group.advance(by: .seconds(10))
        #expect(members.map { group.owned(by: $0.id) } == owners)
        for (index, member) in members.enumerated() {
            #expect((10...11).contains(group.heartbeats[member.id]! - sent[index]))
        }
    }

    @Test func aGrantOfATokenAlreadyReleased_isGivenBackUnused() throws {
        let configuration = try PartitionedGroupConfiguration(group: Fixture.configuration(), partitions: 2)
        let a = try Fixture.member("a")
        var machine = PartitionedMemberStateMachine(configuration: configuration, member: a)
        func sent(_ actions: [PartitionedMemberStateMachine.Action]) -> (PartitionHeartbeat, PartitionedMemberStateMachine.RequestID)? {
            for case .sendHeartbeat(let heartbeat, let id) in actions { return (heartbeat, id) }
            return nil
        }
        func view(_ leases: [GroupView.Lease]) -> GroupView {
            GroupView(
                group: Fixture.groupName, activeGoal: 2, partitioned: true, lastToken: leases.map(\.token).max(),
                members: [Fixture.viewMember(a, join: 1, phase: .active)], leases: leases
            )
        }
        let held = [Fixture.lease(a, token: 1, slot: 0), Fixture.lease(a, token: 2, slot: 1)]
        let (_, join) = try #require(sent(machine.start(now: at(.zero))))
        let (acquire, acquireID) = try #require(sent(machine.heartbeatReplied(.init(outcomes: [], left: false, view: view([])), to: join, now: at(.zero))))
        #expect(acquire.operations == [.acquire(0), .acquire(1)])
        _ = machine.heartbeatReplied(.init(outcomes: [.granted(token(1)), .granted(token(2))], left: false, view: view(held)), to: acquireID, now: at(.zero))
        #expect(machine.activePartitions == [0: token(1), 1: token(2)])

        // Partition 0's work ends; the release is sent, and its answer is lost: it may be applied later.
        let (release, releaseID) = try #require(sent(machine.workEnded(partition: 0, now: at(.seconds(1)))))
        #expect(release.operations.contains(.release(0, token(1))))
        _ = machine.heartbeatFailed(releaseID, now: at(.seconds(1)))
        // After its rest, the member acquires partition 0 again, which the newest view it has shows as its own.
        var actions: [PartitionedMemberStateMachine.Action] = []
        var instant = at(.seconds(1))
        while sent(actions)?.0.operations.contains(.acquire(0)) != true, instant < at(.seconds(10)) {
            instant = instant + .milliseconds(250)
            actions = machine.tick(now: instant)
            if let (_, id) = sent(actions), sent(actions)?.0.operations.contains(.acquire(0)) != true {
                _ = machine.heartbeatFailed(id, now: instant)
            }
        }
        let (again, againID) = try #require(sent(actions))
        // The store, which had not applied the release yet, confirms the old token.
        let outcomes = again.operations.map { operation -> PartitionHeartbeatReply.Outcome in
            switch operation {
            case .acquire(0): .granted(token(1))
            case .acquire: .notGranted
            case .renew: .lost
            case .release: .released
            }
        }
        let answer = machine.heartbeatReplied(.init(outcomes: outcomes, left: false, view: view(held)), to: againID, now: instant)
        #expect(!answer.contains { if case .startWork(0, _) = $0 { true } else { false } })
        #expect(machine.activePartitions[0] == nil)
        #expect(sent(answer)?.0.operations.contains(.release(0, token(1))) == true)
    }

    /// Found by the benchmark and by the partition simulator (as a hang): with a heartbeat still unanswered when
    /// the next fell due, every tick asked for the next at the same instant, so the shell spun until the answer.
    @Test func whileAHeartbeatIsOut_theMachineWaitsForItsAnswer_ratherThanTickingAtOnce() throws {
        let configuration = try PartitionedGroupConfiguration(group: Fixture.configuration(), partitions: 4)
        var machine = PartitionedMemberStateMachine(configuration: configuration, member: try Fixture.member("a"))
        _ = machine.start(now: at(.zero))
        // The periodic heartbeat is due at 1 s, but the first is still unanswered: no busy loop of ticks until then.
        for offset in [1_000, 1_500, 2_900] {
            let now = at(.milliseconds(offset))
            let actions = machine.tick(now: now)
            #expect(!actions.contains { if case .sendHeartbeat = $0 { true } else { false } })
            let next = actions.compactMap { if case .scheduleTick(let at) = $0 { at } else { nil } }.last
            #expect(next.map { $0 > now } == true, "ticked again at once at \(offset) ms")
        }
        // Given up on after T: the next heartbeat goes out.
        let actions = machine.tick(now: at(.seconds(3)))
        #expect(actions.contains { if case .sendHeartbeat = $0 { true } else { false } })
    }
}
