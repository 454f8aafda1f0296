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

    /// How many members are active: they hold a valid lease and report that they act on it. A holder that does
    /// not (a grant it could not use, or one whose first report since is still on its way) is not counted, so
    /// a group whose slot is held by a member that never runs its work shows as below its goal.
    public var activeCount: Int { members.count { $0.token != nil && $0.state == .active } }
    /// Whether as many members are active as the goal asks.
    public var meetsGoal: Bool { activeCount >= activeGoal }

    public init(view: GroupView) {
        let plan = GroupPlan(view: view, preemption: false, preparationInterval: nil)
        group = view.group
        activeGoal = view.activeGoal
        lastToken = view.lastToken
        members = plan.ranked.enumerated().map { index, member in
            let lease = plan.leases[member.info.id]
            return Member(
                rank: index + 1,
                id: member.info.id,
                weight: member.info.weight,
                // What the member last reported, except that a member whose lease has expired acts no longer.
                state: lease == nil && member.phase == .active ? .standby : member.phase,
                host: member.info.host,
                pid: member.info.pid,
                heartbeatAge: member.heartbeatAge,
                token: lease?.token
            )
        }
    }
}
