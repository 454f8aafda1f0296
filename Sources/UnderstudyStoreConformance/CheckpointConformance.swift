import Testing
import UnderstudyCore
import UnderstudyStore

/// ``CheckpointStore``: the semantics of ``CheckpointRule``, judged on the store's clock with the group's leases.
public enum CheckpointConformance {
    static func name(_ text: String = "position") throws -> CheckpointName { try CheckpointName(text) }

    static func acquire(_ store: any CoordinationStore & CheckpointStore, _ member: String, group: String = "group") async throws -> FencingToken? {
        let reply = try await store.heartbeat(ConformanceSamples.heartbeat(ConformanceSamples.member(member), group: group, .acquire))
        if case .granted(let token) = reply.outcome { return token }
        return nil
    }

    static func write(
        _ store: any CoordinationStore & CheckpointStore, _ value: String, token: FencingToken, group: String = "group", name: String = "position"
    ) async throws -> CheckpointWrite {
        try await store.writeCheckpoint(of: GroupName(group), named: Self.name(name), value: Array(value.utf8), token: token)
    }

    public static let checks: [ConformanceCheck<any CoordinationStore & CheckpointStore>] = [
        ConformanceCheck("holder_writesAndReadsBack_withIncreasingVersions") { context in
            let store = try await context.store()
            #expect(try await store.checkpoint(of: GroupName("group"), named: name()) == nil)
            let token = try #require(try await acquire(store, "a"))
            #expect(try await write(store, "p1", token: token) == .accepted(Checkpoint(value: Array("p1".utf8), token: token, version: 1)))
            #expect(try await write(store, "p2", token: token) == .accepted(Checkpoint(value: Array("p2".utf8), token: token, version: 2)))
            #expect(try await store.checkpoint(of: GroupName("group"), named: name()) == Checkpoint(value: Array("p2".utf8), token: token, version: 2))
            let bytes: [UInt8] = [0, 255, 0, 10]
            _ = try await store.writeCheckpoint(of: GroupName("group"), named: name("blob"), value: bytes, token: token)
            #expect(try await store.checkpoint(of: GroupName("group"), named: name("blob"))?.value == bytes)
        },

        ConformanceCheck("tokenThatHoldsNoLease_isRefused_alsoOnceReleased") { context in
            let store = try await context.store()
            #expect(try await write(store, "x", token: FencingToken(rawValue: 7)) == .rejected(.notHeld(FencingToken(rawValue: 7))))
            let token = try #require(try await acquire(store, "a"))
            let a = try ConformanceSamples.member("a")
            _ = try await store.heartbeat(ConformanceSamples.heartbeat(a, phase: .stopping, .release(token)))
            #expect(try await write(store, "x", token: token) == .rejected(.notHeld(token)))
            #expect(try await store.checkpoint(of: GroupName("group"), named: name()) == nil)
        },

        ConformanceCheck("expiredLease_isRefused_onTheStoreClock") { context in
            let store = try await context.store()
            let token = try #require(try await acquire(store, "a"))
            context.clock.advance(by: .milliseconds(2_999))
            #expect(try await write(store, "in time", token: token) == .accepted(Checkpoint(value: Array("in time".utf8), token: token, version: 1)))
            context.clock.advance(by: .milliseconds(1))
            #expect(try await write(store, "late", token: token) == .rejected(.notHeld(token)))
        },

        ConformanceCheck("staleActive_isSupersededByTheNextHolder") { context in
            let store = try await context.store()
            let first = try #require(try await acquire(store, "a"))
            _ = try await write(store, "a1", token: first)
            context.clock.advance(by: .seconds(3))
            let second = try #require(try await acquire(store, "b"))
            #expect(try await write(store, "b1", token: second) == .accepted(Checkpoint(value: Array("b1".utf8), token: second, version: 2)))
            #expect(try await write(store, "a2", token: first) == .rejected(.superseded(by: second)))
            #expect(try await store.checkpoint(of: GroupName("group"), named: name())?.value == Array("b1".utf8))
        },

        ConformanceCheck("aTokenOfOneGroup_cannotWriteAnother") { context in
            let store = try await context.store()
            _ = try await acquire(store, "b", group: "other")
            context.clock.advance(by: .seconds(3))
            let otherToken = try #require(try await acquire(store, "c", group: "other"))
            let token = try #require(try await acquire(store, "a", group: "one"))
            try #require(token != otherToken)
            #expect(try await write(store, "x", token: token, group: "other") == .rejected(.notHeld(token)))
            #expect(try await store.checkpoint(of: GroupName("one"), named: name()) == nil)
        },

        ConformanceCheck("racingWrites_eachTakeTheirOwnVersion") { context in
            let stores = try await context.stores(3)
            let token = try #require(try await acquire(stores[0], "a"))
            let versions = try await withThrowingTaskGroup(of: Int64?.self) { group in
                for index in 0..<30 {
                    let store = stores[index % stores.count]
                    group.addTask {
                        if case .accepted(let checkpoint) = try await write(store, "v\(index)", token: token) { return checkpoint.version }
                        return nil
                    }
                }
                return try await group.reduce(into: [Int64]()) { if let version = $1 { $0.append(version) } }
            }
            #expect(versions.sorted() == Array(1...30))
            #expect(try await stores[1].checkpoint(of: GroupName("group"), named: name())?.version == 30)
        },

        ConformanceCheck("valueOverTheLimit_isRefused") { context in
            let store = try await context.store()
            let token = try #require(try await acquire(store, "a"))
            await #expect(throws: CheckpointError.valueTooLarge(Checkpoint.maximumSize + 1)) {
                try await store.writeCheckpoint(
                    of: GroupName("group"), named: name(), value: Array(repeating: 1, count: Checkpoint.maximumSize + 1), token: token
                )
            }
        },
    ]
}
