import UnderstudyCore

/// One deterministic run of a work queue: the real ``QueueWorkerStateMachine``s of W workers against a simulated
/// store holding the real ``JobQueueLedger``, with simulated network, clocks, commands and faults, all driven by
/// one seed.
///
/// The simulator plays every part outside the core the way the runtime (`QueueWorker` running each job's command
/// with `JobCommand`, as `understudy queue work` does) plays it:
/// - **The store** applies calls one at a time on the store's clock (the real timeline), with a token floor of its
///   wall clock in µs. Each call is one round trip: claim, renew, record, release.
/// - **Each worker's clock** is the real timeline scaled by the worker's drift plus an offset: every `now` given to
///   a worker, and every instant it returns, is on its own monotonic clock.
/// - **The worker's shell** carries out the actions as `QueueWorker` does: each claim, renew and record is its own
///   round trip (the state machine has at most one claim and one renewal under way; records may overlap), sent at
///   once and given up after ``QueueSimulationOptions/callTimeout`` on the worker's clock, as the store client's
///   round-trip timeout does; a release is sent and never awaited. `sentAt` is the worker's clock when it sent.
/// - **A job's handler** runs its command: it ends by itself after a drawn duration (and then fails or succeeds
///   as the job's plan says), or is stopped on `stopJob`: SIGTERM, to which the command answers at its own pace,
///   then SIGKILL after the stop grace — both sent by the worker process, so a frozen worker sends them late.
/// - **The watchdog** of each command is a separate process given the work deadlines (`startJob`'s `stopBy` and
///   each `extendJob`): it kills the command I/4 before the newest one on its host's clock, even while the worker
///   process is frozen, and at once when the worker process dies.
///
/// A job's work runs from `startJob` until its command has exited. The invariants (``QueueInvariant``) are
/// checked after every event; the first violation ends the run.
public struct QueueSimulation: Sendable {
    public let seed: UInt64
    public let options: QueueSimulationOptions

    private var random: SimulationRandom
    private var queue = EventQueue<QueueEvent>()
    private var now: Int64 = 0
    private let end: Int64
    private let faultEnd: Int64
    private var workers: [SimulatedWorker]
    private var ledger = JobQueueLedger()
    /// The store's wall clock at real time zero, in µs since 1970: the token floor.
    private let wallOrigin: UInt64
    private var storeBusyUntil: Int64 = 0
    private var outage = false
    private var slow = false
    /// The plans of all jobs, in the order they are enqueued; `jobs[i]` has id `i + 1` once enqueued.
    private let plans: [JobPlan]
    private var enqueuedCount = 0
    /// How many times each job's command ended by itself.
    private var naturalEnds: [Int]
    private var runs: [Int: JobRun] = [:]
    private var nextRun = 0
    private var nextCall: UInt64 = 1

    // The checker's records.
    private var grantedTokens: [JobID: FencingToken] = [:]
    /// Who each claim was granted to: (job, token) → worker and process.
    private var grants: [ClaimReference: (worker: Int, process: Int)] = [:]
    private var startedTokens: [JobID: FencingToken] = [:]
    /// The token of each job's newest start whose outcome has not been recorded.
    private var unrecordedStart: [JobID: FencingToken] = [:]
    private var violation: QueueInvariantViolation?
    private var traceHash = TraceHash()
    private var traceLength = 0
    private var recentTrace = RecentTrace<QueueTraceEntry>()
    private var starts = 0
    private var claimsLost = 0
    private var reRuns = 0
    private var released = 0
    private var claimsIgnored = 0
    private var lostButRecorded = 0
    /// The claims whose outcome the store recorded.
    private var recordedClaims: Set<ClaimReference> = []
    private var injected: [QueueFault: Int] = [:]

    /// Prepares the run of `seed`; nothing happens until ``run()``.
    public init(seed: UInt64, options: QueueSimulationOptions) throws(QueueSimulationOptionsError) {
        try options.validate()
        self.seed = seed
        self.options = options
        random = SimulationRandom(seed: seed)
        faultEnd = options.effectiveFaultWindow.nanoseconds
        end = faultEnd + options.effectiveQuietTail.nanoseconds
        wallOrigin = 1_700_000_000_000_000 + UInt64(random.int(in: 0...100_000_000_000_000))
        workers = []
        for index in 0..<options.workers {
            let drift = options.faults.contains(.drift) ? Int64(QueueSimulationOptions.maximumDrift * 1_000_000) : 0
            let clock = MemberClock(offset: random.int(in: 0...1_000_000_000_000), ratePPM: random.int(in: -drift...drift))
            workers.append(SimulatedWorker(id: try! MemberID("w\(index + 1)"), clock: clock))
        }
        // The jobs: a third with one of three ordering keys, a quarter failing once or twice, one always failing;
        // some with a higher priority or a delay. Half are there from the start, the others come during the
        // first three quarters of the fault window (or of 8·T without faults).
        let enqueueWindow = max(faultEnd, (options.claimLease * 8).nanoseconds) * 3 / 4
        let doomed = random.index(below: options.jobs)
        var plans: [JobPlan] = []
        var enqueueTimes: [Int64] = []
        for index in 0..<options.jobs {
            let key = random.chance(0.35) ? "k\(random.index(below: 3) + 1)" : nil
            let priority = random.chance(0.2) ? 10 : 0
            let delay = random.chance(0.2) ? random.duration(in: .zero ... .seconds(2)) : .zero
            let failures = index == doomed ? Int.max : (random.chance(0.25) ? Int(random.int(in: 1...2)) : 0)
            let spec = try! JobSpec(
                queue: QueueSimulationOptions.queue, payload: [UInt8(truncatingIfNeeded: index)], priority: priority,
                delay: delay, maxAttempts: index == doomed ? 3 : 5, orderingKey: key
            )
            plans.append(JobPlan(spec: spec, failures: failures))
            enqueueTimes.append(random.chance(0.5) ? 0 : random.int(in: 0...enqueueWindow))
        }
        // Enqueued in time order, so that job ids follow enqueue order as the store's do.
        let order = plans.indices.sorted { (enqueueTimes[$0], $0) < (enqueueTimes[$1], $1) }
        self.plans = order.map { plans[$0] }
        naturalEnds = Array(repeating: 0, count: options.jobs)
        for (position, planIndex) in order.enumerated() {
            queue.schedule(.enqueue(position), at: enqueueTimes[planIndex])
        }
        for index in workers.indices {
            queue.schedule(.restart(index), at: random.duration(in: .zero...options.renewInterval).nanoseconds)
        }
        scheduleFaults()
    }

