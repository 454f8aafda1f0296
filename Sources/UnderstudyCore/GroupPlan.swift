/// Who should do what in a group, computed the same way by every member from the same ``GroupView``.
///
/// Ranking is weight descending, then earliest join, then member id: what Spread's ordered membership gives
/// for free, derived here from the store. The plan decides:
/// - **acquirers**: the best-ranked eligible standbys, one per free slot;
/// - **yielders** and **successors**: with preemption, each standby of strictly higher weight than an active
///   member is paired with the worst-ranked such active, which hands over in an orderly way. Equal weights never
///   preempt, so a returning member does not make the group flap;
/// - **preparers**: with a preparation interval P, the standbys next in line for actives silent for P or more.
public struct GroupPlan: Hashable, Sendable {
    /// Live members, best first.
    public let ranked: [GroupView.Member]
    /// Valid leases by holder.
    public let leases: [MemberID: GroupView.Lease]
    public let acquirers: Set<MemberID>
    public let yielders: Set<MemberID>
    public let successors: Set<MemberID>
    public let preparers: Set<MemberID>

    public init(view: GroupView, preemption: Bool, preparationInterval: Duration?) {
        let ranked = view.members.sorted(by: Self.ranksBefore)
        var leases: [MemberID: GroupView.Lease] = [:]
        for lease in view.leases { leases[lease.holder] = lease }
        let candidates = ranked.filter { leases[$0.info.id] == nil && $0.phase.isEligible }
        let freeSlots = max(0, view.activeGoal - view.leases.count)

        let acquirers = candidates.prefix(freeSlots)
        var waiting = candidates.dropFirst(freeSlots)
        var yielders: Set<MemberID> = []
        var successors: Set<MemberID> = []
        if preemption {
            // A holder already stopping is handing over anyway: it stays paired, so its successor stays prepared
            // and no other active is preempted in its place. One that has not yet reported `active` (its grant
            // and its next heartbeat are in flight) is active all the same.
            let holdersWorstFirst = ranked.reversed().filter { leases[$0.info.id] != nil }
            for (candidate, holder) in zip(waiting, holdersWorstFirst) where candidate.info.weight > holder.info.weight {
                yielders.insert(holder.info.id)
                successors.insert(candidate.info.id)
            }
            waiting = waiting.dropFirst(successors.count)
        }
        var preparers: Set<MemberID> = []
        if let preparationInterval {
            let members = Dictionary(ranked.map { ($0.info.id, $0) }, uniquingKeysWith: { first, _ in first })
            let silent = leases.keys.filter { holder in
                // A yielder's slot goes to its successor, already told to prepare; it needs no other preparer.
                guard !yielders.contains(holder) else { return false }
                guard let member = members[holder] else { return true }
                return member.heartbeatAge >= preparationInterval
            }
            preparers = Set(waiting.prefix(silent.count).map(\.info.id))
        }

        self.ranked = ranked
        self.leases = leases
        self.acquirers = Set(acquirers.map(\.info.id))
        self.yielders = yielders
        self.successors = successors
        self.preparers = preparers
    }

    /// The ranking order: weight descending, then earliest join, then member id.
    public static func ranksBefore(_ lhs: GroupView.Member, _ rhs: GroupView.Member) -> Bool {
        if lhs.info.weight != rhs.info.weight { return lhs.info.weight > rhs.info.weight }
        if lhs.joinSequence != rhs.joinSequence { return lhs.joinSequence < rhs.joinSequence }
        return lhs.info.id < rhs.info.id
    }

    /// The standby that takes the next slot to come free, if any: the best-ranked eligible non-holder.
    public var nextInLine: MemberID? {
        ranked.first { leases[$0.info.id] == nil && $0.phase.isEligible }?.info.id
    }
}
