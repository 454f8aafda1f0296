import UnderstudyCore

/// One deterministic run: the real ``MemberStateMachine``s of a group against a simulated store, network, clocks
/// and faults, all driven by one seed.
///
/// The simulator plays every part outside the core the way the real runtime does:
/// - **The store** is a ``GroupLedger`` that applies heartbeats one at a time, judged on a ``StoreClock`` that each
///   heartbeat advances from the store's wall clock (the real timeline, unless ``SimulatedFault/clockStep`` steps
///   it) and the member's send instants, as PostgreSQL advances its store clock.
/// - **Each member's clock** is the real timeline scaled by the member's drift plus an offset: every `now`
///   passed to a member, and every instant it returns, is on its own local monotonic clock.
/// - **The shell** carries out the actions: it hands heartbeats to a store client that, like the runtime's
///   `HeartbeatBatcher`, has one round trip under way at a time and gives up on it after
///   ``SimulationOptions/callTimeout``; it starts the work on ``MemberStateMachine/Action/startWork(_:)``, stops
///   it at the application's pace after ``MemberStateMachine/Action/stopWork(_:)``, and reports
///   ``MemberStateMachine/workStopped(now:)``.
///   Its supervisor sends SIGKILL at ``MemberStateMachine/Action/stopWorkBy(_:)`` less I/4, late if frozen.
/// - **The watchdog** is a separate process that is given only lease deadlines: it kills the work I/4 before the
///   newest ``MemberStateMachine/Action/leaseValid(until:)``, and at once when the member process dies. It runs
///   while the member process is paused: that is the guarantee the real CLI gives with its independent watchdog,
///   and what makes a GC pause safe.
///
/// A member "acts" from its ``MemberEvent/activate(_:)`` until its work has stopped. The invariants are checked
/// after every event; the first violation ends the run.
public struct Simulation: Sendable {
    public let seed: UInt64
    public let options: SimulationOptions

    private let configuration: GroupConfiguration
    private var random: SimulationRandom
    private var queue = EventQueue<Event>()
    private var now: Int64 = 0
    private var end: Int64
    private let faultEnd: Int64
    private var members: [SimulatedMember]
    /// The works that act now, by work number.
    private var works: [Int: Work] = [:]
    private var nextWork = 0
    private var ledger: GroupLedger
    private var storeBusyUntil: Int64 = 0
    private var partitioned: Set<Int> = []
    private var outage = false
    /// The store's wall clock at real time zero, in µs since 1970: its token floor moves with simulated time.
    private let wallOrigin: UInt64
    /// How far the store's wall clock has been stepped away from the real timeline (``SimulatedFault/clockStep``).
    private var wallStep: Int64 = 0
    /// The clock the store judges leases on.
    private var storeClock: StoreClock
    /// What the store records beside the ledger's rows to bound its clock.
    private var evidence = ClockEvidence()
    private var snapshot: (ledger: GroupLedger, evidence: ClockEvidence, at: Int64)?
    /// Since when the store's record is complete again after a restore.
    private var recordCompleteSince: Instant?

    private var grants: [FencingToken: Grant] = [:]
    private var highestToken: FencingToken?
    private var violation: InvariantViolation?
    private var traceHash = TraceHash()
    private var traceLength = 0
    private var recentTrace = RecentTrace<TraceEntry>()
    private var goalFirstMet = false
    private var shortfallSince: Int64?
    private var shortfalls: [Duration] = []
    private var recoveredAt: Int64?
    private var settledAt: Int64?
    private var activations = 0
    private var preemptions = 0
    /// Tokens some work acted with, and tokens given back by a member that never acted with them.
    private var usedTokens: Set<FencingToken> = []
    private var unusedGrants: Set<FencingToken> = []
    private var injected: [SimulatedFault: Int] = [:]
    /// The group's fenced checkpoint as the store holds it (``SimulationOptions/checkpointWrites``).
    private var checkpoint: Checkpoint?
    private var checkpointsAccepted = 0
    private var checkpointsRefused = 0

    /// Prepares the run of `seed`; nothing happens until ``run()``.
    public init(seed: UInt64, options: SimulationOptions) throws(SimulationOptionsError) {
        self.seed = seed
        self.options = options
        configuration = try options.groupConfiguration()
        random = SimulationRandom(seed: seed)
        faultEnd = options.effectiveFaultWindow.nanoseconds
        end = faultEnd + options.settleBound.nanoseconds
        ledger = GroupLedger(group: configuration.name, activeGoal: configuration.activeGoal)
        wallOrigin = 1_700_000_000_000_000 + UInt64(random.int(in: 0...100_000_000_000_000))
        storeClock = StoreClock(now: .zero, wall: Instant(nanoseconds: Int64(wallOrigin) * 1_000))
        members = []
        let weights = options.faults.contains(.reweight) ? Self.weightChoices : [50]
        for index in 0..<options.members {
            let drift = options.faults.contains(.drift) ? Int64(SimulationOptions.maximumDrift * 1_000_000) : 0
            let day: Int64 = 86_400_000_000_000
            let offsets = options.faults.contains(.skew) ? -day...day : 0...1_000_000_000_000
            let clock = MemberClock(offset: random.int(in: offsets), ratePPM: random.int(in: -drift...drift))
            if clock.offset < 0 { injected[.skew, default: 0] += 1 }
            let weight = weights[random.index(below: weights.count)]
            let info: MemberInfo
            do {
                info = try MemberInfo(id: MemberID("m\(index + 1)"), incarnation: "", weight: weight, host: "sim", pid: Int32(index + 1))
            } catch {
                throw .invalidGroup(error)
            }
            members.append(SimulatedMember(info: info, clock: clock))
        }
        for index in members.indices {
            queue.schedule(.restart(index), at: random.duration(in: .zero...options.heartbeatInterval).nanoseconds)
        }
        scheduleFaults()
    }

    private static let weightChoices = [0, 50, 100]

    // MARK: Running