    // MARK: Running

    /// Runs until every job has ended after the faults (or the quiet tail is over) and returns what happened.
    public mutating func run() -> QueueSimulationResult {
        while violation == nil, let (time, event) = queue.popFirst() {
            guard time <= end else { break }
            now = time
            handle(event)
            if violation == nil, now >= faultEnd, isQuiescent { break }
        }
        if violation == nil { checkLiveness() }
        var completions: [Duration] = []
        var done = 0
        var dead = 0
        var deadByLostClaims = 0
        for index in 0..<enqueuedCount {
            let job = ledger.jobs[JobID(rawValue: Int64(index + 1))]!
            guard let ending = Self.ending(of: job, at: storeNow) else { continue }
            let state = ending.0
            completions.append(ending.1 - job.enqueuedAt)
            if state == .done { done += 1 }
            if state == .dead {
                dead += 1
                if plans[index].failures != .max { deadByLostClaims += 1 }
            }
        }
        return QueueSimulationResult(
            seed: seed,
            violation: violation,
            traceHash: traceHash,
            traceLength: traceLength,
            completionTimes: completions.sorted(),
            done: done,
            dead: dead,
            deadByLostClaims: deadByLostClaims,
            starts: starts,
            claimsLost: claimsLost,
            reRuns: reRuns,
            released: released,
            claimsIgnored: claimsIgnored,
            lostButRecorded: lostButRecorded,
            injected: injected,
            end: Instant(nanoseconds: now)
        )
    }

    private var storeNow: Instant { Instant(nanoseconds: now) }

    /// How and when a job ended, if it has: a claim that expired on its last attempt made it dead at its expiry.
    private static func ending(of job: JobQueueLedger.Job, at now: Instant) -> (JobState, Instant)? {
        switch job.stage {
        case .finished(let state, let at): (state, at)
        case .running(_, let expiresAt, _) where expiresAt <= now && job.attempt >= job.spec.maxAttempts: (.dead, expiresAt)
        case .available, .running: nil
        }
    }

    private mutating func handle(_ event: QueueEvent) {
        switch event {
        case .worker(let index, let process, let input):
            guard workers[index].process == process, workers[index].machine != nil else { return }
            if workers[index].pausedUntil != nil {
                workers[index].deferred.append(input)
            } else {
                deliver(input, to: index)
            }
        case .restart(let index):
            restart(index)
        case .enqueue(let position):
            enqueue(position)
        case .storeArrival(let request):
            storeReceived(request)
        case .storeApply(let request):
            storeApply(request)
        case .commandExit(let run, let how):
            commandExited(run, how)
        case .watchdog(let run):
            watchdogFired(run)
        case .resume(let index, let process):
            resume(index, process: process)
        case .crashFault:
            crashFault()
        case .freezeFault:
            freezeFault()
        case .shutdownFault:
            shutdownFault()
        case .outageFault:
            guard !outage else { return }
            outage = true
            injected[.outage, default: 0] += 1
            let until = faultDuration(upTo: 2)
            record(.outage(until: until))
            queue.schedule(.outageOver, at: until)
        case .outageOver:
            outage = false
            record(.outageOver)
        case .slowFault:
            guard !slow else { return }
            slow = true
            injected[.slow, default: 0] += 1
            let until = faultDuration(upTo: 3)
            record(.slow(until: until))
            queue.schedule(.slowOver, at: until)
        case .slowOver:
            slow = false
            record(.slowOver)
        case .faultsStop:
            record(.faultsStopped)
        }
    }

    // MARK: Worker processes

    private mutating func restart(_ index: Int) {
        guard workers[index].machine == nil else { return }
        workers[index].process += 1
        let worker = WorkerID(id: workers[index].id, incarnation: "\(workers[index].id).\(workers[index].process)")
        // Validated in init.
        let configuration = try! options.workerConfiguration(worker)
        workers[index].incarnation = worker
        workers[index].machine = QueueWorkerStateMachine(configuration: configuration)
        record(.started(process: workers[index].process), worker: index)
        runMachine(index) { machine, local in machine.start(now: local) }
    }

