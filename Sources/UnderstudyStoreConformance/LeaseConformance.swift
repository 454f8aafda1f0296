import Testing
import UnderstudyCore
import UnderstudyStore

/// ``LeaseStore``: the semantics of `GroupLedger.apply(_:at:)`; `group(named:)` to read a group back.
public enum LeaseConformance {
    public static let checks: [ConformanceCheck<any CoordinationStore>] = [
        ConformanceCheck("acquire_freeSlot_grantsFirstTokenAndRefusesTheNext") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            let first = try await store.heartbeat(heartbeat(a, .acquire))
            #expect(first.outcome == .granted(FencingToken(rawValue: 1)))
            let second = try await store.heartbeat(heartbeat(b, .acquire))
            #expect(second.outcome == .notGranted)
            #expect(second.view.leases.map(\.holder) == [a.id])
            #expect(Set(second.view.members.map(\.info.id)) == [a.id, b.id])
            #expect(second.view.lastToken == FencingToken(rawValue: 1))
        },

        ConformanceCheck("acquire_byHolder_confirmsTheSameToken") { context in
            let store = try await context.store()
            let a = try member("a")
            _ = try await store.heartbeat(heartbeat(a, .acquire))
            context.clock.advance(by: .seconds(1))
            let again = try await store.heartbeat(heartbeat(a, .acquire))
            #expect(again.outcome == .granted(FencingToken(rawValue: 1)))
            #expect(again.view.leases.first?.remaining == .seconds(3))
        },

        ConformanceCheck("renewal_beforeExpiry_extendsByTheActivationInterval") { context in
            let store = try await context.store()
            let a = try member("a")
            _ = try await store.heartbeat(heartbeat(a, .acquire))
            context.clock.advance(by: .milliseconds(2_999))
            let renewal = try await store.heartbeat(heartbeat(a, phase: .active, .renew(FencingToken(rawValue: 1))))
            #expect(renewal.outcome == .renewed)
            #expect(renewal.view.leases.first?.remaining == .seconds(3))
        },

