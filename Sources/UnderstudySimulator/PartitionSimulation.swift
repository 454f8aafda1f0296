import UnderstudyCore

/// One deterministic run of a partitioned group: the real ``PartitionedMemberStateMachine``s of its members
/// against a simulated store applying the real ``GroupLedger/apply(_:at:)-(PartitionHeartbeat,_)``, with simulated
/// network, clocks, work and faults, all driven by one seed.
///
/// The simulator plays every part outside the core the way the runtime plays it:
/// - **The store** applies heartbeats one at a time on the store's clock (the real timeline), with a token floor
///   of its wall clock in µs, and announces a join or a release to the other members.
/// - **Each member's clock** is the real timeline plus an offset: every `now` given to a member, and every
///   instant it returns, is on its own monotonic clock.
/// - **The store client** carries one call at a time, in order, each given up after
///   ``PartitionSimulationOptions/callTimeout``; the machine itself keeps at most one heartbeat waiting.
/// - **A partition's work** runs from `startWork` until it has stopped: after `stopWork` at its own pace (most
///   within 50 ms, the others within ``PartitionSimulationOptions/stopPace``), then reported with
///   `workEnded(partition:now:)`, which is `workStopped` for work told to stop and a resignation for work that
///   ended otherwise (its watchdog killed it while the member was frozen).
/// - **The watchdog** of each partition's work is given the newest deadline (`leaseValid`, `stopWorkBy`) and kills
///   the work I/4 before it, even while the member process is frozen, and at once when the process dies.
///
/// The invariants (``PartitionInvariant``) are checked after every event; the first violation ends the run.
public struct PartitionSimulation: Sendable {
    public let seed: UInt64
    public let options: PartitionSimulationOptions

    private let configuration: PartitionedGroupConfiguration
    /// Computes the assignment the members compute, from the store's view.
    private let probe: PartitionedMemberStateMachine
    private var random: SimulationRandom
    private var queue = EventQueue<PartitionSimulationEvent>()
    private var now: Int64 = 0
    private let end: Int64
    private let faultEnd: Int64
    private var hosts: [PartitionHost] = []
    private var ledger: GroupLedger
    /// The store's wall clock at real time zero, in µs since 1970: the token floor.
    private let wallOrigin: UInt64
    private var storeBusyUntil: Int64 = 0
    private var outage = false
    private var slow = false
    private var works: [Int: PartitionWork] = [:]
    private var nextWork = 0
    private var nextCall: UInt64 = 1

    // The checker's records.
    private var grantedTokens: [Int: FencingToken] = [:]
    /// The member index and process each (partition, token) was granted to.
    private var grants: [PartitionGrant: (host: Int, process: Int)] = [:]
    private var startedTokens: [Int: FencingToken] = [:]
    /// Faults now in effect (outage, slow store, frozen or isolated members).
    private var activeFaults = 0
    private var lastDisturbance: Int64 = 0
    /// When the group became settled after the last disturbance, if it has.
    private var settledAt: Int64?
    private var settledOwners: [MemberID]?
    /// Settled with no fault in effect and nothing changed since: nothing may move.
    private var steady = false
    private var pendingChange: PendingPartitionChange?
    private var lastShape: StoreShape?
    private var shapeChangedAt: Int64 = 0
    private var cachedOwners: (StoreShape, [MemberID]?)?
    /// Why the group was last judged not settled, and which member it is about.
    private var unsettledBecause: (reason: StaticString, host: Int?) = ("not started", nil)
    /// Something the settled state depends on may have changed since it was last judged.
    private var changed = false

    private var violation: PartitionInvariantViolation?
    private var traceHash = TraceHash()
    private var traceLength = 0
    private var recentTrace = RecentTrace<PartitionTraceEntry>()
    private var changes: [PartitionChange] = []
    private var recoveryTime: Duration?
    private var handovers = 0
    private var steadyHeartbeats = 0
    private var steadyMemberTime: Int64 = 0
    private var worstOverCeiling = Int.min
    private var worstUnderFloor = Int.max
    private var injected: [PartitionFault: Int] = [:]

    /// Prepares the run of `seed`; nothing happens until ``run()``.
    public init(seed: UInt64, options: PartitionSimulationOptions) throws(PartitionSimulationOptionsError) {
        configuration = try options.configuration()
        self.seed = seed
        self.options = options
        probe = PartitionedMemberStateMachine(
            configuration: configuration,
            member: try! MemberInfo(id: MemberID("probe"), incarnation: "", host: "sim", pid: 0)
        )
        random = SimulationRandom(seed: seed)
        ledger = GroupLedger(group: PartitionSimulationOptions.group, activeGoal: options.partitions)
        faultEnd = options.effectiveFaultWindow.nanoseconds
        end = faultEnd + options.effectiveQuietTail.nanoseconds
        wallOrigin = 1_700_000_000_000_000 + UInt64(random.int(in: 0...100_000_000_000_000))
        for _ in 0..<options.members { addHost(weight: Self.baseWeight) }
        for index in hosts.indices {
            queue.schedule(.restart(index), at: random.duration(in: .zero...options.heartbeatInterval).nanoseconds)
        }
        scheduleFaults()
    }

    static let baseWeight = 100

    private mutating func addHost(weight: Int) {
        let clock = MemberClock(offset: random.int(in: 0...1_000_000_000_000), ratePPM: 0)
        hosts.append(PartitionHost(id: try! MemberID("m\(hosts.count + 1)"), weight: weight, clock: clock))
    }

    // MARK: Running