    private mutating func deliver(_ input: WorkerInput, to index: Int) {
        guard workers[index].machine != nil else { return }
        switch input {
        case .tick(let generation):
            guard generation == workers[index].tickGeneration else { return }
            runMachine(index) { machine, local in machine.tick(now: local) }
        case .answer(let call, let answer):
            guard let pending = workers[index].calls.removeValue(forKey: call) else {
                // The store client gave up on this round trip already (its timeout): the answer is discarded.
                record(.answerDiscarded(call: call), worker: index)
                return
            }
            record(.answered(call: call), worker: index)
            switch (pending, answer) {
            case (.claim(let sentAt), .claimed(let claims)):
                var actions: [QueueWorkerStateMachine.Action] = []
                runMachine(index, observe: { actions = $0 }) { machine, local in machine.claimed(claims, sentAt: sentAt, now: local) }
                // A claim the machine neither started nor gave back is dropped: it runs on the store until it expires.
                var used: Set<JobID> = []
                for action in actions {
                    if case .startJob(let claim, _) = action { used.insert(claim.id) }
                    if case .release(let references) = action { used.formUnion(references.map(\.id)) }
                }
                for claim in claims where !used.contains(claim.id) {
                    claimsIgnored += 1
                    record(.claimIgnored(claim.id, claim.token), worker: index)
                }
            case (.renew(let references, let sentAt), .renewed(let valid)):
                runMachine(index) { machine, local in machine.renewed(Array(zip(references, valid)), sentAt: sentAt, now: local) }
            case (.record(let outcomes), .recorded(let replies)):
                runMachine(index) { machine, local in machine.recorded(outcomes, replies: replies, now: local) }
            default:
                fatalError("answer \(answer) to call \(pending)")
            }
        case .callFailed(let call):
            guard let pending = workers[index].calls.removeValue(forKey: call) else { return }
            record(.callFailed(call: call), worker: index)
            switch pending {
            case .claim: runMachine(index) { machine, local in machine.claimFailed(now: local) }
            case .renew: runMachine(index) { machine, local in machine.renewFailed(now: local) }
            case .record(let outcomes): runMachine(index) { machine, local in machine.recordFailed(outcomes, now: local) }
            }
        case .handlerEnded(let run, let job, let result):
            guard workers[index].handlers[job] == run else { return }
            workers[index].handlers[job] = nil
            let jitter = Double(random.next() >> 11) * 0x1p-53
            runMachine(index) { machine, local in machine.jobEnded(job, result, jitter: jitter, now: local) }
        case .graceKill(let run):
            // The stop grace after SIGTERM ran out: the worker kills the command's tree itself.
            guard runs[run] != nil else { return }
            commandExited(run, .killedAfterGrace)
        case .announced:
            runMachine(index) { machine, local in machine.jobsAnnounced(now: local) }
        case .shutdown:
            record(.shutdownAsked, worker: index)
            runMachine(index) { machine, local in machine.shutdown(now: local) }
        }
    }

    /// Gives `body` the worker's machine and its local time, and carries out the actions it returns.
    private mutating func runMachine(
        _ index: Int,
        observe: ([QueueWorkerStateMachine.Action]) -> Void = { _ in },
        _ body: (inout QueueWorkerStateMachine, Instant) -> [QueueWorkerStateMachine.Action]
    ) {
        guard workers[index].machine != nil else { return }
        let local = workers[index].clock.local(now)
        var machine = workers[index].machine.take()!
        let actions = body(&machine, local)
        workers[index].machine = machine
        observe(actions)
        execute(actions, for: index)
    }

    private mutating func execute(_ actions: [QueueWorkerStateMachine.Action], for index: Int) {
        for action in actions {
            guard violation == nil, workers[index].machine != nil else { return }
            switch action {
            case .claim(let limit):
                send(.claim(worker: workers[index].incarnation!, limit: limit), from: index)
            case .renew(let references):
                send(.renew(references), from: index)
            case .record(let outcomes):
                send(.record(outcomes), from: index)
            case .release(let references):
                released += references.count
                send(.release(references), from: index)
            case .startJob(let claim, let stopBy):
                startJob(claim, stopBy: stopBy, worker: index)
            case .extendJob(let id, let until):
                guard let run = workers[index].handlers[id], runs[run] != nil else { break }
                armWatchdog(run, deadline: until)
            case .stopJob(let id, let reason):
                guard let run = workers[index].handlers[id], runs[run] != nil else { break }
                if reason == .selfFenced, options.weakening == .workerIgnoresFence {
                    record(.fenceIgnored(id), worker: index)
                    break
                }
                terminate(run, reason)
            case .abandon(let id, let reason):
                if let token = workers[index].claimTokens[id], recordedClaims.contains(ClaimReference(id: id, token: token)) {
                    // The store did record this claim's outcome: a renewal applied after the record answered
                    // `false`, and the machine took that for a lost claim.
                    lostButRecorded += 1
                    record(.abandonedButRecorded(id), worker: index)
                } else {
                    claimsLost += 1
                    record(.abandoned(id, reason), worker: index)
                }
            case .scheduleTick(let at):
                workers[index].tickGeneration += 1
                let tick = QueueEvent.worker(index, process: workers[index].process, .tick(workers[index].tickGeneration))
                queue.schedule(tick, at: max(now, workers[index].clock.real(at)))
            case .finish:
                finish(index)
            }
        }
    }

    private mutating func resume(_ index: Int, process: Int) {
        guard workers[index].process == process, workers[index].pausedUntil != nil else { return }
        workers[index].pausedUntil = nil
        record(.resumed, worker: index)
        let deferred = workers[index].deferred
        workers[index].deferred = []
        for input in deferred {
            guard violation == nil, workers[index].process == process, workers[index].pausedUntil == nil else { return }
            deliver(input, to: index)
        }
    }

    /// The worker drained and stopped; it is started again later.
    private mutating func finish(_ index: Int) {
        record(.finished, worker: index)
        // Every handler has ended (the machine finishes only then); a command of its still running would be
        // killed by its watchdog at once.
        killOrphans(of: index)
        workers[index].stop()
        scheduleRestart(index)
    }

    private mutating func scheduleRestart(_ index: Int) {
        let restartAt: Int64
        if now < faultEnd {
            let downtime = random.duration(in: (options.claimLease / 5)...(options.claimLease * 2))
            restartAt = min(now + downtime.nanoseconds, faultEnd)
        } else {
            restartAt = now + random.duration(in: (options.renewInterval / 2)...options.renewInterval).nanoseconds
        }
        queue.schedule(.restart(index), at: restartAt)
    }

    // MARK: Jobs and their commands

    private mutating func enqueue(_ position: Int) {
        let spec = plans[position].spec
        let id = ledger.enqueue([spec], at: storeNow)[0].id
        precondition(id.rawValue == Int64(position + 1), "job ids follow enqueue order")
        enqueuedCount += 1
        record(.enqueued(id))
        announce()
    }