        ConformanceCheck("renewal_atExpiry_isLostAndTheSlotGoesToTheNextWithALargerToken") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            _ = try await store.heartbeat(heartbeat(a, .acquire))
            context.clock.advance(by: .seconds(3))
            let stale = try await store.heartbeat(heartbeat(a, phase: .active, .renew(FencingToken(rawValue: 1))))
            #expect(stale.outcome == .lost)
            let next = try await store.heartbeat(heartbeat(b, .acquire))
            #expect(next.outcome == .granted(FencingToken(rawValue: 2)))
        },

        ConformanceCheck("renewal_withAnotherIncarnationOrToken_isLost") { context in
            let store = try await context.store()
            let a = try member("a")
            _ = try await store.heartbeat(heartbeat(a, .acquire))
            let wrongToken = try await store.heartbeat(heartbeat(a, phase: .active, .renew(FencingToken(rawValue: 7))))
            #expect(wrongToken.outcome == .lost)
            let b = try member("b")
            let notHolder = try await store.heartbeat(heartbeat(b, phase: .active, .renew(FencingToken(rawValue: 1))))
            #expect(notHolder.outcome == .lost)
            #expect(notHolder.view.leases.map(\.holder) == [a.id])
        },

        ConformanceCheck("release_freesTheSlotAtOnce") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            _ = try await store.heartbeat(heartbeat(a, .acquire))
            let released = try await store.heartbeat(heartbeat(a, phase: .stopping, .release(FencingToken(rawValue: 1))))
            #expect(released.outcome == .released)
            #expect(released.view.leases.isEmpty)
            let next = try await store.heartbeat(heartbeat(b, .acquire))
            #expect(next.outcome == .granted(FencingToken(rawValue: 2)))
        },

        ConformanceCheck("leave_releasesTheLeaseAndForgetsTheMember") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            _ = try await store.heartbeat(heartbeat(a, .acquire))
            _ = try await store.heartbeat(heartbeat(b, .none))
            let left = try await store.heartbeat(heartbeat(a, .leave(releasing: FencingToken(rawValue: 1))))
            #expect(left.outcome == .left)
            #expect(left.view.leases.isEmpty)
            #expect(left.view.members.map(\.info.id) == [b.id])
        },

        ConformanceCheck("memberID_aliveInAnotherIncarnation_isRejectedNamingHostAndPid") { context in
            let store = try await context.store()
            _ = try await store.heartbeat(heartbeat(member("a", incarnation: "first"), .none))
            let second = try member("a", incarnation: "second")
            await #expect(throws: HeartbeatRejection.memberIDInUse(second.id, host: "test-host", pid: 42)) {
                try await store.heartbeat(heartbeat(second, .none))
            }
            context.clock.advance(by: .seconds(3))
            let afterExpiry = try await store.heartbeat(heartbeat(second, .acquire))
            #expect(afterExpiry.outcome == .granted(FencingToken(rawValue: 1)))
        },

        ConformanceCheck("activeGoal_differentWhileOthersAreAlive_isRejected") { context in
            let store = try await context.store()
            _ = try await store.heartbeat(heartbeat(member("a"), goal: 1, .none))
            let b = try member("b")
            await #expect(throws: HeartbeatRejection.self) {
                try await store.heartbeat(heartbeat(b, goal: 2, .none))
            }
            context.clock.advance(by: .seconds(3))
            let reply = try await store.heartbeat(heartbeat(b, goal: 2, .acquire))
            #expect(reply.view.activeGoal == 2)
            #expect(reply.outcome == .granted(FencingToken(rawValue: 1)))
        },

        ConformanceCheck("members_silentForTheActivationInterval_areForgotten") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            _ = try await store.heartbeat(heartbeat(a, .none))
            context.clock.advance(by: .seconds(2))
            let view = try await store.heartbeat(heartbeat(b, .none)).view
            #expect(view.members.first { $0.info.id == a.id }?.heartbeatAge == .seconds(2))
            context.clock.advance(by: .seconds(1))
            let later = try await store.heartbeat(heartbeat(b, .none)).view
            #expect(later.members.map(\.info.id) == [b.id])
        },

        ConformanceCheck("tokens_increaseWithEveryGrantAcrossSlotsAndExpiry") { context in
            let store = try await context.store()
            var seen: [FencingToken] = []
            for round in 0..<4 {
                for index in 0..<3 {
                    let reply = try await store.heartbeat(heartbeat(member("m\(round)-\(index)"), goal: 3, .acquire))
                    guard case .granted(let token) = reply.outcome else {
                        Issue.record("round \(round) member \(index) was not granted: \(reply.outcome)")
                        return
                    }
                    seen.append(token)
                }
                context.clock.advance(by: .seconds(3))
            }
            #expect(seen.map(\.rawValue) == Array(1...12))
        },

        ConformanceCheck("joinOrder_isKeptWhileAliveAndRenewedOnRejoin") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            _ = try await store.heartbeat(heartbeat(a, .none))
            _ = try await store.heartbeat(heartbeat(b, .none))
            _ = try await store.heartbeat(heartbeat(a, .none))
            var view = try #require(try await store.group(named: GroupName("group")))
            let order = view.members.sorted { $0.joinSequence < $1.joinSequence }.map(\.info.id)
            #expect(order == [a.id, b.id])
            _ = try await store.heartbeat(heartbeat(a, .leave(releasing: nil)))
            _ = try await store.heartbeat(heartbeat(a, .none))
            view = try #require(try await store.group(named: GroupName("group")))
            #expect(view.members.sorted { $0.joinSequence < $1.joinSequence }.map(\.info.id) == [b.id, a.id])
        },

        ConformanceCheck("racingAcquires_grantEachSlotExactlyOnce") { context in
            let stores = try await context.stores(4)
            for round in 0..<5 {
                let grants = try await withThrowingTaskGroup(of: FencingToken?.self) { group in
                    for index in 0..<16 {
                        let store = stores[index % stores.count]
                        group.addTask {
                            let reply = try await store.heartbeat(heartbeat(member("r\(round)-\(index)"), goal: 2, .acquire))
                            if case .granted(let token) = reply.outcome { return token }
                            return nil
                        }
                    }
                    return try await group.reduce(into: [FencingToken]()) { if let token = $1 { $0.append(token) } }
                }
                #expect(grants.count == 2, "round \(round): \(grants)")
                #expect(Set(grants).count == grants.count)
                context.clock.advance(by: .seconds(3))
            }
        }
    ]
}