    /// Runs to the end of the quiet tail and returns what happened; the run stops at the first violation.
    public mutating func run() -> PartitionSimulationResult {
        let bound = options.livenessBound.nanoseconds
        while violation == nil, let (time, event) = queue.popFirst() {
            if settledAt == nil, activeFaults == 0, time >= faultEnd, time > lastDisturbance + bound {
                now = lastDisturbance + bound
                let who = unsettledBecause.host.map { " (m\($0 + 1))" } ?? ""
                violate(.liveness, "the group was not settled within \(options.livenessBound.formatted) of the last fault's effect at \(Instant(nanoseconds: lastDisturbance)): \(unsettledBecause.reason)\(who)")
                break
            }
            guard time <= max(end, lastDisturbance + bound) else { break }
            let elapsed = time - now
            if steady { steadyMemberTime += elapsed * Int64(hosts.count(where: { $0.machine != nil })) }
            now = time
            handle(event)
            if violation == nil, changed {
                changed = false
                updateSettled()
            }
        }
        if violation == nil, let settledAt, settledAt >= lastDisturbance {
            recoveryTime = .nanoseconds(settledAt - lastDisturbance)
        }
        return PartitionSimulationResult(
            seed: seed,
            violation: violation,
            traceHash: traceHash,
            traceLength: traceLength,
            changes: changes,
            recoveryTime: recoveryTime,
            handovers: handovers,
            heartbeatsPerMemberInterval: steadyMemberTime == 0
                ? nil : Double(steadyHeartbeats) * Double(options.heartbeatInterval.nanoseconds) / Double(steadyMemberTime),
            worstOverCeiling: worstOverCeiling == .min ? nil : worstOverCeiling,
            worstUnderFloor: worstUnderFloor == .max ? nil : worstUnderFloor,
            injected: injected,
            end: Instant(nanoseconds: now)
        )
    }

    private var storeNow: Instant { Instant(nanoseconds: now) }

    private mutating func handle(_ event: PartitionSimulationEvent) {
        switch event {
        case .member(let index, let process, let input):
            guard hosts[index].process == process, hosts[index].machine != nil else { return }
            if hosts[index].pausedUntil != nil {
                hosts[index].deferred.append(input)
            } else {
                deliver(input, to: index)
            }
        case .restart(let index):
            restart(index)
        case .storeArrival(let request):
            storeReceived(request)
        case .storeApply(let request):
            storeApply(request)
        case .workExit(let work, let how):
            workExited(work, how)
        case .watchdog(let work):
            guard let run = works[work], let deadline = run.deadline else { return }
            if hosts[run.host].clock.local(now) >= deadline - killMargin { workExited(work, .killedByWatchdog) }
        case .resume(let index, let process):
            resume(index, process: process)
        case .isolationOver(let index, let process):
            if hosts[index].process == process { hosts[index].isolated = false }
            faultEnded(.isolationOver, member: index)
        case .outageOver:
            outage = false
            faultEnded(.outageOver)
        case .slowOver:
            slow = false
            faultEnded(.slowOver)
        case .fault(let fault):
            strike(fault)
        case .faultsStop:
            record(.faultsStopped)
        }
    }

    // MARK: Member processes

    private mutating func restart(_ index: Int) {
        guard hosts[index].machine == nil else { return }
        changed = true
        hosts[index].process += 1
        let info = try! MemberInfo(
            id: hosts[index].id, incarnation: "\(hosts[index].id).\(hosts[index].process)", weight: hosts[index].weight,
            host: "sim", pid: Int32(index + 1)
        )
        hosts[index].info = info
        hosts[index].machine = PartitionedMemberStateMachine(configuration: configuration, member: info)
        record(.started(process: hosts[index].process, weight: hosts[index].weight), member: index)
        runMachine(index) { machine, local in machine.start(now: local) }
    }

    private mutating func deliver(_ input: PartitionInput, to index: Int) {
        if case .tick = input {} else { changed = true }
        switch input {
        case .tick(let generation):
            guard generation == hosts[index].tickGeneration else { return }
            runMachine(index) { machine, local in machine.tick(now: local) }
        case .answer(let call, let answer):
            guard let pending = hosts[index].client.current, pending.number == call else {
                record(.answerDiscarded(call: call), member: index)
                return
            }
            hosts[index].client.current = nil
            if case .success = answer { hosts[index].answeredSentAt = pending.sentAt }
            if pending.slowed { disturb() }
            record(.answered(call: call), member: index)
            switch answer {
            case .success(let reply):
                runMachine(index) { machine, local in machine.heartbeatReplied(reply, to: pending.request, now: local) }
            case .failure(let rejection):
                runMachine(index) { machine, local in machine.heartbeatRejected(pending.request, rejection, now: local) }
            }
            transmit(index)
        case .callFailed(let call):
            guard let pending = hosts[index].client.current, pending.number == call else { return }
            hosts[index].client.current = nil
            record(.callFailed(call: call), member: index)
            disturb()
            runMachine(index) { machine, local in machine.heartbeatFailed(pending.request, now: local) }
            transmit(index)
        case .workStopped(let partition):
            runMachine(index) { machine, local in machine.workStopped(partition: partition, now: local) }
        case .workEnded(let partition):
            runMachine(index) { machine, local in machine.workEnded(partition: partition, now: local) }
        case .announced:
            runMachine(index) { machine, local in machine.changeAnnounced(now: local) }
        case .shutdown:
            record(.leaveAsked, member: index)
            runMachine(index) { machine, local in machine.shutdownRequested(now: local) }
        }
    }

    /// Gives `body` the member's machine and its local time, and carries out the actions it returns.
    private mutating func runMachine(
        _ index: Int,
        _ body: (inout PartitionedMemberStateMachine, Instant) -> [PartitionedMemberStateMachine.Action]
    ) {
        guard var machine = hosts[index].machine.take() else { return }
        let actions = body(&machine, hosts[index].clock.local(now))
        hosts[index].machine = machine
        for action in actions {
            guard violation == nil, hosts[index].machine != nil else { return }
            execute(action, for: index)
        }
    }