    private mutating func startJob(_ claim: JobClaim, stopBy: Instant, worker index: Int) {
        let id = claim.id
        guard let grant = grants[claim.reference], grant.worker == index, grant.process == workers[index].process else {
            violate(.tokens, "w\(index + 1) started \(claim.reference), which the store never granted to this process")
            return
        }
        if let other = runs.values.first(where: { $0.job == id }) {
            violate(.exclusiveWork, "w\(index + 1) started job \(id) with token \(claim.token) while the work of its claim with token \(other.token) still runs in w\(other.worker + 1)")
            return
        }
        if let previous = startedTokens[id], previous >= claim.token {
            violate(.tokens, "w\(index + 1) started job \(id) with token \(claim.token) after a start with token \(previous)")
            return
        }
        if let key = plans[Int(id.rawValue) - 1].spec.orderingKey {
            for earlier in 1..<id.rawValue where plans[Int(earlier) - 1].spec.orderingKey == key {
                let earlierID = JobID(rawValue: earlier)
                let job = ledger.jobs[earlierID]!
                if Self.ending(of: job, at: storeNow) == nil {
                    violate(.ordering, "w\(index + 1) started job \(id) of key \(key) while job \(earlierID) of that key is \(job.state(at: storeNow))")
                    return
                }
                if let other = runs.values.first(where: { $0.job == earlierID }) {
                    violate(.ordering, "w\(index + 1) started job \(id) of key \(key) while the work of job \(earlierID) of that key still runs in w\(other.worker + 1)")
                    return
                }
            }
        }
        startedTokens[id] = claim.token
        if unrecordedStart[id] != nil { reRuns += 1 }
        unrecordedStart[id] = claim.token
        starts += 1
        let run = nextRun
        nextRun += 1
        runs[run] = JobRun(worker: index, process: workers[index].process, job: id, token: claim.token)
        workers[index].handlers[id] = run
        workers[index].claimTokens[id] = claim.token
        record(.jobStarted(id, claim.token), worker: index)
        queue.schedule(.commandExit(run, .byItself), at: now + commandDuration())
        armWatchdog(run, deadline: stopBy)
    }

    /// How long a command takes: about half under I, a third several renewals long, the rest up to 8·T/3.
    private mutating func commandDuration() -> Int64 {
        let draw = random.index(below: 100)
        let lease = options.claimLease
        if draw < 55 { return random.duration(in: .milliseconds(50)...options.renewInterval).nanoseconds }
        if draw < 85 { return random.duration(in: options.renewInterval...(lease + lease / 3)).nanoseconds }
        return random.duration(in: (lease + lease / 3)...(lease * 8 / 3)).nanoseconds
    }

    /// Gives the command's watchdog a new work deadline: it kills the command at the deadline less I/4.
    private mutating func armWatchdog(_ run: Int, deadline: Instant) {
        guard options.weakening != .workerIgnoresFence, options.weakening != .watchdogIgnoresDeadlines else { return }
        guard var job = runs[run] else { return }
        job.deadline = deadline
        runs[run] = job
        let killAt = workers[job.worker].clock.real(deadline - options.killMargin)
        queue.schedule(.watchdog(run), at: max(now, killAt))
    }

    private mutating func watchdogFired(_ run: Int) {
        guard let job = runs[run], let deadline = job.deadline else { return }
        if workers[job.worker].clock.local(now) >= deadline - options.killMargin {
            commandExited(run, .killedByWatchdog)
        }
    }

    /// The handler is cancelled: the command gets SIGTERM and stops at its own pace (most at once, some within I,
    /// a few ignore it); the worker sends SIGKILL after the stop grace.
    private mutating func terminate(_ run: Int, _ reason: QueueWorkerStateMachine.StopReason) {
        guard var job = runs[run], !job.terminated else { return }
        job.terminated = true
        runs[run] = job
        record(.stopAsked(job.job, reason), worker: job.worker)
        let draw = random.index(below: 100)
        if draw < 80 {
            queue.schedule(.commandExit(run, .terminated), at: now + random.duration(in: .zero ... .milliseconds(50)).nanoseconds)
        } else if draw < 95 {
            queue.schedule(.commandExit(run, .terminated), at: now + random.duration(in: .zero...options.renewInterval).nanoseconds)
        }
        let graceEnds = workers[job.worker].clock.real(workers[job.worker].clock.local(now) + options.stopGrace)
        queue.schedule(.worker(job.worker, process: job.process, .graceKill(run)), at: graceEnds)
    }

    /// The command's tree is gone: its work has stopped. The handler returns, and the worker hears of it.
    private mutating func commandExited(_ run: Int, _ how: CommandEnd) {
        guard let job = runs.removeValue(forKey: run) else { return }
        record(.commandExited(job.job, job.token, how), worker: job.worker)
        let result: QueueWorkerStateMachine.JobResult
        if how == .byItself {
            let position = Int(job.job.rawValue) - 1
            naturalEnds[position] += 1
            result = naturalEnds[position] <= plans[position].failures ? .failed("the command exited with status 1") : .succeeded
        } else {
            result = .failed("the command was killed (\(how))")
        }
        if workers[job.worker].process == job.process, workers[job.worker].machine != nil {
            queue.schedule(.worker(job.worker, process: job.process, .handlerEnded(run, job.job, result)), at: now)
        }
    }

    /// The worker process is gone: each command's watchdog sees its control pipe close and kills it at once.
    private mutating func killOrphans(of index: Int) {
        for run in runs.keys.sorted() where runs[run]!.worker == index && runs[run]!.process == workers[index].process {
            queue.schedule(.commandExit(run, .orphaned), at: now + random.duration(in: .zero ... .milliseconds(5)).nanoseconds)
        }
    }

    // MARK: Network and store