    /// Runs to the end and returns what happened. The run stops at the first violated invariant.
    public mutating func run() -> SimulationResult {
        while violation == nil, let (time, event) = queue.popFirst() {
            guard time <= end else { break }
            now = time
            handle(event)
            if violation == nil, now >= faultEnd { checkProgress() }
        }
        if violation == nil { checkLiveness() }
        if let since = shortfallSince { shortfalls.append(.nanoseconds(now - since)) }
        return SimulationResult(
            seed: seed,
            violation: violation,
            traceHash: traceHash,
            traceLength: traceLength,
            shortfalls: shortfalls,
            recovery: recoveredAt.map { .nanoseconds($0 - faultEnd) },
            settling: settledAt.map { .nanoseconds($0 - faultEnd) },
            activations: activations,
            preemptions: preemptions,
            unusedGrants: unusedGrants.count,
            injected: injected,
            checkpointsAccepted: checkpointsAccepted,
            checkpointsRefused: checkpointsRefused,
            end: Instant(nanoseconds: now)
        )
    }

    private mutating func handle(_ event: Event) {
        switch event {
        case .member(let index, let process, let input):
            guard members[index].process == process, members[index].machine != nil else { return }
            if members[index].pausedUntil != nil {
                members[index].deferred.append(input)
            } else {
                deliver(input, to: index)
            }
        case .restart(let index):
            restart(index)
        case .checkpointArrival(let member, let token):
            checkpointArrived(from: member, token: token)
        case .storeArrival(let call):
            storeReceived(call)
        case .storeApply(let call):
            storeApply(call)
        case .watchdog(let work):
            watchdogFired(for: work)
        case .orphanNoticed(let work):
            stopWork(work, .orphaned)
        case .resume(let index, let process):
            resume(index, process: process)
        case .crashFault:
            crashFault()
        case .processCrashFault:
            processCrashFault()
        case .watchdogRelease(let index, let process, let info, let token):
            watchdogRelease(index, process: process, info, token)
        case .snapshot:
            snapshot = (ledger, evidence, now)
            record(.snapshotTaken)
        case .restoreFault:
            restoreFault()
        case .clockStepFault(let step):
            wallStep += step
            injected[.clockStep, default: 0] += 1
            record(.storeClockStepped(by: step))
        case .pauseFault:
            pauseFault()
        case .partitionFault:
            partitionFault()
        case .partitionHealed:
            partitioned = []
            record(.partitionHealed)
        case .outageFault:
            outageFault()
        case .outageOver:
            outage = false
            record(.outageOver)
        case .resignFault:
            resignFault()
        case .shutdownFault:
            shutdownFault()
        case .faultsStop:
            record(.faultsStopped)
        }
    }

    // MARK: Member processes

    private mutating func restart(_ index: Int) {
        guard members[index].machine == nil else { return }
        members[index].process += 1
        members[index].info.incarnation = "m\(index + 1).\(members[index].process)"
        if members[index].process > 1, options.faults.contains(.reweight), now < faultEnd, random.chance(0.5) {
            members[index].info.weight = Self.weightChoices[random.index(below: Self.weightChoices.count)]
        }
        // Half the members put their heartbeats on a grid of their own clock (as the runtime does), half send
        // them one interval apart, so both schedules are exercised.
        members[index].machine = MemberStateMachine(
            configuration: configuration,
            member: members[index].info,
            heartbeatPhase: index.isMultiple(of: 2) ? .milliseconds(Int64(index) * 37) : nil
        )
        record(.started(incarnation: members[index].process, weight: members[index].info.weight), member: index)
        deliver(.start, to: index)
    }

    private mutating func deliver(_ input: MemberInput, to index: Int) {
        guard members[index].machine != nil else { return }
        switch input {
        case .tick(let generation) where generation != members[index].tickGeneration:
            return
        case .batchAnswered(let batch, let answers):
            guard members[index].client.inFlight?.batch == batch else {
                // The shell gave up on this round trip already (its timeout): the answer is discarded.
                record(.answerDiscarded(batch: batch), member: index)
                return
            }
            members[index].client.inFlight = nil
            // The batcher sends the heartbeats that waited before the member handles these answers.
            flushStoreClient(of: index)
            for (id, result) in answers {
                guard violation == nil, members[index].machine != nil else { return }
                record(.replied(id), member: index)
                switch result {
                case .success(let reply): runMachine(index) { machine, local in machine.heartbeatReplied(reply, to: id, now: local) }
                case .failure(let rejection): runMachine(index) { machine, local in machine.heartbeatRejected(id, rejection, now: local) }
                }
            }
            return
        case .batchFailed(let batch):
            guard let inFlight = members[index].client.inFlight, inFlight.batch == batch else { return }
            members[index].client.inFlight = nil
            flushStoreClient(of: index)
            for id in inFlight.ids {
                guard violation == nil, members[index].machine != nil else { return }
                record(.failed(id), member: index)
                runMachine(index) { machine, local in machine.heartbeatFailed(id, now: local) }
            }
            return
        case .gracefulStopDone(let work):
            stopWork(work, .graceful)
            return
        case .supervisorKill(let work):
            stopWork(work, .supervisor)
            return
        case .changeAnnounced:
            record(.changeAnnounced, member: index)
        case .start, .tick, .workExited, .shutdownRequested:
            break
        }
        runMachine(index) { machine, local in
            switch input {
            case .start:
                machine.start(now: local)
            case .tick:
                machine.tick(now: local)
            case .workExited(let token):
                if let token, machine.activeToken == token {
                    machine.workEnded(now: local)
                } else {
                    machine.workStopped(now: local)
                }
            case .shutdownRequested:
                machine.shutdownRequested(now: local)
            case .changeAnnounced:
                machine.changeAnnounced(now: local)
            case .batchAnswered, .batchFailed, .gracefulStopDone, .supervisorKill:
                []
            }
        }
    }

    /// Gives `body` the member's machine and its local time, and carries out the actions it returns.
    private mutating func runMachine(
        _ index: Int,
        _ body: (inout MemberStateMachine, Instant) -> [MemberStateMachine.Action]
    ) {
        guard members[index].machine != nil else { return }
        let local = members[index].clock.local(now)
        // Taken out while it runs, so that mutating it does not copy its storage.
        var machine = members[index].machine.take()!
        let actions = body(&machine, local)
        members[index].machine = machine
        execute(actions, for: index)
    }