    private mutating func execute(_ action: PartitionedMemberStateMachine.Action, for index: Int) {
        switch action {
        case .sendHeartbeat(let heartbeat, let request):
            hosts[index].client.waiting.append((heartbeat, request))
            transmit(index)
        case .emit:
            break
        case .startWork(let partition, let token):
            changed = true
            startWork(partition, token: token, host: index)
        case .stopWork(let partition, let reason):
            changed = true
            if steady { violate(.steadyState, "m\(index + 1) was told to stop partition \(partition) (\(reason)) in a steady state") }
            if reason == .rebalanced { handovers += 1 }
            guard let work = hosts[index].works[partition] else {
                // Already stopped (its watchdog killed it): report it at once.
                queue.schedule(.member(index, process: hosts[index].process, .workStopped(partition)), at: now)
                return
            }
            stop(work, reason)
        case .stopWorkBy(let partitions, let deadline), .leaseValid(let partitions, until: let deadline):
            for partition in partitions {
                if let work = hosts[index].works[partition] { armWatchdog(work, deadline: deadline) }
            }
        case .scheduleTick(let at):
            hosts[index].tickGeneration += 1
            let tick = PartitionSimulationEvent.member(index, process: hosts[index].process, .tick(hosts[index].tickGeneration))
            queue.schedule(tick, at: max(now, hosts[index].clock.real(at)))
        case .finish(let rejection):
            changed = true
            record(.finished(refused: rejection != nil), member: index)
            killWork(of: index)
            hosts[index].stop()
            scheduleRestart(index)
        }
    }

    private mutating func resume(_ index: Int, process: Int) {
        guard hosts[index].process == process, hosts[index].pausedUntil != nil else { return }
        hosts[index].pausedUntil = nil
        faultEnded(.resumed, member: index)
        let deferred = hosts[index].deferred
        hosts[index].deferred = []
        for input in deferred {
            guard violation == nil, hosts[index].process == process, hosts[index].pausedUntil == nil else { return }
            deliver(input, to: index)
        }
    }

    private mutating func scheduleRestart(_ index: Int) {
        let restartAt: Int64
        if now < faultEnd {
            let downtime = random.duration(in: (options.activationInterval / 5)...(options.activationInterval * 2))
            restartAt = min(now + downtime.nanoseconds, faultEnd)
        } else {
            restartAt = now + random.duration(in: (options.heartbeatInterval / 2)...options.heartbeatInterval).nanoseconds
        }
        queue.schedule(.restart(index), at: restartAt)
    }

    // MARK: Work

    private var killMargin: Duration { options.heartbeatInterval / 4 }

    private mutating func startWork(_ partition: Int, token: FencingToken, host index: Int) {
        let grant = PartitionGrant(partition: partition, token: token)
        guard let owner = grants[grant], owner.host == index, owner.process == hosts[index].process else {
            violate(.tokens, "m\(index + 1) started partition \(partition) with token \(token), which the store never granted to this process")
            return
        }
        if let other = works.values.first(where: { $0.partition == partition }) {
            violate(.exclusiveWork, "m\(index + 1) started partition \(partition) with token \(token) while m\(other.host + 1) still acts on it with token \(other.token)")
            return
        }
        if let granted = grantedTokens[partition], granted > token {
            violate(.exclusiveWork, "m\(index + 1) started partition \(partition) with token \(token) after the store granted it token \(granted)")
            return
        }
        // The same token again is the same lease, held all along by this process (checked above): its work was
        // stopped and the partition kept, as when a release is given up at the lease's expiry and then confirmed.
        if let previous = startedTokens[partition], previous > token {
            violate(.tokens, "m\(index + 1) started partition \(partition) with token \(token) after a start with token \(previous)")
            return
        }
        if steady {
            violate(.steadyState, "m\(index + 1) started partition \(partition) in a steady state")
            return
        }
        startedTokens[partition] = token
        let work = nextWork
        nextWork += 1
        works[work] = PartitionWork(host: index, process: hosts[index].process, partition: partition, token: token)
        hosts[index].works[partition] = work
        record(.workStarted(partition, token), member: index)
    }

    /// Gives the work's watchdog a new deadline: it kills the work at the deadline less I/4.
    private mutating func armWatchdog(_ work: Int, deadline: Instant) {
        guard options.weakening != .noWatchdog, var run = works[work] else { return }
        run.deadline = deadline
        works[work] = run
        queue.schedule(.watchdog(work), at: max(now, hosts[run.host].clock.real(deadline - killMargin)))
    }

    /// The work is told to stop and does so at its own pace.
    private mutating func stop(_ work: Int, _ reason: DeactivationReason) {
        guard var run = works[work], !run.stopping else { return }
        run.stopping = true
        works[work] = run
        record(.stopAsked(run.partition, reason), member: run.host)
        let pace = random.chance(0.8)
            ? random.duration(in: .zero...min(.milliseconds(50), options.stopPace))
            : random.duration(in: .zero...options.stopPace)
        queue.schedule(.workExit(work, .stopped), at: now + pace.nanoseconds)
        if options.weakening == .shellReportsStopEarly {
            queue.schedule(.member(run.host, process: run.process, .workStopped(run.partition)), at: now)
        }
    }

    private mutating func workExited(_ work: Int, _ how: PartitionWorkExit) {
        guard let run = works.removeValue(forKey: work) else { return }
        changed = true
        record(.workStopped(run.partition, run.token, how), member: run.host)
        guard hosts[run.host].process == run.process, hosts[run.host].machine != nil else { return }
        hosts[run.host].works[run.partition] = nil
        if options.weakening != .shellReportsStopEarly || !run.stopping {
            queue.schedule(.member(run.host, process: run.process, .workEnded(run.partition)), at: now)
        }
    }