    private var faultsActive: Bool { now < faultEnd }

    /// One leg of a store call: half of a round trip drawn from the latency, and 0.2–1.5 s more while slow.
    private mutating func legLatency() -> Int64 {
        let range = options.storeLatency
        var leg = random.int(in: range.lowerBound.nanoseconds...range.upperBound.nanoseconds) / 2
        if slow { leg += random.duration(in: .milliseconds(200) ... .milliseconds(1_500)).nanoseconds }
        return leg
    }

    /// Sends one round trip; it is given up after the call timeout on the worker's clock (a release is never
    /// awaited).
    private mutating func send(_ kind: StoreRequest.Kind, from index: Int) {
        let call = nextCall
        nextCall += 1
        let worker = workers[index]
        let local = worker.clock.local(now)
        switch kind {
        case .claim: workers[index].calls[call] = .claim(sentAt: local)
        case .renew(let references): workers[index].calls[call] = .renew(references, sentAt: local)
        case .record(let outcomes): workers[index].calls[call] = .record(outcomes)
        case .release: break
        }
        record(.sent(call: call, kind.code, count: kind.count), worker: index)
        if kind.awaitsAnswer {
            let giveUpAt = worker.clock.real(local + options.callTimeout)
            queue.schedule(.worker(index, process: worker.process, .callFailed(call: call)), at: giveUpAt)
        }
        let lossy = faultsActive && options.faults.contains(.loss)
        if lossy && random.chance(0.02) {
            record(.requestLost(call: call), worker: index)
            return
        }
        var request = StoreRequest(
            worker: index, process: worker.process, call: call, kind: kind,
            answeredLate: lossy && random.chance(0.03), replyLost: lossy && random.chance(0.02)
        )
        var arrival = now + legLatency()
        // A third of the late calls are held up on the way in until after the caller gave up, and applied then;
        // only those that still land within the fault window, so that the faults end when their effects do.
        let stuck = options.callTimeout + options.claimLease
        if request.answeredLate, random.chance(1.0 / 3), now + stuck.nanoseconds < faultEnd {
            request.answeredLate = false
            arrival += random.duration(in: options.callTimeout...stuck).nanoseconds
        }
        queue.schedule(.storeArrival(request), at: arrival)
    }

    private mutating func storeReceived(_ request: StoreRequest) {
        if outage {
            record(.storeUnreachable(call: request.call), worker: request.worker)
            if request.kind.awaitsAnswer, random.chance(0.5) {
                // Connection refused: the caller hears of it at once; otherwise it waits for its timeout.
                queue.schedule(.worker(request.worker, process: request.process, .callFailed(call: request.call)), at: now + legLatency())
            }
            return
        }
        let service = random.duration(in: .microseconds(50) ... .microseconds(500)).nanoseconds
        storeBusyUntil = max(now, storeBusyUntil) + service
        queue.schedule(.storeApply(request), at: storeBusyUntil)
    }

    /// The claim lease the store applies: the one asked for, less the weakening's margin.
    private var storeLease: Duration {
        if case .storeExpiresEarly(let margin) = options.weakening { return options.claimLease - margin }
        return options.claimLease
    }

    private mutating func storeApply(_ request: StoreRequest) {
        let moment = StoreMoment(now: storeNow, tokenFloor: FencingToken(rawValue: wallOrigin + UInt64(now / 1_000)))
        let answer: StoreAnswer
        switch request.kind {
        case .claim(let worker, let limit):
            let claims = ledger.claim(queue: QueueSimulationOptions.queue, worker: worker, limit: limit, lease: storeLease, at: moment)
            record(.claimed(call: request.call, claims.map { ($0.id, $0.token) }), worker: request.worker)
            for claim in claims {
                granted(claim, to: request)
                guard violation == nil else { return }
            }
            answer = .claimed(claims)
        case .renew(let references):
            let valid = ledger.renew(references, lease: storeLease, at: storeNow)
            record(.renewed(call: request.call, valid), worker: request.worker)
            answer = .renewed(valid)
        case .record(let outcomes):
            let replies = ledger.record(outcomes, at: storeNow)
            record(.recorded(call: request.call, replies), worker: request.worker)
            for (outcome, reply) in zip(outcomes, replies) where reply != .stale {
                recordedClaims.insert(outcome.claim)
                if unrecordedStart[outcome.claim.id] == outcome.claim.token { unrecordedStart[outcome.claim.id] = nil }
            }
            answer = .recorded(replies)
        case .release(let references):
            ledger.release(references, at: storeNow)
            record(.released(call: request.call), worker: request.worker)
            announce()
            return
        }
        if request.replyLost {
            record(.replyLost(call: request.call), worker: request.worker)
            return
        }
        var delay = legLatency()
        if request.answeredLate {
            delay += random.duration(in: options.renewInterval...(options.renewInterval * 2)).nanoseconds
        }
        queue.schedule(.worker(request.worker, process: request.process, .answer(call: request.call, answer)), at: now + delay)
    }

    /// Checks tokens and ordering when the store grants a claim.
    private mutating func granted(_ claim: JobClaim, to request: StoreRequest) {
        if let previous = grantedTokens[claim.id], claim.token <= previous {
            violate(.tokens, "job \(claim.id) was claimed by w\(request.worker + 1) with token \(claim.token) after a claim with token \(previous)")
            return
        }
        grantedTokens[claim.id] = claim.token
        grants[claim.reference] = (request.worker, request.process)
        guard let key = plans[Int(claim.id.rawValue) - 1].spec.orderingKey else { return }
        for earlier in 1..<claim.id.rawValue where plans[Int(earlier) - 1].spec.orderingKey == key {
            let job = ledger.jobs[JobID(rawValue: earlier)]!
            if Self.ending(of: job, at: storeNow) == nil {
                violate(.ordering, "the store granted job \(claim.id) of key \(key) while job \(earlier) of that key is \(job.state(at: storeNow))")
                return
            }
        }
    }

