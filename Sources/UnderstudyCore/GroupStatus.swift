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
        /// The fencing token of the lease this member holds, if it holds one (in a group of slots).
        public var token: FencingToken?
        /// How many partitions it holds (in a partitioned group).
        public var partitions: Int
    }

    /// The owner of one partition of a partitioned group.
    public struct Partition: Hashable, Sendable {
        public var partition: Int
        /// `nil` while no valid lease is held.
        public var owner: MemberID?
        public var token: FencingToken?
    }

    public var group: GroupName
    /// The number of slots, or of partitions when ``partitioned``.
    public var activeGoal: Int
    public var partitioned: Bool
    /// Every partition in order, with its owner, in a partitioned group; empty otherwise.
    public var partitions: [Partition]
    /// The last fencing token granted in the group.
    public var lastToken: FencingToken?
    /// Best-ranked first.
    public var members: [Member]

    /// How many members are active: they hold a valid lease and report that they act on it. A holder that does
    /// not (a grant it could not use, or one whose first report since is still on its way) is not counted, so
    /// a group whose slot is held by a member that never runs its work shows as below its goal.
    /// In a partitioned group, how many partitions are owned.
    public var activeCount: Int {
        partitioned ? partitions.count { $0.owner != nil } : members.count { $0.token != nil && $0.state == .active }
    }
    /// Whether as many members are active as the goal asks (every partition owned, in a partitioned group).
    public var meetsGoal: Bool { activeCount >= activeGoal }

    public init(view: GroupView) {
        let plan = GroupPlan(view: view, preemption: false, preparationInterval: nil)
        group = view.group
        activeGoal = view.activeGoal
        partitioned = view.partitioned
        lastToken = view.lastToken
        var held: [MemberID: Int] = [:]
        var partitions: [Partition] = []
        if view.partitioned {
            partitions = (0..<view.activeGoal).map { Partition(partition: $0, owner: nil, token: nil) }
            for lease in view.leases where partitions.indices.contains(lease.slot) {
                partitions[lease.slot].owner = lease.holder
                partitions[lease.slot].token = lease.token
                held[lease.holder, default: 0] += 1
            }
        }
        self.partitions = partitions
        members = plan.ranked.enumerated().map { index, member in
            let lease = view.partitioned ? nil : plan.leases[member.info.id]
            let owned = held[member.info.id] ?? 0
            return Member(
                rank: index + 1,
                id: member.info.id,
                weight: member.info.weight,
                // What the member last reported, except that a member whose lease has expired acts no longer.
                state: (view.partitioned ? owned == 0 : lease == nil) && member.phase == .active ? .standby : member.phase,
                host: member.info.host,
                pid: member.info.pid,
                heartbeatAge: member.heartbeatAge,
                token: lease?.token,
                partitions: owned
            )
        }
    }
}