    /// The member process is gone: the watchdog kills each partition's work at once.
    private mutating func killWork(of index: Int) {
        guard options.weakening != .noWatchdog else { return }
        for work in works.keys.sorted() where works[work]!.host == index && works[work]!.process == hosts[index].process {
            queue.schedule(.workExit(work, .orphaned), at: now + random.duration(in: .zero ... .milliseconds(5)).nanoseconds)
        }
    }

    // MARK: Network and store

    /// Puts the next waiting heartbeat on the wire once no call is under way.
    private mutating func transmit(_ index: Int) {
        guard hosts[index].client.current == nil, !hosts[index].client.waiting.isEmpty else { return }
        let (heartbeat, request) = hosts[index].client.waiting.removeFirst()
        let call = nextCall
        nextCall += 1
        if steady { steadyHeartbeats += 1 }
        hosts[index].client.current = PartitionCall(number: call, request: request, slowed: slow, sentAt: now)
        record(.sent(call: call, heartbeat.operations.count, leaving: heartbeat.leaving), member: index)
        let giveUpAt = hosts[index].clock.real(hosts[index].clock.local(now) + options.callTimeout)
        queue.schedule(.member(index, process: hosts[index].process, .callFailed(call: call)), at: giveUpAt)
        if hosts[index].isolated {
            record(.requestLost(call: call), member: index)
            return
        }
        let storeRequest = PartitionStoreRequest(host: index, process: hosts[index].process, call: call, heartbeat: heartbeat)
        queue.schedule(.storeArrival(storeRequest), at: now + legLatency())
    }

    /// One leg of a store call: half of a round trip drawn from the latency, and 0.2–1.5 s more while slow.
    private mutating func legLatency() -> Int64 {
        let range = options.storeLatency
        var leg = random.int(in: range.lowerBound.nanoseconds...range.upperBound.nanoseconds) / 2
        if slow { leg += random.duration(in: .milliseconds(200) ... .milliseconds(1_500)).nanoseconds }
        return leg
    }

    private mutating func storeReceived(_ request: PartitionStoreRequest) {
        if outage {
            record(.storeUnreachable(call: request.call), member: request.host)
            if random.chance(0.5) {
                // Connection refused: the caller hears of it at once; otherwise it waits for its timeout.
                queue.schedule(.member(request.host, process: request.process, .callFailed(call: request.call)), at: now + legLatency())
            }
            return
        }
        let service = random.duration(in: .microseconds(50) ... .microseconds(500)).nanoseconds
        storeBusyUntil = max(now, storeBusyUntil) + service
        queue.schedule(.storeApply(request), at: storeBusyUntil)
    }

    private mutating func storeApply(_ request: PartitionStoreRequest) {
        let heartbeat = request.heartbeat
        let member = heartbeat.member
        changed = true
        switch options.weakening {
        case .storeKeepsMemberships:
            for id in ledger.members.keys { ledger.members[id]!.expiresAt = max(ledger.members[id]!.expiresAt, storeNow + options.activationInterval) }
        case .storeGrantsHeldPartitions:
            for case .acquire(let partition) in heartbeat.operations where ledger.leases.indices.contains(partition) {
                if let holder = ledger.leases[partition].holder, holder.member != member.id || holder.incarnation != member.incarnation {
                    ledger.leases[partition].holder = nil
                }
            }
        case .storeResetsTokens:
            ledger.lastToken = nil
        case .shellReportsStopEarly, .noWatchdog, .viewDropsLeases, nil:
            break
        }
        let floor = options.weakening == .storeResetsTokens ? 0 : wallOrigin + UInt64(now / 1_000)
        let before = ledger
        let answer: Result<PartitionHeartbeatReply, HeartbeatRejection>
        do {
            var reply = try ledger.apply(heartbeat, at: StoreMoment(now: storeNow, tokenFloor: FencingToken(rawValue: floor)))
            record(.applied(call: request.call, Self.summary(heartbeat.operations, reply.outcomes)), member: request.host)
            for (operation, outcome) in zip(heartbeat.operations, reply.outcomes) {
                guard case .acquire(let partition) = operation, case .granted(let token) = outcome else { continue }
                let held = before.leases[partition].holder
                let renewed = held.map { $0.token == token && $0.incarnation == member.incarnation && $0.expiresAt > storeNow } ?? false
                if !renewed { granted(partition, token, to: request) }
                guard violation == nil else { return }
            }
            if case .viewDropsLeases(let probability) = options.weakening {
                reply.view.leases = reply.view.leases.filter { _ in !random.chance(probability) }
            }
            answer = .success(reply)
            if ledger.members[member.id] != nil, before.members[member.id]?.joinSequence != ledger.members[member.id]?.joinSequence {
                record(.joined, member: request.host)
                membershipChanged(.join, member: request.host)
            }
            if ledger.shouldAnnounce(heartbeat, from: before) { announce(from: request.host) }
        } catch {
            record(.refused(call: request.call), member: request.host)
            answer = .failure(error)
        }
        noteShape()
        if hosts[request.host].process == request.process, hosts[request.host].client.current?.number == request.call {
            hosts[request.host].client.current?.appliedAt = now
        }
        if hosts[request.host].isolated {
            record(.replyLost(call: request.call), member: request.host)
            return
        }
        queue.schedule(.member(request.host, process: request.process, .answer(call: request.call, answer)), at: now + legLatency())
    }

    /// Checks tokens and fencing when the store grants a partition.
    private mutating func granted(_ partition: Int, _ token: FencingToken, to request: PartitionStoreRequest) {
        if let previous = grantedTokens[partition], token <= previous {
            violate(.tokens, "the store granted partition \(partition) to m\(request.host + 1) with token \(token) after a grant with token \(previous)")
            return
        }
        if let acting = works.values.first(where: { $0.partition == partition && $0.token < token }) {
            violate(.exclusiveWork, "the store granted partition \(partition) to m\(request.host + 1) with token \(token) while m\(acting.host + 1) still acts on it with token \(acting.token)")
            return
        }
        if steady {
            violate(.steadyState, "the store granted partition \(partition) to m\(request.host + 1) in a steady state")
            return
        }
        grantedTokens[partition] = token
        grants[PartitionGrant(partition: partition, token: token)] = (request.host, request.process)
    }