    private mutating func execute(_ actions: [MemberStateMachine.Action], for index: Int) {
        for action in actions {
            guard violation == nil else { return }
            switch action {
            case .sendHeartbeat(let heartbeat, let id):
                send(heartbeat, id, from: index)
            case .emit(let event):
                emitted(event, by: index)
            case .startWork(let token):
                startWork(token, member: index)
            case .stopWork(let reason):
                stopWork(for: reason, member: index)
            case .stopWorkBy(let deadline):
                // The supervisor, a task of the member process, sends SIGKILL at the deadline less its margin;
                // a frozen process sends it late, a dead one never (its watchdog kills the work then).
                guard options.weakening != .shellIgnoresDeactivation, let work = members[index].work, works[work] != nil else { break }
                let killAt = members[index].clock.real(deadline - options.killMargin)
                queue.schedule(.member(index, process: members[index].process, .supervisorKill(work)), at: max(now, killAt))
            case .leaseValid(let until):
                guard options.weakening != .shellIgnoresDeactivation, let work = members[index].work, works[work] != nil else { break }
                guard works[work]!.leaseValidUntil.map({ until > $0 }) ?? true else { break }
                works[work]!.leaseValidUntil = until
                sendCheckpointWrite(from: index, token: works[work]!.token)
                if options.weakening != .watchdogIgnoresLeaseDeadlines {
                    let killAt = members[index].clock.real(until - options.killMargin)
                    queue.schedule(.watchdog(work), at: max(now, killAt))
                }
            case .scheduleTick(let at):
                members[index].tickGeneration += 1
                let tick = Event.member(index, process: members[index].process, .tick(members[index].tickGeneration))
                queue.schedule(tick, at: max(now, members[index].clock.real(at)))
            case .finish(let rejection):
                finish(index, rejection)
            }
        }
    }

    private mutating func emitted(_ event: MemberEvent, by index: Int) {
        record(.emitted(event), member: index)
        switch event {
        case .prepareToActivate, .prepareWithdrawn:
            break
        case .activate, .deactivate:
            if settledAt != nil {
                violate(.stability, "m\(index + 1) emitted \(event) after the group settled with no faults left")
            }
        }
    }

    /// The application stops its work at its own pace and the shell reports it stopped.
    private mutating func stopWork(for reason: DeactivationReason, member index: Int) {
        if reason == .preempted { preemptions += 1 }
        let process = members[index].process
        if let work = members[index].work, works[work] != nil {
            let stopsAt = hookOverrun(of: work, member: index) ?? now + gracefulStopDelay()
            queue.schedule(.member(index, process: process, .gracefulStopDone(work)), at: stopsAt)
        } else {
            queue.schedule(.member(index, process: process, .workExited(nil)), at: now)
        }
    }

    /// How long the application takes to stop after a deactivation: mostly at once, sometimes up to I, and now
    /// and then it hangs until the supervisor's grace period of 2·I ends (or the watchdog kills it first).
    private mutating func gracefulStopDelay() -> Int64 {
        let interval = options.heartbeatInterval
        if options.weakening == .shellIgnoresDeactivation {
            return random.duration(in: options.activationInterval...(options.activationInterval * 2)).nanoseconds
        }
        let draw = random.index(below: 100)
        if draw < 80 { return random.duration(in: .zero ... .milliseconds(50)).nanoseconds }
        if draw < 95 { return random.duration(in: .zero...interval).nanoseconds }
        return (interval * 2).nanoseconds
    }

    /// With ``SimulatedFault/hooks``, now and then the stopping work ignores SIGTERM and would run for up to 3·T;
    /// the supervisor sends SIGKILL after its stop grace of 2·I (late if it is frozen), and the watchdog kills it
    /// at the lease deadline. Returns when the work would end by itself, or `nil` when it does not overrun.
    private mutating func hookOverrun(of work: Int, member index: Int) -> Int64? {
        guard options.faults.contains(.hooks), faultsActive, random.chance(0.3) else { return nil }
        injected[.hooks, default: 0] += 1
        let interval = options.heartbeatInterval
        queue.schedule(.member(index, process: members[index].process, .supervisorKill(work)), at: now + (interval * 2).nanoseconds)
        return now + random.duration(in: (interval * 2)...(options.activationInterval * 3)).nanoseconds
    }

    private mutating func finish(_ index: Int, _ rejection: HeartbeatRejection?) {
        record(.finished(rejection), member: index)
        if let work = members[index].work, works[work] != nil {
            queue.schedule(.orphanNoticed(work), at: now + orphanDelay())
        }
        members[index].stop()
        let restartAt: Int64
        if rejection == nil, now < faultEnd {
            restartAt = min(now + random.duration(in: (options.activationInterval / 5)...(options.activationInterval * 2)).nanoseconds, faultEnd)
        } else {
            restartAt = now + random.duration(in: (options.heartbeatInterval / 2)...options.heartbeatInterval).nanoseconds
        }
        queue.schedule(.restart(index), at: restartAt)
    }

    private mutating func resume(_ index: Int, process: Int) {
        guard members[index].process == process, members[index].pausedUntil != nil else { return }
        members[index].pausedUntil = nil
        record(.resumed, member: index)
        // A process resumed past its lease writes first and learns later, as a frozen active does on SIGCONT.
        if let token = members[index].lastToken { sendCheckpointWrite(from: index, token: token) }
        let deferred = members[index].deferred
        members[index].deferred = []
        for input in deferred {
            guard violation == nil, members[index].process == process, members[index].pausedUntil == nil else { return }
            deliver(input, to: index)
        }
    }

    // MARK: Work