    /// The store tells every running worker that jobs were enqueued or given back; an announcement can be lost.
    private mutating func announce() {
        let lossy = faultsActive && options.faults.contains(.loss)
        for index in workers.indices where workers[index].machine != nil {
            if lossy && random.chance(0.02) { continue }
            queue.schedule(.worker(index, process: workers[index].process, .announced), at: now + legLatency())
        }
    }

    // MARK: Faults

    private mutating func scheduleFaults() {
        guard faultEnd > 0 else { return }
        let counts: [(QueueFault, QueueEvent, ClosedRange<Int64>)] = [
            (.crash, .crashFault, 0...2),
            (.freeze, .freezeFault, 0...2),
            (.shutdown, .shutdownFault, 0...1),
            (.outage, .outageFault, 0...1),
            (.slow, .slowFault, 0...1),
        ]
        for (fault, event, count) in counts where options.faults.contains(fault) {
            for _ in 0..<random.int(in: count) {
                queue.schedule(event, at: random.int(in: 0...(faultEnd - 1)))
            }
        }
        queue.schedule(.faultsStop, at: faultEnd)
    }

    /// A running worker, preferring one whose jobs run (half of the time by default) since that is where faults hurt.
    private mutating func faultTarget(excludingPaused: Bool = true, preferringBusy: Double = 0.5) -> Int? {
        let running = workers.indices.filter { workers[$0].machine != nil && (!excludingPaused || workers[$0].pausedUntil == nil) }
        let busy = running.filter { !workers[$0].handlers.isEmpty }
        let pool = !busy.isEmpty && random.chance(preferringBusy) ? busy : running
        return pool.isEmpty ? nil : pool[random.index(below: pool.count)]
    }

    private mutating func faultDuration(upTo leases: Int) -> Int64 {
        let duration = random.duration(in: (options.claimLease / 2)...(options.claimLease * leases))
        return min(now + duration.nanoseconds, faultEnd)
    }

    private mutating func crashFault() {
        guard let index = faultTarget(excludingPaused: false) else { return }
        injected[.crash, default: 0] += 1
        record(.crashed, worker: index)
        killOrphans(of: index)
        workers[index].stop()
        scheduleRestart(index)
    }

    private mutating func freezeFault() {
        // A freeze hurts only a worker whose commands run: it picks one most of the time.
        guard let index = faultTarget(preferringBusy: 0.8) else { return }
        injected[.freeze, default: 0] += 1
        let until = faultDuration(upTo: 3)
        workers[index].pausedUntil = until
        record(.frozen(until: until), worker: index)
        queue.schedule(.resume(index, process: workers[index].process), at: until)
    }

    private mutating func shutdownFault() {
        guard let index = faultTarget(excludingPaused: false) else { return }
        injected[.shutdown, default: 0] += 1
        queue.schedule(.worker(index, process: workers[index].process, .shutdown), at: now)
    }

    // MARK: Invariants

    /// Every job has ended, no command runs, and no worker holds a claim.
    private var isQuiescent: Bool {
        guard enqueuedCount == plans.count, runs.isEmpty else { return false }
        guard workers.allSatisfy({ $0.machine == nil || $0.machine!.heldCount == 0 }) else { return false }
        for index in 0..<enqueuedCount where Self.ending(of: ledger.jobs[JobID(rawValue: Int64(index + 1))]!, at: storeNow) == nil {
            return false
        }
        return true
    }

    private mutating func checkLiveness() {
        let tail = options.effectiveQuietTail.formatted
        var unfinished: [String] = []
        for index in 0..<plans.count {
            let id = JobID(rawValue: Int64(index + 1))
            guard let job = ledger.jobs[id] else {
                unfinished.append("job \(index + 1) never enqueued")
                continue
            }
            guard let state = Self.ending(of: job, at: storeNow)?.0 else {
                unfinished.append("job \(id) is \(job.state(at: storeNow)) after attempt \(job.attempt)")
                continue
            }
            if plans[index].failures == .max, state != .dead || job.attempt != job.spec.maxAttempts {
                violate(.liveness, "job \(id), which always fails, ended \(state) after \(job.attempt) of \(job.spec.maxAttempts) attempts")
                return
            }
        }
        if !unfinished.isEmpty {
            violate(.liveness, "\(unfinished.count) jobs did not end within \(tail) after the faults stopped: " + unfinished.prefix(5).joined(separator: "; "))
            return
        }
        let holders = workers.indices.filter { workers[$0].machine.map { $0.heldCount > 0 } ?? false }
        if !holders.isEmpty {
            violate(.liveness, "every job ended, but " + holders.map { "w\($0 + 1) holds \(workers[$0].machine!.heldCount) claims" }.joined(separator: ", "))
            return
        }
        if let run = runs.values.first {
            violate(.liveness, "every job ended, but the command of job \(run.job) still runs in w\(run.worker + 1)")
        }
    }

    private mutating func violate(_ invariant: QueueInvariant, _ message: String) {
        guard violation == nil else { return }
        violation = QueueInvariantViolation(invariant: invariant, at: storeNow, message: message, recentTrace: recentTrace.lines)
    }

    private mutating func record(_ kind: QueueTraceEntry.Kind, worker: Int? = nil) {
        let entry = QueueTraceEntry(time: now, worker: worker, kind: kind)
        entry.fold(into: &traceHash)
        traceLength += 1
        recentTrace.append(entry)
    }
}

// MARK: - Parts

/// What one job does: its spec, and how many times its command fails before it succeeds (`Int.max`: always).
struct JobPlan: Sendable {
    var spec: JobSpec
    var failures: Int
}

