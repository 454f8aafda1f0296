/// What a store knows about time and about its own history when it applies a heartbeat.
public struct StoreMoment: Hashable, Sendable {
    /// The store's monotonic clock: every lease and membership is judged on it.
    public var now: Instant
    /// The least token a grant may take: stores pass their wall clock in microseconds since 1970. A store that is
    /// recreated, or restored from a backup that lost grants, thus still grants tokens larger than any it granted
    /// before, unless its wall clock was set back by more than the time since those grants.
    public var tokenFloor: FencingToken
    /// Since when the store's record of leases is known to be complete. A store that cannot vouch for its past
    /// (a new or replaced file, a restore, a failover to a replica that lost commits) sets it to the instant it
    /// noticed, so no slot is granted until one activation interval later: every lease the lost record may have
    /// held has expired by then. `nil`: the record has always been complete.
    public var recordCompleteSince: Instant?

    public init(now: Instant, tokenFloor: FencingToken = FencingToken(rawValue: 0), recordCompleteSince: Instant? = nil) {
        self.now = now
        self.tokenFloor = tokenFloor
        self.recordCompleteSince = recordCompleteSince
    }
}

/// The store-side state of one group and the rules by which a heartbeat changes it.
///
/// Every backend applies a ``Heartbeat`` to its group atomically and with exactly these semantics: the in-memory
/// store and the simulator call ``apply(_:now:)`` directly; the SQLite store loads the rows, applies, and writes
/// the difference back inside one `BEGIN IMMEDIATE` transaction. `now` is the store's clock, never a member's.
///
/// The rules that make a double grant impossible:
/// - A slot is granted only when it is free or its lease has expired on the store's clock.
/// - A renewal succeeds only for the holder's incarnation and token, and only before expiry.
/// - Every grant takes the next value of the group's token counter, which never decreases, or the store's token
///   floor if that is larger (``StoreMoment/tokenFloor``).
/// - No slot is granted within T of the instant from which the store's record is complete
///   (``StoreMoment/recordCompleteSince``).
public struct GroupLedger: Hashable, Sendable {
    public struct MemberRecord: Hashable, Sendable {
        public var info: MemberInfo
        public var joinSequence: Int64
        public var phase: MemberPhase
        public var heartbeatAt: Instant
        public var expiresAt: Instant

        public init(info: MemberInfo, joinSequence: Int64, phase: MemberPhase, heartbeatAt: Instant, expiresAt: Instant) {
            self.info = info
            self.joinSequence = joinSequence
            self.phase = phase
            self.heartbeatAt = heartbeatAt
            self.expiresAt = expiresAt
        }
    }

    public struct LeaseRecord: Hashable, Sendable {
        public struct Holder: Hashable, Sendable {
            public var member: MemberID
            public var incarnation: String
            public var token: FencingToken
            public var expiresAt: Instant

            public init(member: MemberID, incarnation: String, token: FencingToken, expiresAt: Instant) {
                self.member = member
                self.incarnation = incarnation
                self.token = token
                self.expiresAt = expiresAt
            }
        }

        public var slot: Int
        /// `nil` when the slot is free.
        public var holder: Holder?

        public init(slot: Int, holder: Holder?) {
            self.slot = slot
            self.holder = holder
        }
    }

    public var group: GroupName
    /// The number of slots, or of partitions when ``partitioned``.
    public var activeGoal: Int
    /// Whether the group is partitioned (``PartitionHeartbeat``): each slot is a partition, and a member may hold
    /// several.
    public var partitioned: Bool
    public var lastToken: FencingToken?
    public var nextJoinSequence: Int64
    public var members: [MemberID: MemberRecord]
    /// One record per slot, indexed by slot.
    public var leases: [LeaseRecord]

    /// A group that has never been written.
    public init(group: GroupName, activeGoal: Int) {
        self.init(group: group, activeGoal: activeGoal, partitioned: false, lastToken: nil, nextJoinSequence: 1, members: [:], leases: [])
        leases = (0..<activeGoal).map { LeaseRecord(slot: $0, holder: nil) }
    }

    public init(
        group: GroupName,
        activeGoal: Int,
        partitioned: Bool = false,
        lastToken: FencingToken?,
        nextJoinSequence: Int64,
        members: [MemberID: MemberRecord],
        leases: [LeaseRecord]
    ) {
        self.group = group
        self.activeGoal = activeGoal
        self.partitioned = partitioned
        self.lastToken = lastToken
        self.nextJoinSequence = nextJoinSequence
        self.members = members
        self.leases = leases
    }

    /// Applies one heartbeat at the store instant `now`, for a store whose record has always been complete.
    public mutating func apply(_ heartbeat: Heartbeat, now: Instant) throws(HeartbeatRejection) -> HeartbeatReply {
        try apply(heartbeat, at: StoreMoment(now: now))
    }