    private mutating func startWork(_ token: FencingToken, member index: Int) {
        guard let grant = grants[token], grant.member == index, grant.process == members[index].process else {
            violate(.safetyNoOverlap, "m\(index + 1) activated with token \(token), which the store never granted to this process")
            return
        }
        if let other = works.values.first(where: { $0.slot == grant.slot }) {
            violate(.safetyNoOverlap, "m\(index + 1) activated in slot \(grant.slot) while m\(other.member + 1) still acts with token \(other.token) of that slot")
            return
        }
        let work = nextWork
        nextWork += 1
        works[work] = Work(member: index, process: members[index].process, token: token, slot: grant.slot)
        members[index].work = work
        members[index].lastToken = token
        activations += 1
        usedTokens.insert(token)
        record(.workStarted(token), member: index)
        if works.count > configuration.activeGoal {
            let acting = works.values.map { "m\($0.member + 1) (token \($0.token))" }.sorted().joined(separator: ", ")
            violate(.safetyActiveGoal, "\(works.count) works act at once with active goal \(configuration.activeGoal): \(acting)")
            return
        }
        actingChanged()
    }

    private mutating func stopWork(_ id: Int, _ how: WorkStop) {
        guard let work = works.removeValue(forKey: id) else { return }
        record(.workStopped(work.token, how), member: work.member)
        actingChanged()
        if members[work.member].work == id {
            members[work.member].work = nil
        }
        if members[work.member].process == work.process, members[work.member].machine != nil {
            queue.schedule(.member(work.member, process: work.process, .workExited(work.token)), at: now)
        }
    }

    /// The watchdog kills the work once the newest lease deadline it was given, less the kill margin, has passed
    /// on its host's clock.
    private mutating func watchdogFired(for id: Int) {
        guard let work = works[id], let deadline = work.leaseValidUntil else { return }
        if members[work.member].clock.local(now) >= deadline - options.killMargin {
            stopWork(id, .watchdog)
        }
    }

    /// How long an orphaned work runs before it is stopped once its member process is gone: the watchdog sees its
    /// control pipe close and kills it at once. (On a lost host nothing is known; see ``crashFault()``.)
    private mutating func orphanDelay() -> Int64 {
        if options.weakening == .shellIgnoresDeactivation {
            return random.duration(in: options.activationInterval...(options.activationInterval * 2)).nanoseconds
        }
        return random.duration(in: .zero ... .milliseconds(5)).nanoseconds
    }

    // MARK: Network and store

    private var faultsActive: Bool { now < faultEnd }

    /// One leg of a store call of `member`: half of a round trip drawn from its latency.
    private mutating func legLatency(for member: Int) -> Int64 {
        let factor = options.storeModel.latencyFactor
        let range = options.storeLatency(of: member)
        return random.int(in: range.lowerBound.nanoseconds * factor...range.upperBound.nanoseconds * factor) / 2
    }

    /// The shell hands the heartbeat to its store client, which sends it at once if no round trip is under way,
    /// or with the next one otherwise (see ``StoreClient``).
    private mutating func send(_ heartbeat: Heartbeat, _ id: MemberStateMachine.RequestID, from index: Int) {
        record(.heartbeatSent(id, heartbeat.intent), member: index)
        if case .release(let token) = heartbeat.intent, !usedTokens.contains(token),
            let grant = grants[token], grant.member == index, grant.process == members[index].process {
            unusedGrants.insert(token)
        }
        members[index].client.waiting.append(SentHeartbeat(id: id, heartbeat: heartbeat))
        if members[index].client.inFlight == nil { flushStoreClient(of: index) }
    }

    /// Sends every waiting heartbeat of the member in one round trip (one transaction), and gives up on it after
    /// the shell's timeout, measured on the member's clock.
    private mutating func flushStoreClient(of index: Int) {
        guard members[index].client.inFlight == nil, !members[index].client.waiting.isEmpty else { return }
        let member = members[index]
        let heartbeats = member.client.waiting
        let batch = member.client.nextBatch
        members[index].client.waiting = []
        members[index].client.nextBatch += 1
        members[index].client.inFlight = StoreClient.InFlight(batch: batch, ids: heartbeats.compactMap(\.id))
        let giveUpAt = member.clock.real(member.clock.local(now) + options.callTimeout)
        queue.schedule(.member(index, process: member.process, .batchFailed(batch: batch)), at: giveUpAt)

        let lossy = faultsActive && options.faults.contains(.loss)
        let model = options.storeModel
        if partitioned.contains(index) || (lossy && random.chance(model.requestLoss)) {
            record(.requestLost(batch: batch), member: index)
            return
        }
        var call = StoreCall(
            member: index,
            process: member.process,
            batch: batch,
            heartbeats: heartbeats,
            answeredLate: lossy && random.chance(model.lateAnswers),
            replyLost: lossy && random.chance(model.replyLoss)
        )
        var arrival = now + legLatency(for: index)
        // A third of the late calls are held up on the way in (a lock wait, a stalled connection) until after the
        // caller gave up, so they are applied after heartbeats the member sent later. Only those that still land
        // within the fault window, so that the faults end when their effects do.
        let stuck = options.callTimeout + options.activationInterval
        if call.answeredLate, random.chance(1.0 / 3), now + stuck.nanoseconds < faultEnd {
            call.answeredLate = false
            arrival += random.duration(in: options.callTimeout...stuck).nanoseconds
        }
        queue.schedule(.storeArrival(call), at: arrival)
    }

    private mutating func storeReceived(_ call: StoreCall) {
        if outage {
            record(.storeUnreachable(batch: call.batch), member: call.member)
            if random.chance(0.5) {
                // Connection refused: the caller hears of it at once; otherwise it waits for its timeout.
                queue.schedule(.member(call.member, process: call.process, .batchFailed(batch: call.batch)), at: now + legLatency(for: call.member))
            }
            return
        }
        var service: Int64 = 0
        for _ in call.heartbeats {
            service += random.duration(in: .microseconds(50)...StoreTiming.longestService).nanoseconds
        }
        storeBusyUntil = max(now, storeBusyUntil) + service
        queue.schedule(.storeApply(call), at: storeBusyUntil)
    }