/// A worker's host: its clock and id outlive any one process.
struct SimulatedWorker: Sendable {
    let id: MemberID
    let clock: MemberClock
    /// Counts process starts; events addressed to an older process are dropped.
    var process = 0
    var incarnation: WorkerID?
    /// `nil` while no process runs.
    var machine: QueueWorkerStateMachine?
    /// Set while the process is frozen; its inputs wait in ``deferred``.
    var pausedUntil: Int64?
    var deferred: [WorkerInput] = []
    var tickGeneration: UInt64 = 0
    /// The round trips under way, by call number.
    var calls: [UInt64: PendingCall] = [:]
    /// The run of each job whose handler has not returned yet.
    var handlers: [JobID: Int] = [:]
    /// The token of the newest claim this process started of each job.
    var claimTokens: [JobID: FencingToken] = [:]

    init(id: MemberID, clock: MemberClock) {
        self.id = id
        self.clock = clock
    }

    /// The process is gone (crashed or finished).
    mutating func stop() {
        machine = nil
        pausedUntil = nil
        deferred = []
        calls = [:]
        handlers = [:]
        claimTokens = [:]
    }
}

/// One command running for one claim: its work, from `startJob` until it exited.
struct JobRun: Sendable {
    var worker: Int
    var process: Int
    var job: JobID
    var token: FencingToken
    /// The newest work deadline the watchdog was given, on the worker's clock.
    var deadline: Instant?
    /// SIGTERM was sent.
    var terminated = false

    init(worker: Int, process: Int, job: JobID, token: FencingToken) {
        self.worker = worker
        self.process = process
        self.job = job
        self.token = token
    }
}

/// How a command ended.
enum CommandEnd: Int, Sendable, CustomStringConvertible {
    case byItself
    /// After SIGTERM, at its own pace.
    case terminated
    /// The worker's SIGKILL after the stop grace.
    case killedAfterGrace
    /// Its watchdog killed it at the work deadline less I/4.
    case killedByWatchdog
    /// Its worker process died and the watchdog killed it.
    case orphaned

    var description: String {
        switch self {
        case .byItself: "ended by itself"
        case .terminated: "stopped after SIGTERM"
        case .killedAfterGrace: "killed after the stop grace"
        case .killedByWatchdog: "killed by the watchdog"
        case .orphaned: "its worker died and the watchdog killed it"
        }
    }
}

/// A round trip a worker waits for.
enum PendingCall: Sendable {
    case claim(sentAt: Instant)
    case renew([ClaimReference], sentAt: Instant)
    case record([JobOutcome])
}

/// One call to the store.
struct StoreRequest: Sendable {
    enum Kind: Sendable {
        case claim(worker: WorkerID, limit: Int)
        case renew([ClaimReference])
        case record([JobOutcome])
        case release([ClaimReference])

        var awaitsAnswer: Bool {
            if case .release = self { return false }
            return true
        }

        var code: UInt64 {
            switch self {
            case .claim: 1
            case .renew: 2
            case .record: 3
            case .release: 4
            }
        }

        var count: Int {
            switch self {
            case .claim(_, let limit): limit
            case .renew(let references), .release(let references): references.count
            case .record(let outcomes): outcomes.count
            }
        }
    }

    var worker: Int
    var process: Int
    var call: UInt64
    var kind: Kind
    /// The answer comes I to 2·I late, while the caller still waits.
    var answeredLate: Bool
    var replyLost: Bool
}

enum StoreAnswer: Sendable {
    case claimed([JobClaim])
    case renewed([Bool])
    case recorded([OutcomeReply])
}

/// Something that reaches a worker process; waits while the process is frozen.
enum WorkerInput: Sendable {
    case tick(UInt64)
    case answer(call: UInt64, StoreAnswer)
    /// The round trip timed out, or the store refused the connection.
    case callFailed(call: UInt64)
    /// The handler of run `Int` returned: its command exited.
    case handlerEnded(Int, JobID, QueueWorkerStateMachine.JobResult)
    /// The stop grace of run `Int` ran out.
    case graceKill(Int)
    case announced
    case shutdown
}

enum QueueEvent: Sendable {
    case worker(Int, process: Int, WorkerInput)
    case restart(Int)
    case enqueue(Int)
    case storeArrival(StoreRequest)
    case storeApply(StoreRequest)
    case commandExit(Int, CommandEnd)
    case watchdog(Int)
    case resume(Int, process: Int)
    case crashFault
    case freezeFault
    case shutdownFault
    case outageFault
    case outageOver
    case slowFault
    case slowOver
    case faultsStop
}

/// One thing that happened in a queue run, on the simulator's real timeline.
struct QueueTraceEntry: Sendable, CustomStringConvertible {
    enum Kind: Sendable {
        case started(process: Int)
        case crashed
        case frozen(until: Int64)
        case resumed
        case shutdownAsked
        case finished
        case enqueued(JobID)
        case sent(call: UInt64, UInt64, count: Int)
        case requestLost(call: UInt64)
        case storeUnreachable(call: UInt64)
        case claimed(call: UInt64, [(JobID, FencingToken)])
        case renewed(call: UInt64, [Bool])
        case recorded(call: UInt64, [OutcomeReply])
        case released(call: UInt64)
        case replyLost(call: UInt64)
        case answered(call: UInt64)
        case answerDiscarded(call: UInt64)
        case callFailed(call: UInt64)
        case claimIgnored(JobID, FencingToken)
        case jobStarted(JobID, FencingToken)
        case stopAsked(JobID, QueueWorkerStateMachine.StopReason)
        case fenceIgnored(JobID)
        case commandExited(JobID, FencingToken, CommandEnd)
        case abandoned(JobID, QueueWorkerStateMachine.StopReason)
        case abandonedButRecorded(JobID)
        case outage(until: Int64)
        case outageOver
        case slow(until: Int64)
        case slowOver
        case faultsStopped
    }

    var time: Int64
    /// The worker's index, or `nil` for the store and the network.
    var worker: Int?
    var kind: Kind

