#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Who should own each of a group's P partitions, computed alike by every member from what they all see: the
/// live members with their weights, and who owns each partition now.
///
/// Balance: member *i* of weight wᵢ (of W in all) holds at most ⌈P·wᵢ/W⌉ partitions and at least ⌊P·wᵢ/W⌋ − 1;
/// a member that holds none (a newcomer) gets at least ⌊P·wᵢ/W⌋. Within those bounds it is **sticky**: a
/// partition stays with a live owner unless that owner holds more than its share rounded up, or a newcomer needs
/// it; where a partition must move, it goes by **weighted rendezvous hashing** (highest `wᵢ / −ln(uᵢₚ)`, uᵢₚ a
/// hash of member and partition), so every member picks the same new owner. Hence (property-tested over random
/// memberships, weights and P):
/// - a member that leaves (or crashes) gives up only its own partitions; the one exception is a leave of a member
///   that held none, which can raise a share enough for a member that holds none to take its first partitions,
///   exactly as if that member had just joined;
/// - a member that joins takes at most its share rounded up, plus one; at most one partition moves between the
///   members that were there before;
/// - with no change of membership, nothing moves (the assignment of an assignment is itself).
///
/// Members of weight 0 hold nothing while any member has a larger weight.
public struct PartitionAssignment: Hashable, Sendable {
    /// The most partitions a group may have.
    public static let maximumPartitions = 4_096

    /// The owner of each partition, by index.
    public let owners: [MemberID]

    /// A member and its weight, as the assignment sees it.
    public struct Member: Hashable, Sendable {
        public let id: MemberID
        public let weight: Int
        public init(id: MemberID, weight: Int) {
            self.id = id
            self.weight = weight
        }
    }

    /// The target assignment of `partitions` partitions over `members` (at least one), moving as little as possible
    /// from `current` (the owner of each partition now, `nil` when it has none or its owner is gone).
    public init(partitions: Int, members: [Member], current: [MemberID?] = []) {
        let members = Self.normalized(members)
        precondition(!members.isEmpty && partitions > 0, "an assignment needs members and partitions")
        let totalWeight = members.reduce(0) { $0 + $1.weight }
        let floors = members.map { partitions * $0.weight / totalWeight }
        let ceilings = members.enumerated().map { index, member in
            floors[index] + (partitions * member.weight % totalWeight == 0 ? 0 : 1)
        }
        let index = Dictionary(uniqueKeysWithValues: members.enumerated().map { ($1.id, $0) })
        let seeds = members.map { PartitionAssignment.seed($0.id) }
        func score(_ member: Int, _ partition: Int) -> Double {
            Self.score(seed: seeds[member], weight: members[member].weight, partition: partition)
        }

        var owner = [Int?](repeating: nil, count: partitions)
        var held = [[Int]](repeating: [], count: members.count)
        for partition in 0..<partitions {
            guard partition < current.count, let id = current[partition], let member = index[id] else { continue }
            owner[partition] = member
            held[member].append(partition)
        }
        // Over its ceiling, a member keeps the partitions it scores highest on.
        for member in members.indices where held[member].count > ceilings[member] {
            let ranked = held[member].sorted { score(member, $0) > score(member, $1) }
            for partition in ranked.dropFirst(ceilings[member]) { owner[partition] = nil }
            held[member] = Array(ranked.prefix(ceilings[member]))
        }
        // Free partitions go first to members below their floor, then to members below their ceiling: each to the
        // member that kept the fewest of its partitions for the room it has (a newcomer first, so that a join moves
        // partitions only to it), then to the one furthest below its share, ties by rendezvous score.
        let kept = held.map(\.count)
        for bound in [floors, ceilings] {
            for partition in 0..<partitions where owner[partition] == nil {
                let candidates = members.indices.filter { held[$0].count < bound[$0] }
                guard let chosen = candidates.max(by: { a, b in
                    let roomA = bound[a] - kept[a], roomB = bound[b] - kept[b]
                    if roomA != roomB { return roomA < roomB }
                    let shortfallA = Self.shortfall(held[a].count, weight: members[a].weight, partitions: partitions, total: totalWeight)
                    let shortfallB = Self.shortfall(held[b].count, weight: members[b].weight, partitions: partitions, total: totalWeight)
                    if shortfallA != shortfallB { return shortfallA < shortfallB }
                    return score(a, partition) < score(b, partition)
                }) else { continue }
                owner[partition] = chosen
                held[chosen].append(partition)
            }
        }
        // On a join (no partition was free), a member that kept nothing, the newcomer, takes up to its floor from
        // members above theirs the partitions it scores highest on. After a leave the departed member's
        // partitions are enough: the members that stay never lose any, and one that a leave left below its
        // raised floor catches up with the next free partition.
        // A member still more than one below its floor once the free partitions are placed is a newcomer whose
        // first partitions came one handover at a time (the members that saw the join late computed no move of
        // their own): it takes up to its floor from the members above theirs in the same way.
        let joined = (0..<partitions).allSatisfy { partition in partition < current.count && current[partition].flatMap { index[$0] } != nil }
        for member in members.indices where (joined && kept[member] == 0) || held[member].count < floors[member] - 1 {
            while held[member].count < floors[member] {
                let donors = members.indices.filter { held[$0].count > floors[$0] }
                let offered = donors.flatMap { donor in held[donor].map { (donor, $0) } }
                guard let (donor, partition) = offered.max(by: { score(member, $0.1) < score(member, $1.1) }) else { break }
                held[donor].removeAll { $0 == partition }
                owner[partition] = member
                held[member].append(partition)
            }
        }
        owners = owner.map { members[$0!].id }
    }

    /// The partitions `member` owns, in order.
    public func partitions(of member: MemberID) -> [Int] {
        owners.indices.filter { owners[$0] == member }
    }

    /// The owner of `key`'s partition (``PartitionRouting``).
    public func owner(of key: String) -> MemberID {
        owners[PartitionRouting.partition(of: key, count: owners.count)]
    }

    /// Members sorted by id with a positive weight (all of weight 1 if none has one), one entry per id.
    private static func normalized(_ members: [Member]) -> [Member] {
        var unique: [MemberID: Member] = [:]
        for member in members { unique[member.id] = member }
        let sorted = unique.values.sorted { $0.id < $1.id }
        let weighted = sorted.filter { $0.weight > 0 }
        return weighted.isEmpty ? sorted.map { Member(id: $0.id, weight: 1) } : weighted
    }

    /// How far `held` falls short of the member's share P·w/W, scaled by W to stay in integers.
    private static func shortfall(_ held: Int, weight: Int, partitions: Int, total: Int) -> Int {
        partitions * weight - held * total
    }

    private static func seed(_ id: MemberID) -> UInt64 {
        PartitionRouting.fnv1a64(id.rawValue.utf8)
    }

    /// Weighted rendezvous score: `weight / −ln(u)` with u in (0, 1) from a hash of the member and the partition.
    private static func score(seed: UInt64, weight: Int, partition: Int) -> Double {
        var z = seed ^ (UInt64(partition) &* 0x9e37_79b9_7f4a_7c15)
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z ^= z >> 31
        let unit = (Double(z >> 11) + 0.5) / 9_007_199_254_740_992.0
        return Double(weight) / -log(unit)
    }
}