    /// Applies a round trip's heartbeats in order, in one transaction, and sends the answers back together.
    private mutating func storeApply(_ call: StoreCall) {
        // The wall clock, relative to its reading at real time zero; the token floor is its reading in µs.
        let wall = now + wallStep
        let floor = options.weakening == .restoreWithoutTokenFloor ? 0 : UInt64(Int64(wallOrigin) + wall / 1_000)
        var answers: [(MemberStateMachine.RequestID, Result<HeartbeatReply, HeartbeatRejection>)] = []
        for sent in call.heartbeats {
            var heartbeat = sent.heartbeat
            let storeNow = storeClock.advance(
                wall: Instant(nanoseconds: Int64(wallOrigin) * 1_000 + wall), sentAt: heartbeat.sentAt,
                previous: evidence.previous(of: heartbeat.member, row: ledger.members[heartbeat.member.id]),
                activationInterval: heartbeat.activationInterval
            )
            let moment = StoreMoment(
                now: options.weakening == .storeJudgesOnWallClock ? Instant(nanoseconds: wall) : storeNow,
                tokenFloor: FencingToken(rawValue: floor),
                recordCompleteSince: recordCompleteSince
            )
            if case .storeGrantsBeforeExpiry(let margin) = options.weakening {
                heartbeat.activationInterval -= margin
            }
            let result: Result<HeartbeatReply, HeartbeatRejection>
            let before = ledger
            do throws(HeartbeatRejection) {
                result = .success(try ledger.apply(heartbeat, at: moment))
            } catch {
                result = .failure(error)
            }
            if ledger.shouldAnnounce(heartbeat, from: before) { announceChange(by: call.member) }
            switch result {
            case .success(let reply):
                evidence.applied(heartbeat, row: ledger.members[heartbeat.member.id])
                var slot: Int?
                if case .granted(let token) = reply.outcome {
                    slot = ledger.leases.firstIndex { $0.holder?.token == token }
                    granted(token, slot: slot ?? -1, to: call)
                }
                record(.applied(sent.id, reply.outcome, slot: slot), member: call.member)
            case .failure(let rejection):
                if case .memberIDInUse = rejection, options.weakening != .storeForgetsRefusedHeartbeats {
                    evidence.refused(heartbeat, at: storeNow)
                }
                record(.refused(sent.id, rejection), member: call.member)
            }
            guard violation == nil else { return }
            if let id = sent.id { answers.append((id, result)) }
        }
        if partitioned.contains(call.member) || call.replyLost {
            record(.replyLost(batch: call.batch), member: call.member)
            return
        }
        var delay = legLatency(for: call.member)
        if call.answeredLate {
            delay += random.duration(in: options.heartbeatInterval...options.longestLateAnswer).nanoseconds
        }
        queue.schedule(.member(call.member, process: call.process, .batchAnswered(batch: call.batch, answers)), at: now + delay)
    }

    /// The store tells every other running member that a slot was freed or a member joined; like any message, an
    /// announcement can be cut off by a partition or lost, and arrives after a network leg.
    private mutating func announceChange(by sender: Int) {
        let lossy = faultsActive && options.faults.contains(.loss)
        for index in members.indices where index != sender && members[index].machine != nil {
            if partitioned.contains(index) || (lossy && random.chance(options.storeModel.replyLoss)) { continue }
            queue.schedule(.member(index, process: members[index].process, .changeAnnounced), at: now + legLatency(for: index))
        }
    }

    /// Checks fencing and overlap when the store grants `token`; a renewed grant of a held slot is not new.
    private mutating func granted(_ token: FencingToken, slot: Int, to call: StoreCall) {
        if let earlier = grants[token] {
            if earlier.member != call.member || earlier.process != call.process {
                violate(.fencing, "token \(token) granted to m\(call.member + 1) was granted before to m\(earlier.member + 1)")
            }
            return
        }
        if let highestToken, token <= highestToken {
            violate(.fencing, "token \(token) granted to m\(call.member + 1) after token \(highestToken)")
            return
        }
        highestToken = token
        grants[token] = Grant(member: call.member, process: call.process, slot: slot)
        if let other = works.values.first(where: { $0.slot == slot }) {
            violate(
                .safetyNoOverlap,
                "the store granted slot \(slot) to m\(call.member + 1) (token \(token)) while m\(other.member + 1) still acts with token \(other.token) of that slot"
            )
        }
    }

    // MARK: Checkpoints

    /// A checkpoint write with `token`, which reaches the store one network leg later (unless partitioned).
    private mutating func sendCheckpointWrite(from index: Int, token: FencingToken) {
        guard options.checkpointWrites, !partitioned.contains(index) else { return }
        record(.checkpointSent(token), member: index)
        queue.schedule(.checkpointArrival(member: index, token: token), at: now + legLatency(for: index))
    }

    /// Applies ``CheckpointRule`` on the store's clock as a reader sees it (advanced by the wall clock since the
    /// last heartbeat, as PostgreSQL's `understudy_group_now`), and checks the result independently.
    private mutating func checkpointArrived(from index: Int, token: FencingToken) {
        guard !outage else { return }
        let wall = Instant(nanoseconds: Int64(wallOrigin) * 1_000 + now + wallStep)
        let storeNow = storeClock.now + max(wall - storeClock.wallAt, .zero)
        let value = ContinuityPosition.encode(Int64(checkpointsAccepted + 1))
        let write: CheckpointWrite = if options.weakening == .checkpointIgnoresLease {
            if let checkpoint, checkpoint.token > token {
                .rejected(.superseded(by: checkpoint.token))
            } else {
                .accepted(Checkpoint(value: value, token: token, version: (checkpoint?.version ?? 0) + 1))
            }
        } else {
            CheckpointRule.write(value, token: token, over: checkpoint, group: ledger, now: storeNow)
        }
        switch write {
        case .accepted(let written):
            record(.checkpointWritten(token, accepted: true), member: index)
            if !ledger.leases.contains(where: { $0.holder.map { $0.token == token && $0.expiresAt > storeNow } ?? false }) {
                violate(.checkpointFencing, "the store accepted m\(index + 1)'s checkpoint write with token \(token), which holds no lease of the group valid at \(storeNow)")
            } else if let checkpoint, checkpoint.token > token {
                violate(.checkpointFencing, "the store accepted token \(token) over the checkpoint of the newer token \(checkpoint.token)")
            }
            checkpoint = written
            checkpointsAccepted += 1
        case .rejected:
            record(.checkpointWritten(token, accepted: false), member: index)
            checkpointsRefused += 1
        }
    }