    /// The store tells every other running member of a join or a release.
    private mutating func announce(from sender: Int) {
        let delayed = now < faultEnd && options.faults.contains(.delay)
        for index in hosts.indices where index != sender && hosts[index].machine != nil && !hosts[index].isolated {
            if delayed && random.chance(0.05) { continue }
            var delay = legLatency()
            if delayed { delay += random.duration(in: .zero...(options.heartbeatInterval * 2)).nanoseconds }
            queue.schedule(.member(index, process: hosts[index].process, .announced), at: now + delay)
        }
    }

    /// `acquire 3 → granted 17` for the grants, and counts of the rest.
    private static func summary(_ operations: [PartitionHeartbeat.Operation], _ outcomes: [PartitionHeartbeatReply.Outcome]) -> [AppliedPartitionOperation] {
        zip(operations, outcomes).map { operation, outcome in
            switch outcome {
            case .granted(let token): AppliedPartitionOperation(partition: operation.partition, code: 0, token: token)
            case .notGranted: AppliedPartitionOperation(partition: operation.partition, code: 1, token: nil)
            case .renewed: AppliedPartitionOperation(partition: operation.partition, code: 2, token: nil)
            case .lost: AppliedPartitionOperation(partition: operation.partition, code: 3, token: nil)
            case .released: AppliedPartitionOperation(partition: operation.partition, code: 4, token: nil)
            }
        }
    }

    // MARK: Faults

    private mutating func scheduleFaults() {
        guard faultEnd > 0 else { return }
        let counts: [(PartitionFault, ClosedRange<Int64>)] = [
            (.crash, 0...2), (.freeze, 0...2), (.isolate, 0...1), (.outage, 0...1), (.slow, 0...1), (.join, 0...2), (.leave, 0...1),
        ]
        for (fault, count) in counts where options.faults.contains(fault) {
            for _ in 0..<random.int(in: count) {
                queue.schedule(.fault(fault), at: random.int(in: 0...(faultEnd - 1)))
            }
        }
        queue.schedule(.faultsStop, at: faultEnd)
    }

    private mutating func faultDuration(upTo leases: Int) -> Int64 {
        let duration = random.duration(in: (options.activationInterval / 2)...(options.activationInterval * leases))
        return min(now + duration.nanoseconds, faultEnd)
    }

    /// A running member that is neither frozen nor cut off, preferring one that acts on partitions.
    private mutating func faultTarget() -> Int? {
        let running = hosts.indices.filter { hosts[$0].machine != nil && hosts[$0].pausedUntil == nil && !hosts[$0].isolated }
        let busy = running.filter { !hosts[$0].works.isEmpty }
        let pool = busy.isEmpty ? running : busy
        return pool.isEmpty ? nil : pool[random.index(below: pool.count)]
    }

    private mutating func strike(_ fault: PartitionFault) {
        switch fault {
        case .crash:
            guard let index = faultTarget() else { return }
            record(.crashed, member: index)
            membershipChanged(.crash, member: index)
            killWork(of: index)
            hosts[index].stop()
            scheduleRestart(index)
        case .freeze:
            guard let index = faultTarget() else { return }
            let until = faultDuration(upTo: 3)
            hosts[index].pausedUntil = until
            faultStarted(.frozen(until: until), member: index)
            queue.schedule(.resume(index, process: hosts[index].process), at: until)
        case .isolate:
            guard let index = faultTarget() else { return }
            hosts[index].isolated = true
            let until = faultDuration(upTo: 3)
            faultStarted(.isolated(until: until), member: index)
            queue.schedule(.isolationOver(index, process: hosts[index].process), at: until)
        case .outage:
            guard !outage else { return }
            outage = true
            let until = faultDuration(upTo: 2)
            faultStarted(.outage(until: until))
            queue.schedule(.outageOver, at: until)
        case .slow:
            guard !slow else { return }
            slow = true
            let until = faultDuration(upTo: 3)
            faultStarted(.slow(until: until))
            queue.schedule(.slowOver, at: until)
        case .join:
            addHost(weight: random.chance(1.0 / 3) ? Self.baseWeight * 2 : Self.baseWeight)
            queue.schedule(.restart(hosts.count - 1), at: now)
        case .leave:
            guard let index = faultTarget() else { return }
            membershipChanged(.leave, member: index)
            deliver(.shutdown, to: index)
        case .delay:
            return
        }
        injected[fault, default: 0] += 1
    }

    private mutating func faultStarted(_ kind: PartitionTraceEntry.Kind, member: Int? = nil) {
        activeFaults += 1
        record(kind, member: member)
        disturb()
    }

    private mutating func faultEnded(_ kind: PartitionTraceEntry.Kind, member: Int? = nil) {
        activeFaults -= 1
        record(kind, member: member)
        disturb()
    }

    // MARK: Invariants

    /// Something that can move partitions happened: the group must settle again.
    private mutating func disturb() {
        changed = true
        lastDisturbance = now
        settledAt = nil
        settledOwners = nil
        steady = false
        pendingChange = nil
    }

    /// A member joined, left or crashed: from a steady group, the next settled assignment is checked against it.
    private mutating func membershipChanged(_ kind: PartitionChangeKind, member index: Int) {
        let before = steady ? settledOwners : nil
        disturb()
        if let before { pendingChange = PendingPartitionChange(kind: kind, member: hosts[index].id, before: before, at: now) }
    }

