import Testing
import UnderstudyCore

@Suite("Partition routing")
struct PartitionRoutingTests {
    /// The published FNV-1a 64 vectors (Fowler, Noll and Vo's test suite), and what they give mod P.
    @Test func fnv1a64_matchesThePublishedVectors() {
        #expect(PartitionRouting.fnv1a64(Array("".utf8)) == 0xcbf2_9ce4_8422_2325)
        #expect(PartitionRouting.fnv1a64(Array("a".utf8)) == 0xaf63_dc4c_8601_ec8c)
        #expect(PartitionRouting.fnv1a64(Array("foobar".utf8)) == 0x8594_4171_f739_67e8)
        #expect(PartitionRouting.partition(of: "a", count: 16) == Int(UInt64(0xaf63_dc4c_8601_ec8c) % 16))
        #expect(PartitionRouting.partition(of: "foobar", count: 1_000) == Int(UInt64(0x8594_4171_f739_67e8) % 1_000))
    }

    /// The table in docs/partitions.md.
    @Test(arguments: [("", 5, 805), ("a", 12, 140), ("foobar", 8, 1_000), ("order-42", 4, 724), ("user:1001", 6, 214), ("日本", 1, 657)])
    func documentedVectors(key: String, of16: Int, of1024: Int) {
        #expect(PartitionRouting.partition(of: key, count: 16) == of16)
        #expect(PartitionRouting.partition(of: key, count: 1_024) == of1024)
    }
}

@Suite("Partition assignment")
struct PartitionAssignmentTests {
    typealias Member = PartitionAssignment.Member

    static func member(_ name: String, _ weight: Int = 50) -> Member { Member(id: try! MemberID(name), weight: weight) }

    /// Every partition is owned, and each member holds at most its share rounded up, and at least its share rounded
    /// down less one.
    static func checkBalance(_ assignment: PartitionAssignment, _ members: [Member], sourceLocation: SourceLocation = #_sourceLocation) {
        let live = members.filter { $0.weight > 0 }
        let total = live.reduce(0) { $0 + $1.weight }
        let partitions = assignment.owners.count
        for member in live {
            let held = assignment.partitions(of: member.id).count
            let floor = partitions * member.weight / total
            let ceiling = floor + (partitions * member.weight % total == 0 ? 0 : 1)
            #expect((max(0, floor - 1)...ceiling).contains(held), "\(member.id) holds \(held), share \(floor)…\(ceiling)", sourceLocation: sourceLocation)
        }
        #expect(Set(assignment.owners).isSubset(of: Set(live.map(\.id))), sourceLocation: sourceLocation)
    }

    static func moved(_ before: PartitionAssignment, _ after: PartitionAssignment) -> [(partition: Int, from: MemberID, to: MemberID)] {
        before.owners.indices.compactMap { index in
            before.owners[index] == after.owners[index] ? nil : (index, before.owners[index], after.owners[index])
        }
    }

    @Test func steadyState_movesNothing_andEveryMemberComputesTheSame() {
        let members = (0..<5).map { Self.member("m\($0)", [50, 100, 25][$0 % 3]) }
        let first = PartitionAssignment(partitions: 64, members: members)
        Self.checkBalance(first, members)
        #expect(PartitionAssignment(partitions: 64, members: members.reversed(), current: first.owners) == first)
        #expect(PartitionAssignment(partitions: 64, members: members, current: first.owners.map { $0 }) == first)
    }

    /// Random memberships, P from 1 to 1,024, weights 1 to 200, one change at a time: the bounds of
    /// ``PartitionAssignment`` hold on every change.
    @Test(arguments: 0..<100)
    func randomChanges_keepTheBounds(seed: Int) {
        var random = SplitMix(seed: UInt64(seed) &+ 1)
        let partitions = [1, 2, 7, 16, 64, 100, 1_024][Int(random.next() % 7)]
        var members = (0..<Int(1 + random.next() % 6)).map { Self.member("m\(seed)-\($0)", Int(1 + random.next() % 200)) }
        var assignment = PartitionAssignment(partitions: partitions, members: members)
        Self.checkBalance(assignment, members)
        var nextName = members.count
        for _ in 0..<25 {
            let joins = members.count < 2 || random.next() % 2 == 0
            if joins {
                let newcomer = Self.member("m\(seed)-\(nextName)", Int(1 + random.next() % 200))
                nextName += 1
                members.append(newcomer)
                let after = PartitionAssignment(partitions: partitions, members: members, current: assignment.owners)
                Self.checkBalance(after, members)
                let moves = Self.moved(assignment, after)
                let total = members.reduce(0) { $0 + $1.weight }
                let (floor, ceiling) = (partitions * newcomer.weight / total, (partitions * newcomer.weight + total - 1) / total)
                #expect((floor...ceiling).contains(after.partitions(of: newcomer.id).count), "a newcomer gets its share")
                #expect(moves.filter { $0.to != newcomer.id }.count <= 1, "a join moved partitions between old members: \(moves)")
                #expect(moves.count <= ceiling + 1, "a join moved \(moves.count), the newcomer's share is at most \(ceiling)")
                assignment = after
            } else {
                let departed = members.remove(at: Int(random.next() % UInt64(members.count)))
                let current = assignment.owners.map { $0 == departed.id ? nil : $0 }
                let after = PartitionAssignment(partitions: partitions, members: members, current: current)
                Self.checkBalance(after, members)
                let moves = Self.moved(assignment, after)
                let heldNothing = Set(members.map(\.id).filter { assignment.partitions(of: $0).isEmpty })
                #expect(moves.allSatisfy { $0.from == departed.id || heldNothing.contains($0.to) }, "a leave moved partitions of members that stayed: \(moves)")
                assignment = after
            }
            #expect(PartitionAssignment(partitions: partitions, members: members, current: assignment.owners) == assignment)
        }
    }

    @Test func weightZero_holdsNothingWhileOthersHaveWeight_andOwnerOfAKeyIsItsPartitionsOwner() {
        let members = [Self.member("a", 0), Self.member("b"), Self.member("c")]
        let assignment = PartitionAssignment(partitions: 10, members: members)
        #expect(assignment.partitions(of: try! MemberID("a")).isEmpty)
        #expect(assignment.owner(of: "order-42") == assignment.owners[PartitionRouting.partition(of: "order-42", count: 10)])
        let onlyZero = PartitionAssignment(partitions: 3, members: [Self.member("a", 0)])
        #expect(onlyZero.owners == Array(repeating: try! MemberID("a"), count: 3))
    }
}

/// A tiny deterministic generator for the property tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