    // MARK: Faults

    private mutating func scheduleFaults() {
        guard faultEnd > 0 else { return }
        let counts: [(SimulatedFault, Event, ClosedRange<Int64>)] = [
            (.crash, .crashFault, 0...2),
            (.processCrash, .processCrashFault, 0...2),
            (.pause, .pauseFault, 0...2),
            (.partition, .partitionFault, 0...1),
            (.outage, .outageFault, 0...1),
            (.resign, .resignFault, 0...2),
            (.shutdown, .shutdownFault, 0...1),
        ]
        for (fault, event, count) in counts where options.faults.contains(fault) {
            for _ in 0..<random.int(in: count) {
                queue.schedule(event, at: random.int(in: 0...(faultEnd - 1)))
            }
        }
        let restores = options.faults.contains(.restore) && random.chance(0.5)
        if restores {
            let restoreAt = random.int(in: 0...(faultEnd - 1))
            let age = random.duration(in: .zero...(options.activationInterval * 2)).nanoseconds
            queue.schedule(.snapshot, at: max(0, restoreAt - age))
            queue.schedule(.restoreFault, at: restoreAt)
        }
        if options.faults.contains(.clockStep) {
            for _ in 0..<random.int(in: 1...2) {
                let hours: Int64 = 3_600_000_000_000
                var step = random.chance(0.5)
                    ? random.duration(in: (options.activationInterval / 2)...(options.activationInterval * 5)).nanoseconds
                    : random.int(in: hours...(6 * hours))
                // A store that forgets grants must not be set back past them (the token floor's assumption).
                if !restores, random.chance(0.5) { step = -step }
                queue.schedule(.clockStepFault(by: step), at: random.int(in: 0...(faultEnd - 1)))
            }
        }
        queue.schedule(.faultsStop, at: faultEnd)
    }

    /// A running member, preferring one whose work acts (half of the time) since that is where faults hurt.
    private mutating func faultTarget(excludingPaused: Bool = true) -> Int? {
        let running = members.indices.filter { members[$0].machine != nil && (!excludingPaused || members[$0].pausedUntil == nil) }
        let acting = running.filter { members[$0].work != nil }
        let pool = !acting.isEmpty && random.chance(0.5) ? acting : running
        return pool.isEmpty ? nil : pool[random.index(below: pool.count)]
    }

    private mutating func faultDuration(upTo activationIntervals: Int64) -> Int64 {
        let duration = random.duration(in: (options.activationInterval / 2)...(options.activationInterval * Int(activationIntervals)))
        return min(now + duration.nanoseconds, faultEnd)
    }

    private mutating func crashFault() {
        guard let index = faultTarget(excludingPaused: false) else { return }
        record(.crashed, member: index)
        injected[.crash, default: 0] += 1
        if let work = members[index].work, works[work] != nil {
            // Nothing proves the host's work dead: it may run on until it notices (within I) or its watchdog
            // kills it at the lease deadline.
            let noticed = options.weakening == .shellIgnoresDeactivation ? orphanDelay() : random.duration(in: .zero...options.heartbeatInterval).nanoseconds
            queue.schedule(.orphanNoticed(work), at: now + noticed)
        }
        members[index].stop()
        let downtime = random.duration(in: (options.activationInterval / 5)...(options.activationInterval * 2))
        queue.schedule(.restart(index), at: min(now + downtime.nanoseconds, faultEnd))
    }

    private mutating func processCrashFault() {
        guard let index = faultTarget(excludingPaused: false) else { return }
        record(.processCrashed, member: index)
        injected[.processCrash, default: 0] += 1
        if let work = members[index].work, let acting = works[work] {
            // The watchdog sees the control pipe close and kills the work at once; once it is dead, it gives the
            // slot back in the dead process's name.
            var killedAt = now + orphanDelay()
            var releaseAt = killedAt
            if options.weakening == .watchdogReleasesBeforeKill {
                releaseAt = now
                killedAt = now + random.duration(in: options.heartbeatInterval...(options.heartbeatInterval * 2)).nanoseconds
            }
            queue.schedule(.orphanNoticed(work), at: killedAt)
            queue.schedule(.watchdogRelease(index, process: members[index].process, members[index].info, acting.token), at: releaseAt)
        }
        members[index].stop()
        let downtime = random.duration(in: (options.activationInterval / 5)...(options.activationInterval * 2))
        queue.schedule(.restart(index), at: min(now + downtime.nanoseconds, faultEnd))
    }

    /// The watchdog's one call after a process crash: `leave` releasing the dead work's token, in the name of
    /// the dead incarnation, so the store frees the slot only if that incarnation still holds it with that token.
    /// It is sent on the host's clock, as the member's heartbeats were, so the store clock stays bounded by it.
    private mutating func watchdogRelease(_ index: Int, process: Int, _ info: MemberInfo, _ token: FencingToken) {
        record(.proofOfDeathRelease(token), member: index)
        let heartbeat = Heartbeat(
            group: configuration.name,
            activeGoal: configuration.activeGoal,
            activationInterval: configuration.activationInterval,
            member: info,
            phase: .stopping,
            intent: .leave(releasing: token),
            sentAt: members[index].clock.local(now)
        )
        let lossy = faultsActive && options.faults.contains(.loss)
        if partitioned.contains(index) || (lossy && random.chance(options.storeModel.requestLoss)) {
            record(.requestLost(batch: 0), member: index)
            return
        }
        let call = StoreCall(
            member: index,
            process: process,
            batch: 0,
            heartbeats: [SentHeartbeat(id: nil, heartbeat: heartbeat)],
            answeredLate: false,
            replyLost: false
        )
        queue.schedule(.storeArrival(call), at: now + legLatency(for: index))
    }

    /// The store's record rolls back to its snapshot; from now on it holds grants for T, and its token floor
    /// (its wall clock) is above every token it granted before.
    private mutating func restoreFault() {
        guard let snapshot else { return }
        ledger = snapshot.ledger
        evidence = snapshot.evidence
        injected[.restore, default: 0] += 1
        if options.weakening != .restoreWithoutHold {
            recordCompleteSince = storeClock.now
        }
        record(.restored(snapshotAt: snapshot.at))
    }