    private struct StoreShape: Hashable {
        var holders: [GroupLedger.LeaseRecord.Holder?]
        var members: [MemberID: String]
    }

    /// The store's leases and live members, without their expiry times.
    private func shape() -> StoreShape {
        StoreShape(
            holders: ledger.leases.map { record in
                guard var holder = record.holder, holder.expiresAt > storeNow else { return nil }
                holder.expiresAt = .zero
                return holder
            },
            members: ledger.members.filter { $0.value.expiresAt > storeNow && $0.value.phase.isEligible }.mapValues(\.info.incarnation)
        )
    }

    private mutating func noteShape() {
        let shape = shape()
        if shape != lastShape {
            lastShape = shape
            shapeChangedAt = now
        }
    }

    /// The owner of every partition when the group is settled: every member that joined is in the store, was answered a
    /// heartbeat it sent after the last disturbance, and agrees on the assignment, which is the store's assignment
    /// of itself; every partition is acted on by its owner with the token of its valid lease; no work is stopping
    /// and no answer on its way carries a view older than the leases.
    private mutating func settledAssignment() -> [MemberID]? {
        func unsettled(_ reason: StaticString, _ host: Int? = nil) -> [MemberID]? {
            unsettledBecause = (reason, host)
            return nil
        }
        guard activeFaults == 0 else { return unsettled("a fault is in effect") }
        guard works.count == options.partitions else { return unsettled("not every partition is acted on once") }
        if let stopping = works.values.first(where: \.stopping) { return unsettled("work is stopping", stopping.host) }
        var alive = 0
        for (index, host) in hosts.enumerated() {
            // A process that has not joined yet moves nothing until it does, which is a membership change.
            guard let machine = host.machine, host.answeredSentAt != nil else { continue }
            alive += 1
            guard let info = host.info, let record = ledger.members[host.id], record.info.incarnation == info.incarnation,
                  record.expiresAt > storeNow, record.phase.isEligible
            else { return unsettled("a member is not in the store, or not eligible", index) }
            guard host.answeredSentAt.map({ $0 >= lastDisturbance }) ?? false else {
                return unsettled("a member has had no heartbeat answered since the last disturbance", index)
            }
            guard host.client.current?.appliedAt.map({ $0 >= shapeChangedAt }) ?? true else {
                return unsettled("an answer on its way carries an older view", index)
            }
            let active = Set(machine.activePartitions.keys)
            guard active == machine.assignedPartitions else { return unsettled("a member acts on other partitions than it is assigned", index) }
            guard active == Set(host.works.keys) else { return unsettled("a member's work differs from its partitions", index) }
        }
        guard alive > 0 else { return unsettled("no member has joined") }
        noteShape()
        let shape = lastShape!
        let owners: [MemberID]?
        if let cached = cachedOwners, cached.0 == shape {
            owners = cached.1
        } else {
            owners = probe.owners(of: ledger.view(now: storeNow))
            cachedOwners = (shape, owners)
        }
        guard let owners else { return unsettled("the store's view assigns nothing") }
        for work in works.values {
            guard let holder = shape.holders[work.partition], holder.token == work.token,
                  holder.incarnation == hosts[work.host].info?.incarnation, hosts[work.host].process == work.process
            else { return unsettled("work runs without the valid lease of its token", work.host) }
            guard owners[work.partition] == holder.member else { return unsettled("a partition is not with its assigned owner", work.host) }
        }
        return owners
    }

    private mutating func updateSettled() {
        guard let owners = settledAssignment() else {
            settledAt = nil
            settledOwners = nil
            steady = false
            return
        }
        guard settledAt == nil else { return }
        settledAt = now
        settledOwners = owners
        steady = true
        record(.settled)
        checkBalance(owners, enforced: pendingChange != nil)
        guard violation == nil, let change = pendingChange else { return }
        pendingChange = nil
        checkMovement(change, after: owners)
    }

    /// ``PartitionAssignment``'s bound: member i of weight wᵢ of W holds at most ⌈P·wᵢ/W⌉ and at least ⌊P·wᵢ/W⌋ − 1.
    /// Enforced after a membership change of a steady group; changes that overlap can leave a sticky assignment
    /// below the lower bound (see docs/simulation.md), which ``PartitionSimulationResult/worstUnderFloor`` shows.
    private mutating func checkBalance(_ owners: [MemberID], enforced: Bool) {
        let members = ledger.view(now: storeNow).members.filter(\.phase.isEligible).map(\.info)
        let total = members.reduce(0) { $0 + $1.weight }
        let partitions = options.partitions
        for member in members {
            let held = owners.count(where: { $0 == member.id })
            let floor = partitions * member.weight / total
            let ceiling = floor + (partitions * member.weight % total == 0 ? 0 : 1)
            worstOverCeiling = max(worstOverCeiling, held - ceiling)
            worstUnderFloor = min(worstUnderFloor, held - floor)
            if enforced, held > ceiling || held < floor - 1 {
                violate(.movement, "\(member.id) of weight \(member.weight) of \(total) holds \(held) of \(partitions) partitions, outside \(floor - 1)…\(ceiling)")
                return
            }
        }
    }