    /// Feeds the entry into `hash` as integers, with no formatting.
    func fold(into hash: inout TraceHash) {
        hash.combine(UInt64(bitPattern: time))
        hash.combine(UInt64(worker.map { $0 + 1 } ?? 0))
        switch kind {
        case .started(let process): hash.combine(1, UInt64(process))
        case .crashed: hash.combine(2)
        case .frozen(let until): hash.combine(3, UInt64(bitPattern: until))
        case .resumed: hash.combine(4)
        case .shutdownAsked: hash.combine(5)
        case .finished: hash.combine(6)
        case .enqueued(let id): hash.combine(7, UInt64(id.rawValue))
        case .sent(let call, let code, let count): hash.combine(8, call, code, UInt64(count))
        case .requestLost(let call): hash.combine(9, call)
        case .storeUnreachable(let call): hash.combine(10, call)
        case .claimed(let call, let claims):
            hash.combine(11, call)
            for (id, token) in claims { hash.combine(UInt64(id.rawValue), token.rawValue) }
        case .renewed(let call, let valid):
            hash.combine(12, call)
            for ok in valid { hash.combine(ok ? 1 : 0) }
        case .recorded(let call, let replies):
            hash.combine(13, call)
            for reply in replies { hash.combine(Self.code(reply)) }
        case .released(let call): hash.combine(14, call)
        case .replyLost(let call): hash.combine(15, call)
        case .answered(let call): hash.combine(16, call)
        case .answerDiscarded(let call): hash.combine(17, call)
        case .callFailed(let call): hash.combine(18, call)
        case .claimIgnored(let id, let token): hash.combine(19, UInt64(id.rawValue), token.rawValue)
        case .jobStarted(let id, let token): hash.combine(20, UInt64(id.rawValue), token.rawValue)
        case .stopAsked(let id, let reason): hash.combine(21, UInt64(id.rawValue), Self.code(reason))
        case .fenceIgnored(let id): hash.combine(22, UInt64(id.rawValue))
        case .commandExited(let id, let token, let how): hash.combine(23, UInt64(id.rawValue), token.rawValue, UInt64(how.rawValue))
        case .abandoned(let id, let reason): hash.combine(24, UInt64(id.rawValue), Self.code(reason))
        case .abandonedButRecorded(let id): hash.combine(30, UInt64(id.rawValue))
        case .outage(let until): hash.combine(25, UInt64(bitPattern: until))
        case .outageOver: hash.combine(26)
        case .slow(let until): hash.combine(27, UInt64(bitPattern: until))
        case .slowOver: hash.combine(28)
        case .faultsStopped: hash.combine(29)
        }
    }

    private static func code(_ reply: OutcomeReply) -> UInt64 {
        switch reply {
        case .stale: 0
        case .recorded(let state): 1 + UInt64(JobState.allCases.firstIndex(of: state)!)
        }
    }

    private static func code(_ reason: QueueWorkerStateMachine.StopReason) -> UInt64 {
        switch reason {
        case .lost: 0
        case .selfFenced: 1
        case .shutdown: 2
        }
    }

    var description: String {
        let who = worker.map { "w\($0 + 1)" } ?? "store"
        return "[\(Instant(nanoseconds: time))] \(who) \(kindDescription)"
    }

    private var kindDescription: String {
        switch kind {
        case .started(let process): "started (incarnation \(process))"
        case .crashed: "crashed (the watchdogs kill its commands)"
        case .frozen(let until): "frozen until \(Instant(nanoseconds: until))"
        case .resumed: "resumed"
        case .shutdownAsked: "asked to shut down"
        case .finished: "finished draining"
        case .enqueued(let id): "job \(id) enqueued"
        case .sent(let call, let code, let count):
            "sent call \(call): " + ["", "claim up to \(count)", "renew \(count) claims", "record \(count) outcomes", "release \(count) claims"][Int(code)]
        case .requestLost(let call): "lost the request of call \(call)"
        case .storeUnreachable(let call): "could not reach the store with call \(call)"
        case .claimed(let call, let claims):
            "applied call \(call): claimed " + (claims.isEmpty ? "nothing" : claims.map { "job \($0.0) token \($0.1)" }.joined(separator: ", "))
        case .renewed(let call, let valid): "applied call \(call): renewals " + valid.map { $0 ? "valid" : "lost" }.joined(separator: ", ")
        case .recorded(let call, let replies):
            "applied call \(call): " + replies.map { reply in
                switch reply {
                case .stale: "stale"
                case .recorded(let state): "recorded, now \(state)"
                }
            }.joined(separator: ", ")
        case .released(let call): "applied call \(call): claims given back"
        case .replyLost(let call): "lost the reply to call \(call)"
        case .answered(let call): "received the answer to call \(call)"
        case .answerDiscarded(let call): "discarded the answer to call \(call): the client gave up on it"
        case .callFailed(let call): "call \(call) failed (timeout or refused)"
        case .claimIgnored(let id, let token): "dropped the claim of job \(id) token \(token): it still holds an earlier claim of that job"
        case .jobStarted(let id, let token): "job \(id) started with token \(token)"
        case .stopAsked(let id, let reason): "stopping job \(id) (SIGTERM): \(reason)"
        case .fenceIgnored(let id): "ignored the self-fence of job \(id)"
        case .commandExited(let id, let token, let how): "command of job \(id) token \(token) \(how)"
        case .abandoned(let id, let reason): "lost job \(id): \(reason)"
        case .abandonedButRecorded(let id): "reported job \(id) lost, though the store recorded its outcome (a renewal applied after the record)"
        case .outage(let until): "outage until \(Instant(nanoseconds: until))"
        case .outageOver: "outage over"
        case .slow(let until): "store slow until \(Instant(nanoseconds: until))"
        case .slowOver: "store fast again"
        case .faultsStopped: "faults stop"
        }
    }
}