    private mutating func pauseFault() {
        guard let index = faultTarget() else { return }
        let until = faultDuration(upTo: 3)
        members[index].pausedUntil = until
        record(.paused(until: until), member: index)
        queue.schedule(.resume(index, process: members[index].process), at: until)
    }

    private mutating func partitionFault() {
        guard partitioned.isEmpty else { return }
        var cut = Set(members.indices.filter { _ in random.chance(0.5) })
        if cut.isEmpty { cut = [random.index(below: members.count)] }
        partitioned = cut
        record(.partition(members: cut.sorted()))
        queue.schedule(.partitionHealed, at: faultDuration(upTo: 3))
    }

    private mutating func outageFault() {
        guard !outage else { return }
        outage = true
        let until = faultDuration(upTo: options.storeModel.longestOutageInActivationIntervals)
        record(.outage(until: until))
        queue.schedule(.outageOver, at: until)
    }

    private mutating func resignFault() {
        let acting = members.indices.filter { members[$0].machine != nil && members[$0].work != nil }
        guard !acting.isEmpty else { return }
        let index = acting[random.index(below: acting.count)]
        record(.resignFault, member: index)
        stopWork(members[index].work!, .ended)
    }

    private mutating func shutdownFault() {
        guard let index = faultTarget(excludingPaused: false) else { return }
        record(.shutdownFault, member: index)
        queue.schedule(.member(index, process: members[index].process, .shutdownRequested), at: now)
    }

    // MARK: Invariants

    private mutating func actingChanged() {
        let short = works.count < configuration.activeGoal
        if !goalFirstMet {
            goalFirstMet = !short
        } else if short, shortfallSince == nil {
            shortfallSince = now
        } else if !short, let since = shortfallSince {
            shortfalls.append(.nanoseconds(now - since))
            shortfallSince = nil
        }
    }

    /// After the faults stop: notes when the goal is met and when the group settles.
    ///
    /// The group cannot settle before T has passed since the faults stopped: an active member that has not fenced
    /// itself by then has had a renewal sent after the faults confirmed, so nothing it does later stems from a
    /// fault (with T = 3·I, one reply lost just before the faults stop makes an active fence itself up to 2·I
    /// later, which is not flapping).
    private mutating func checkProgress() {
        if recoveredAt == nil, works.count >= configuration.activeGoal {
            recoveredAt = now
        }
        if settledAt == nil, now >= faultEnd + options.activationInterval.nanoseconds, isSettled {
            settledAt = now
            end = now + options.effectiveStabilityWindow.nanoseconds
            record(.settled)
        }
    }

    /// The goal is met by the current processes, all of them active members in the store's eyes; every member
    /// runs, has joined and competes; and, where heavier members preempt, no member outside the slots outweighs
    /// one inside.
    private var isSettled: Bool {
        guard works.count == configuration.activeGoal else { return false }
        var lightestActing = Int.max
        for work in works.values {
            let member = members[work.member]
            guard member.process == work.process, member.machine?.activeToken == work.token else { return false }
            // A slow member may win a slot, but it cannot count on renewing it: not settled while it holds one.
            if work.member == 0, options.slowMemberCannotHold { return false }
            lightestActing = min(lightestActing, member.info.weight)
        }
        for (index, member) in members.enumerated() {
            guard let machine = member.machine, member.pausedUntil == nil,
                ledger.members[member.info.id]?.info.incarnation == member.info.incarnation
            else { return false }
            // A member too slow to hold a lease is not counted on to hold one: it may rest, and may outweigh.
            if index == 0, options.slowMemberCannotHold { continue }
            if machine.status == .resting { return false }
            if configuration.preemption, member.work == nil, member.info.weight > lightestActing { return false }
        }
        return true
    }

    private mutating func checkLiveness() {
        let goalBound = options.goalBound
        let settleBound = options.settleBound
        guard let recoveredAt, recoveredAt - faultEnd <= goalBound.nanoseconds else {
            violate(.liveness, "the goal of \(configuration.activeGoal) was not met within \(goalBound.formatted) after the faults stopped")
            return
        }
        guard let settledAt, settledAt - faultEnd <= settleBound.nanoseconds else {
            violate(.liveness, "the group did not settle (goal met, all members joined, best-ranked members active where they preempt) within \(settleBound.formatted) after the faults stopped")
            return
        }
    }

    private mutating func violate(_ invariant: Invariant, _ message: String) {
        guard violation == nil else { return }
        violation = InvariantViolation(invariant: invariant, at: Instant(nanoseconds: now), message: message, recentTrace: recentTrace.lines)
    }

    private mutating func record(_ kind: TraceEntry.Kind, member: Int? = nil) {
        let entry = TraceEntry(time: now, member: member, kind: kind)
        entry.fold(into: &traceHash)
        traceLength += 1
        recentTrace.append(entry)
    }
}

// MARK: - Parts

/// A member's host clock: the real timeline scaled by a rate error, from an arbitrary origin.
struct MemberClock: Sendable {
    /// The local reading at real time zero.
    var offset: Int64
    /// Parts per million the clock runs fast (positive) or slow (negative).
    var ratePPM: Int64

    func local(_ real: Int64) -> Instant {
        Instant(nanoseconds: offset + real + real * ratePPM / 1_000_000)
    }

    /// The earliest real instant at which the local clock reads `local` or later.
    func real(_ local: Instant) -> Int64 {
        var real = (local.nanoseconds - offset) * 1_000_000 / (1_000_000 + ratePPM)
        while self.local(real) < local { real += 1 }
        while real > 0, self.local(real - 1) >= local { real -= 1 }
        return real
    }
}

/// A member's host: its clock and identity outlive any one process.
struct SimulatedMember: Sendable {
    var info: MemberInfo
    let clock: MemberClock
    /// Counts process starts; events addressed to an older process are dropped.
    var process = 0
    /// `nil` while no process runs.
    var machine: MemberStateMachine?
    /// Set while the process is frozen; its inputs wait in ``deferred``.
    var pausedUntil: Int64?
    var deferred: [MemberInput] = []
    var tickGeneration: UInt64 = 0
    /// The process's store client: its heartbeats waiting for a round trip, and the round trip under way.
    var client = StoreClient()
    /// The work this process started, while it acts.
    var work: Int?
    /// The token of this process's newest activation, which it writes checkpoints with.
    var lastToken: FencingToken?