/// ``ChangeAnnouncing``: releases and joins reach the other handles of the store, and only for their group.
public enum ChangeAnnouncementConformance {
    public static let checks: [ConformanceCheck<any LeaseStore & ChangeAnnouncing>] = [
        ConformanceCheck("joinsAndReleases_areAnnouncedToOtherHandles_andOnlyToTheirGroup") { context in
            let stores = try await context.stores(2)
            let (holder, listener) = (stores[0], stores[1])
            var announced = try listener.changes(of: GroupName("announced")).makeAsyncIterator()
            let elsewhere = try listener.changes(of: GroupName("elsewhere"))
            var elsewhereChanges = elsewhere.makeAsyncIterator()
            let a = try member("a")
            _ = try await holder.heartbeat(heartbeat(a, group: "elsewhere", .acquire))
            #expect(await elsewhereChanges.next() != nil)  // a joined "elsewhere"
            _ = try await holder.heartbeat(heartbeat(a, group: "announced", .acquire))
            #expect(await announced.next() != nil)  // a joined "announced"
            // Renewing, and releasing a token that is not held, change nothing others must hear of at once.
            _ = try await holder.heartbeat(heartbeat(a, group: "elsewhere", .renew(FencingToken(rawValue: 1))))
            _ = try await holder.heartbeat(heartbeat(a, group: "elsewhere", .release(FencingToken(rawValue: 7))))
            _ = try await holder.heartbeat(heartbeat(a, group: "announced", .release(FencingToken(rawValue: 1))))
            #expect(await announced.next() != nil)  // a's slot is free
            // Announcements arrive in order, so anything more for "elsewhere" would be waiting by now.
            try await listener.close()
            var more = 0
            while await elsewhereChanges.next() != nil { more += 1 }
            #expect(more == 0)
        }
    ]
}

/// ``GroupDirectory``: one group by name, and the names page by page.
public enum GroupDirectoryConformance {
    public static let checks: [ConformanceCheck<any CoordinationStore>] = [
        ConformanceCheck("groups_listsEveryGroupByName") { context in
            let store = try await context.store()
            _ = try await store.heartbeat(heartbeat(member("a"), group: "zeta", .none))
            _ = try await store.heartbeat(heartbeat(member("a"), group: "alpha", goal: 2, .acquire))
            let groups = try await store.groups()
            #expect(groups.map(\.group.rawValue) == ["alpha", "zeta"])
            #expect(groups.map(\.activeGoal) == [2, 1])
        },

        ConformanceCheck("groupNames_comeInPages_inNameOrder_andGroupNamedReadsOne") { context in
            let store = try await context.store()
            let names = (0..<7).map { "g\($0)" }
            for name in names.shuffled() { _ = try await store.heartbeat(heartbeat(member("a"), group: name, .none)) }
            var pages: [[String]] = []
            var cursor: GroupName?
            while true {
                let page = try await store.groupNames(after: cursor, limit: 3)
                if page.isEmpty { break }
                pages.append(page.map(\.rawValue))
                cursor = page.last
            }
            #expect(pages == [["g0", "g1", "g2"], ["g3", "g4", "g5"], ["g6"]])
            #expect(try await store.allGroupNames(pageSize: 2).map(\.rawValue) == names)
            #expect(try await store.group(named: GroupName("g4"))?.group.rawValue == "g4")
            #expect(try await store.group(named: GroupName("absent")) == nil)
        }
    ]
}