    /// Applies one heartbeat at `moment` and returns the reply.
    ///
    /// Throws ``HeartbeatRejection`` when the heartbeat can never succeed as sent; the ledger is then unchanged.
    public mutating func apply(_ heartbeat: Heartbeat, at moment: StoreMoment) throws(HeartbeatRejection) -> HeartbeatReply {
        let now = moment.now
        expire(now: now)
        try admit(heartbeat.member, size: heartbeat.activeGoal, partitioned: false)

        if case .leave(let token) = heartbeat.intent {
            if let token { release(heartbeat.member, token: token) }
            members[heartbeat.member.id] = nil
            return HeartbeatReply(outcome: .left, view: view(now: now))
        }
        let expiresAt = record(heartbeat.member, phase: heartbeat.phase, now: now, interval: heartbeat.activationInterval)

        let outcome: HeartbeatReply.Outcome
        switch heartbeat.intent {
        case .none:
            outcome = .none
        case .acquire:
            if let slot = slotHeld(by: heartbeat.member) {
                leases[slot].holder!.expiresAt = expiresAt
                outcome = .granted(leases[slot].holder!.token)
            } else if let slot = leases.firstIndex(where: { $0.holder == nil }),
                      grantsAllowed(at: moment, activationInterval: heartbeat.activationInterval),
                      let token = nextToken(floor: moment.tokenFloor) {
                lastToken = token
                leases[slot].holder = .init(
                    member: heartbeat.member.id, incarnation: heartbeat.member.incarnation, token: token, expiresAt: expiresAt
                )
                outcome = .granted(token)
            } else {
                outcome = .notGranted
            }
        case .renew(let token):
            if let slot = slotHeld(by: heartbeat.member), leases[slot].holder!.token == token {
                leases[slot].holder!.expiresAt = expiresAt
                outcome = .renewed
            } else {
                outcome = .lost
            }
        case .release(let token):
            release(heartbeat.member, token: token)
            outcome = .released
        case .leave:
            outcome = .left  // Returned above, before the member was written.
        }
        return HeartbeatReply(outcome: outcome, view: view(now: now))
    }

    /// Applies one heartbeat of a partitioned group at `moment`: each operation by the rules of a slot, in order;
    /// a partition index out of range is answered as a partition someone else holds.
    ///
    /// Throws ``HeartbeatRejection`` when the heartbeat can never succeed as sent; the ledger is then unchanged.
    public mutating func apply(_ heartbeat: PartitionHeartbeat, at moment: StoreMoment) throws(HeartbeatRejection) -> PartitionHeartbeatReply {
        let now = moment.now
        expire(now: now)
        try admit(heartbeat.member, size: heartbeat.partitions, partitioned: true)
        let expiresAt = heartbeat.leaving
            ? now
            : record(heartbeat.member, phase: heartbeat.phase, now: now, interval: heartbeat.activationInterval)
        let member = heartbeat.member
        func holds(_ partition: Int) -> Bool {
            leases[partition].holder.map { $0.member == member.id && $0.incarnation == member.incarnation } ?? false
        }

        var outcomes: [PartitionHeartbeatReply.Outcome] = []
        outcomes.reserveCapacity(heartbeat.operations.count)
        for operation in heartbeat.operations {
            let partition = operation.partition
            let known = leases.indices.contains(partition)
            switch operation {
            case .acquire:
                if known, holds(partition), !heartbeat.leaving {
                    leases[partition].holder!.expiresAt = expiresAt
                    outcomes.append(.granted(leases[partition].holder!.token))
                } else if known, leases[partition].holder == nil, !heartbeat.leaving,
                          grantsAllowed(at: moment, activationInterval: heartbeat.activationInterval),
                          let token = nextToken(floor: moment.tokenFloor) {
                    lastToken = token
                    leases[partition].holder = .init(member: member.id, incarnation: member.incarnation, token: token, expiresAt: expiresAt)
                    outcomes.append(.granted(token))
                } else {
                    outcomes.append(.notGranted)
                }
            case .renew(_, let token):
                if known, holds(partition), leases[partition].holder!.token == token, !heartbeat.leaving {
                    leases[partition].holder!.expiresAt = expiresAt
                    outcomes.append(.renewed)
                } else {
                    outcomes.append(.lost)
                }
            case .release(_, let token):
                if known, holds(partition), leases[partition].holder!.token == token {
                    leases[partition].holder = nil
                }
                outcomes.append(.released)
            }
        }
        if heartbeat.leaving { members[member.id] = nil }
        return PartitionHeartbeatReply(outcomes: outcomes, left: heartbeat.leaving, view: view(now: now))
    }

    /// The group as seen at the store instant `now`: live members and valid leases only.
    public func view(now: Instant) -> GroupView {
        GroupView(
            group: group,
            activeGoal: activeGoal,
            partitioned: partitioned,
            lastToken: lastToken,
            members: members.values
                .filter { $0.expiresAt > now }
                .sorted { $0.joinSequence < $1.joinSequence }
                .map { .init(info: $0.info, joinSequence: $0.joinSequence, phase: $0.phase, heartbeatAge: now - $0.heartbeatAt) },
            leases: leases.compactMap { record in
                guard let holder = record.holder, holder.expiresAt > now else { return nil }
                return .init(slot: record.slot, holder: holder.member, token: holder.token, remaining: holder.expiresAt - now)
            }
        )
    }