    /// A join moves partitions only to the newcomer (at most one between the others), at most its share rounded
    /// up plus one; a leave or a crash moves only the departed member's partitions.
    private mutating func checkMovement(_ change: PendingPartitionChange, after owners: [MemberID]) {
        let moved = owners.indices.filter { owners[$0] != change.before[$0] }
        let who = change.member
        let elapsed = Duration.nanoseconds(now - change.at)
        switch change.kind {
        case .join:
            let view = ledger.view(now: storeNow).members.filter(\.phase.isEligible).map(\.info)
            let total = view.reduce(0) { $0 + $1.weight }
            let weight = view.first { $0.id == who }?.weight ?? 0
            let share = (options.partitions * weight + total - 1) / max(total, 1)
            let between = moved.filter { owners[$0] != who }
            changes.append(PartitionChange(kind: .join, moved: moved.count, minimum: options.partitions * weight / max(total, 1), settledIn: elapsed))
            if between.count > 1 || moved.count > share + 1 {
                violate(.movement, "the join of \(who) moved \(moved.count) partitions (its share rounded up: \(share)), \(between.count) of them between the other members: " + moved.map { "\($0): \(change.before[$0]) → \(owners[$0])" }.joined(separator: ", "))
            }
        case .leave, .crash:
            let held = change.before.count(where: { $0 == who })
            let newcomers = Set(change.before)
            let wrong = moved.filter { change.before[$0] != who && (held > 0 || newcomers.contains(owners[$0])) }
            changes.append(PartitionChange(kind: change.kind, moved: moved.count, minimum: held, settledIn: elapsed))
            if !wrong.isEmpty {
                violate(.movement, "the \(change.kind) of \(who) moved partitions it did not hold: " + wrong.map { "\($0): \(change.before[$0]) → \(owners[$0])" }.joined(separator: ", "))
            }
        }
    }

    private mutating func violate(_ invariant: PartitionInvariant, _ message: String) {
        guard violation == nil else { return }
        violation = PartitionInvariantViolation(invariant: invariant, at: storeNow, message: message, recentTrace: recentTrace.lines)
    }

    private mutating func record(_ kind: PartitionTraceEntry.Kind, member: Int? = nil) {
        let entry = PartitionTraceEntry(time: now, member: member, kind: kind)
        entry.fold(into: &traceHash)
        traceLength += 1
        recentTrace.append(entry)
    }
}

// MARK: - Parts

/// A member's host: its clock, id and weight outlive any one process.
struct PartitionHost: Sendable {
    let id: MemberID
    let weight: Int
    let clock: MemberClock
    /// Counts process starts; events addressed to an older process are dropped.
    var process = 0
    var info: MemberInfo?
    /// `nil` while no process runs.
    var machine: PartitionedMemberStateMachine?
    /// Set while the process is frozen; its inputs wait in ``deferred``.
    var pausedUntil: Int64?
    var deferred: [PartitionInput] = []
    /// Cut off from the store: its calls and announcements are lost.
    var isolated = false
    var tickGeneration: UInt64 = 0
    var client = PartitionStoreClient()
    /// When the newest call the store answered (and did not refuse) was sent.
    var answeredSentAt: Int64?
    /// The work of each partition this process acts on.
    var works: [Int: Int] = [:]

    init(id: MemberID, weight: Int, clock: MemberClock) {
        self.id = id
        self.weight = weight
        self.clock = clock
    }

    /// The process is gone (crashed or finished).
    mutating func stop() {
        machine = nil
        pausedUntil = nil
        deferred = []
        isolated = false
        client = PartitionStoreClient()
        answeredSentAt = nil
        works = [:]
    }
}

/// A process's store client: one call on the wire at a time, the others waiting in order.
struct PartitionStoreClient: Sendable {
    var current: PartitionCall?
    var waiting: [(PartitionHeartbeat, PartitionedMemberStateMachine.RequestID)] = []
}

struct PartitionCall: Sendable {
    var number: UInt64
    var request: PartitionedMemberStateMachine.RequestID
    /// Sent while the store was slow: its answer, when it comes, is an effect of that fault.
    var slowed: Bool
    var sentAt: Int64
    /// When the store applied it; its answer is on the way.
    var appliedAt: Int64?
}

struct PartitionStoreRequest: Sendable {
    var host: Int
    var process: Int
    var call: UInt64
    var heartbeat: PartitionHeartbeat
}

struct PartitionGrant: Hashable, Sendable {
    var partition: Int
    var token: FencingToken
}

/// One partition's work on one member process, from `startWork` until it stopped.
struct PartitionWork: Sendable {
    var host: Int
    var process: Int
    var partition: Int
    var token: FencingToken
    /// The newest deadline the watchdog was given, on the member's clock.
    var deadline: Instant?
    var stopping = false
}

/// How a partition's work stopped.
enum PartitionWorkExit: Int, Sendable, CustomStringConvertible {
    case stopped
    case killedByWatchdog
    case orphaned

    var description: String {
        switch self {
        case .stopped: "stopped"
        case .killedByWatchdog: "killed by the watchdog"
        case .orphaned: "killed: its process died"
        }
    }
}

struct PendingPartitionChange: Sendable {
    var kind: PartitionChangeKind
    var member: MemberID
    var before: [MemberID]
    var at: Int64
}

/// Something that reaches a member process; waits while the process is frozen.
enum PartitionInput: Sendable {
    case tick(UInt64)
    case answer(call: UInt64, Result<PartitionHeartbeatReply, HeartbeatRejection>)
    /// The round trip timed out, or the store refused the connection.
    case callFailed(call: UInt64)
    /// `workStopped` at once on `stopWork` (``PartitionWeakening/shellReportsStopEarly``, or work already gone).
    case workStopped(Int)
    /// The partition's work has exited.
    case workEnded(Int)
    case announced
    case shutdown
}

enum PartitionSimulationEvent: Sendable {
    case member(Int, process: Int, PartitionInput)
    case restart(Int)
    case storeArrival(PartitionStoreRequest)
    case storeApply(PartitionStoreRequest)
    case workExit(Int, PartitionWorkExit)
    case watchdog(Int)
    case resume(Int, process: Int)
    case isolationOver(Int, process: Int)
    case outageOver
    case slowOver
    case fault(PartitionFault)
    case faultsStop
}

struct AppliedPartitionOperation: Sendable {
    var partition: Int
    /// granted, not granted, renewed, lost, released.
    var code: UInt64
    var token: FencingToken?
}

