/// A group as a person or a monitoring system wants to read it: who is active, who is next, how fresh
/// everyone's heartbeat is.
public struct GroupStatus: Hashable, Sendable {
    public struct Member: Hashable, Sendable {
        /// 1 is the best-ranked member.
        public var rank: Int
        public var id: MemberID
        public var weight: Int
        public var state: MemberPhase
        public var host: String
        public var pid: Int32
        public var heartbeatAge: Duration
        /// The fencing token of the lease this member holds, if it holds one.
        public var token: FencingToken?
    }

    public var group: GroupName
    public var activeGoal: Int
    /// The last fencing token granted in the group.
    public var lastToken: FencingToken?
    /// Best-ranked first.
    public var members: [Member]

    /// How many members hold a valid lease.
    public var activeCount: Int { members.count { $0.token != nil } }
    /// Whether as many members are active as the goal asks.
    public var meetsGoal: Bool { activeCount >= activeGoal }

    public init(view: GroupView) {
        let plan = GroupPlan(view: view, preemption: false, preparationInterval: nil)
        group = view.group
        activeGoal = view.activeGoal
        lastToken = view.lastToken
        members = plan.ranked.enumerated().map { index, member in
            let lease = plan.leases[member.info.id]
            // A member the store still counts as holder is active unless it says it is stopping.
            let state: MemberPhase = lease != nil && member.phase != .stopping ? .active : member.phase
            return Member(
                rank: index + 1,
                id: member.info.id,
                weight: member.info.weight,
                state: lease == nil && state == .active ? .standby : state,
                host: member.info.host,
                pid: member.info.pid,
                heartbeatAge: member.heartbeatAge,
                token: lease?.token
            )
        }
    }
}