    init(info: MemberInfo, clock: MemberClock) {
        self.info = info
        self.clock = clock
    }

    /// The process is gone (crashed or finished); its work, if any, is now an orphan.
    mutating func stop() {
        machine = nil
        pausedUntil = nil
        deferred = []
        client = StoreClient()
        work = nil
        lastToken = nil
    }
}

/// A work that acts: from `activate` until it has stopped.
struct Work: Sendable {
    var member: Int
    var process: Int
    var token: FencingToken
    var slot: Int
    /// The newest lease deadline the watchdog was given, on the member's clock.
    var leaseValidUntil: Instant?

    init(member: Int, process: Int, token: FencingToken, slot: Int) {
        self.member = member
        self.process = process
        self.token = token
        self.slot = slot
    }
}

/// What the store records beside the ledger's member rows to bound its ``StoreClock``: the send instant of the
/// heartbeat each row was last written by (PostgreSQL's `members.sent_at`), and the newest heartbeat refused
/// because another incarnation holds the id (`members.refused_*`), so that a waiting member's retries measure time
/// too. Without the latter, a group whose members all wait for their ids (every process restarted within T) moves
/// its store clock by the slack per heartbeat only, and the rows they wait for do not expire.
struct ClockEvidence: Sendable {
    private var sentAt: [MemberID: Instant] = [:]
    private var refusedAttempts: [MemberID: (incarnation: String, heartbeat: StoreClock.PreviousHeartbeat)] = [:]

    /// The previous heartbeat of `member`'s incarnation, if the store knows one: `row` is the ledger's row of its id.
    func previous(of member: MemberInfo, row: GroupLedger.MemberRecord?) -> StoreClock.PreviousHeartbeat? {
        guard let row else { return nil }
        if row.info.incarnation == member.incarnation {
            return sentAt[member.id].map { StoreClock.PreviousHeartbeat(appliedAt: row.heartbeatAt, sentAt: $0) }
        }
        return refusedAttempts[member.id].flatMap { $0.incarnation == member.incarnation ? $0.heartbeat : nil }
    }

    /// `heartbeat` was applied and left `row` (none after a leave).
    mutating func applied(_ heartbeat: Heartbeat, row: GroupLedger.MemberRecord?) {
        guard row != nil else { return }
        sentAt[heartbeat.member.id] = heartbeat.sentAt
    }

    /// `heartbeat` was refused at store time `now` because another incarnation holds its id.
    mutating func refused(_ heartbeat: Heartbeat, at now: Instant) {
        refusedAttempts[heartbeat.member.id] = heartbeat.sentAt.map {
            (heartbeat.member.incarnation, StoreClock.PreviousHeartbeat(appliedAt: now, sentAt: $0))
        }
    }
}

/// Who the store granted a token to, and in which slot.
struct Grant: Sendable {
    var member: Int
    var process: Int
    var slot: Int
}

/// What a member process's store client does, as `HeartbeatBatcher` does it for SQLite and PostgreSQL: one round
/// trip (one transaction) at a time per process; heartbeats handed over while it is under way wait, and travel
/// together in the next. The shell gives up on a round trip after ``SimulationOptions/callTimeout`` and then sends
/// the next; an answer that comes after that is discarded.
struct StoreClient: Sendable {
    struct InFlight: Sendable {
        var batch: UInt64
        var ids: [MemberStateMachine.RequestID]
    }

    var waiting: [SentHeartbeat] = []
    var inFlight: InFlight?
    var nextBatch: UInt64 = 1
}

struct SentHeartbeat: Sendable {
    /// `nil` for the watchdog's release after a process crash, which no state machine waits for.
    var id: MemberStateMachine.RequestID?
    var heartbeat: Heartbeat
}

/// One round trip to the store: the heartbeats of one member process that travel together.
struct StoreCall: Sendable {
    var member: Int
    var process: Int
    var batch: UInt64
    var heartbeats: [SentHeartbeat]
    /// The answer comes I to 2·I late, while the caller still waits.
    var answeredLate: Bool
    var replyLost: Bool
}

/// Something that reaches a member process; waits while the process is paused.
enum MemberInput: Sendable {
    case start
    case tick(UInt64)
    /// The store's answers to the heartbeats of round trip `batch`, in the order they were sent.
    case batchAnswered(batch: UInt64, [(MemberStateMachine.RequestID, Result<HeartbeatReply, HeartbeatRejection>)])
    /// Round trip `batch` timed out or the store could not be reached.
    case batchFailed(batch: UInt64)
    /// The application finished stopping work number `Int` after a deactivation.
    case gracefulStopDone(Int)
    /// The supervisor's SIGKILL for work number `Int` at its `stopWorkBy` deadline (less the kill margin).
    case supervisorKill(Int)
    /// The work stopped; `token` is its token, or `nil` when it had stopped before the deactivation.
    case workExited(FencingToken?)
    case shutdownRequested
    /// The store announced that a slot was released or a member joined (PostgreSQL's `NOTIFY`, SQLite's
    /// announcement file).
    case changeAnnounced
}

enum Event: Sendable {
    case member(Int, process: Int, MemberInput)
    case restart(Int)
    case checkpointArrival(member: Int, token: FencingToken)
    case storeArrival(StoreCall)
    case storeApply(StoreCall)
    case watchdog(Int)
    case orphanNoticed(Int)
    case resume(Int, process: Int)
    case crashFault
    case processCrashFault
    case watchdogRelease(Int, process: Int, MemberInfo, FencingToken)
    case snapshot
    case restoreFault
    /// The store's wall clock steps by this many nanoseconds.
    case clockStepFault(by: Int64)
    case pauseFault
    case partitionFault
    case partitionHealed
    case outageFault
    case outageOver
    case resignFault
    case shutdownFault
    case faultsStop
}