/// One thing that happened in a partition run, on the simulator's real timeline.
struct PartitionTraceEntry: Sendable, CustomStringConvertible {
    enum Kind: Sendable {
        case started(process: Int, weight: Int)
        case crashed
        case frozen(until: Int64)
        case resumed
        case isolated(until: Int64)
        case isolationOver
        case leaveAsked
        case finished(refused: Bool)
        case sent(call: UInt64, Int, leaving: Bool)
        case requestLost(call: UInt64)
        case storeUnreachable(call: UInt64)
        case applied(call: UInt64, [AppliedPartitionOperation])
        case refused(call: UInt64)
        case joined
        case replyLost(call: UInt64)
        case answered(call: UInt64)
        case answerDiscarded(call: UInt64)
        case callFailed(call: UInt64)
        case workStarted(Int, FencingToken)
        case stopAsked(Int, DeactivationReason)
        case workStopped(Int, FencingToken, PartitionWorkExit)
        case outage(until: Int64)
        case outageOver
        case slow(until: Int64)
        case slowOver
        case faultsStopped
        case settled
    }

    var time: Int64
    /// The member's index, or `nil` for the store and the network.
    var member: Int?
    var kind: Kind

    /// Feeds the entry into `hash` as integers, with no formatting.
    func fold(into hash: inout TraceHash) {
        hash.combine(UInt64(bitPattern: time), UInt64(member.map { $0 + 1 } ?? 0))
        switch kind {
        case .started(let process, let weight): hash.combine(1, UInt64(process), UInt64(weight))
        case .crashed: hash.combine(2)
        case .frozen(let until): hash.combine(3, UInt64(bitPattern: until))
        case .resumed: hash.combine(4)
        case .isolated(let until): hash.combine(5, UInt64(bitPattern: until))
        case .isolationOver: hash.combine(6)
        case .leaveAsked: hash.combine(7)
        case .finished(let refused): hash.combine(8, refused ? 1 : 0)
        case .sent(let call, let count, let leaving): hash.combine(9, call, UInt64(count), leaving ? 1 : 0)
        case .requestLost(let call): hash.combine(10, call)
        case .storeUnreachable(let call): hash.combine(11, call)
        case .applied(let call, let operations):
            hash.combine(12, call)
            for operation in operations { hash.combine(UInt64(operation.partition), operation.code, operation.token?.rawValue ?? 0) }
        case .refused(let call): hash.combine(13, call)
        case .joined: hash.combine(14)
        case .replyLost(let call): hash.combine(15, call)
        case .answered(let call): hash.combine(16, call)
        case .answerDiscarded(let call): hash.combine(17, call)
        case .callFailed(let call): hash.combine(18, call)
        case .workStarted(let partition, let token): hash.combine(19, UInt64(partition), token.rawValue)
        case .stopAsked(let partition, let reason):
            hash.combine(20, UInt64(partition), UInt64(DeactivationReason.allCases.firstIndex(of: reason)!))
        case .workStopped(let partition, let token, let how): hash.combine(21, UInt64(partition), token.rawValue, UInt64(how.rawValue))
        case .outage(let until): hash.combine(22, UInt64(bitPattern: until))
        case .outageOver: hash.combine(23)
        case .slow(let until): hash.combine(24, UInt64(bitPattern: until))
        case .slowOver: hash.combine(25)
        case .faultsStopped: hash.combine(26)
        case .settled: hash.combine(27)
        }
    }

    var description: String {
        let who = member.map { "m\($0 + 1)" } ?? "store"
        return "[\(Instant(nanoseconds: time))] \(who) \(kindDescription)"
    }

    private var kindDescription: String {
        switch kind {
        case .started(let process, let weight): "started (incarnation \(process), weight \(weight))"
        case .crashed: "crashed (the watchdog kills its work)"
        case .frozen(let until): "frozen until \(Instant(nanoseconds: until))"
        case .resumed: "resumed"
        case .isolated(let until): "cut off from the store until \(Instant(nanoseconds: until))"
        case .isolationOver: "reaches the store again"
        case .leaveAsked: "asked to leave"
        case .finished(let refused): refused ? "finished: refused by the store" : "finished: left the group"
        case .sent(let call, let count, let leaving): "sent call \(call): heartbeat with \(count) operations" + (leaving ? ", leaving" : "")
        case .requestLost(let call): "lost the request of call \(call)"
        case .storeUnreachable(let call): "could not reach the store with call \(call)"
        case .applied(let call, let operations):
            "applied call \(call): " + (operations.isEmpty ? "no operations" : operations.map { operation in
                let outcome = ["granted", "not granted", "renewed", "lost", "released"][Int(operation.code)]
                return "\(operation.partition) \(outcome)" + (operation.token.map { " token \($0)" } ?? "")
            }.joined(separator: ", "))
        case .refused(let call): "refused call \(call)"
        case .joined: "joined the group"
        case .replyLost(let call): "lost the reply to call \(call)"
        case .answered(let call): "received the answer to call \(call)"
        case .answerDiscarded(let call): "discarded the answer to call \(call): the client gave up on it"
        case .callFailed(let call): "call \(call) failed (timeout or refused)"
        case .workStarted(let partition, let token): "started partition \(partition) with token \(token)"
        case .stopAsked(let partition, let reason): "stopping partition \(partition): \(reason)"
        case .workStopped(let partition, let token, let how): "work of partition \(partition) token \(token) \(how)"
        case .outage(let until): "outage until \(Instant(nanoseconds: until))"
        case .outageOver: "outage over"
        case .slow(let until): "store slow until \(Instant(nanoseconds: until))"
        case .slowOver: "store fast again"
        case .faultsStopped: "faults stop"
        case .settled: "settled: every partition acted on by its assigned owner"
        }
    }
}