    /// Forgets expired members and frees expired leases. The token counter is kept.
    public mutating func expire(now: Instant) {
        members = members.filter { $0.value.expiresAt > now }
        for slot in leases.indices where leases[slot].holder.map({ $0.expiresAt <= now }) ?? false {
            leases[slot].holder = nil
        }
    }

    /// Whether applying `heartbeat` to `before`, which left this ledger, changed the group in a way its other
    /// members should hear of at once, which stores announce (see ``MemberStateMachine/changeAnnounced(now:)``):
    /// the member gave back a slot it held (a standby may be waiting for it), or it joined (it may outrank an
    /// active, which then hands over).
    public func shouldAnnounce(_ heartbeat: Heartbeat, from before: GroupLedger) -> Bool {
        let id = heartbeat.member.id
        if let joined = members[id], before.members[id]?.joinSequence != joined.joinSequence { return true }
        let token: FencingToken? = switch heartbeat.intent {
        case .release(let token): token
        case .leave(releasing: let token): token
        case .none, .acquire, .renew: nil
        }
        guard let token else { return false }
        func holds(_ ledger: GroupLedger) -> Bool {
            ledger.leases.contains { $0.holder?.member == id && $0.holder?.token == token }
        }
        return holds(before) && !holds(self)
    }

    /// Whether `heartbeat`, applied to `before`, changed the partitioned group in a way its other members should
    /// hear of at once: the member joined (partitions move to it) or gave back a partition it held.
    public func shouldAnnounce(_ heartbeat: PartitionHeartbeat, from before: GroupLedger) -> Bool {
        let id = heartbeat.member.id
        if let joined = members[id], before.members[id]?.joinSequence != joined.joinSequence { return true }
        return heartbeat.operations.contains { operation in
            guard case .release(let partition, let token) = operation, before.leases.indices.contains(partition) else { return false }
            return before.leases[partition].holder.map { $0.member == id && $0.token == token } ?? false
        }
    }

    /// Checks that `member` may heartbeat a group of `size` slots, or of `size` partitions when `partitioned`;
    /// the first member of a group, or the only one left, reshapes it.
    private mutating func admit(_ member: MemberInfo, size: Int, partitioned: Bool) throws(HeartbeatRejection) {
        if let existing = members[member.id], existing.info.incarnation != member.incarnation {
            throw .memberIDInUse(member.id, host: existing.info.host, pid: existing.info.pid)
        }
        guard size != activeGoal || leases.count != activeGoal || partitioned != self.partitioned else { return }
        let othersAlive = members.keys.contains { $0 != member.id } || leases.contains { $0.holder != nil }
        guard !othersAlive else {
            if partitioned || self.partitioned {
                throw .partitionsMismatch(group: group, stored: self.partitioned ? activeGoal : nil, requested: partitioned ? size : nil)
            }
            throw .activeGoalMismatch(group: group, stored: activeGoal, requested: size)
        }
        activeGoal = size
        self.partitioned = partitioned
        leases = (0..<size).map { LeaseRecord(slot: $0, holder: nil) }
    }

    /// Writes the member's heartbeat; returns when its membership, and the leases it renews, now expire.
    private mutating func record(_ member: MemberInfo, phase: MemberPhase, now: Instant, interval: Duration) -> Instant {
        let expiresAt = now + interval
        let joinSequence: Int64
        if let existing = members[member.id] {
            joinSequence = existing.joinSequence
        } else {
            // Saturates rather than traps on a corrupt counter; equal sequences are ranked by id.
            joinSequence = nextJoinSequence
            if nextJoinSequence < .max { nextJoinSequence += 1 }
        }
        members[member.id] = MemberRecord(info: member, joinSequence: joinSequence, phase: phase, heartbeatAt: now, expiresAt: expiresAt)
        return expiresAt
    }

    /// Whether the store's record has been complete for at least T, so no lease it may have lost still runs.
    private func grantsAllowed(at moment: StoreMoment, activationInterval: Duration) -> Bool {
        guard let since = moment.recordCompleteSince else { return true }
        return moment.now >= since + activationInterval
    }

    /// The token of the next grant, or `nil` when the counter is exhausted (only a corrupt row gets there).
    private func nextToken(floor: FencingToken) -> FencingToken? {
        let last = lastToken?.rawValue ?? 0
        guard last < FencingToken.maximum.rawValue else { return nil }
        return FencingToken(rawValue: min(max(last + 1, floor.rawValue), FencingToken.maximum.rawValue))
    }

    private func slotHeld(by member: MemberInfo) -> Int? {
        leases.firstIndex { $0.holder?.member == member.id && $0.holder?.incarnation == member.incarnation }
    }

    private mutating func release(_ member: MemberInfo, token: FencingToken) {
        if let slot = slotHeld(by: member), leases[slot].holder!.token == token {
            leases[slot].holder = nil
        }
    }
}
