import Testing
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudyStore
import UnderstudyStoreConformance

/// The store clock of a group whose every member restarted within T: only heartbeats the store refuses (an older
/// incarnation's row still holds each id) reach it, and they must still measure time.
@Suite("PostgreSQL store clock while members wait for their ids", .serialized, .timeLimit(.minutes(1)))
struct PostgresStoreClockRestartTests {
    @Test func everyMemberRestartedWithinT_theOldRowsExpireAfterT() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        _ = try await store.heartbeat(sent(heartbeat(member("a"), .acquire), at: 10))
        _ = try await store.heartbeat(sent(heartbeat(member("b"), .none), at: 10))
        // Both processes die and restart at once; each retries once a second by its own clock.
        let a = try member("a", incarnation: "a-2"), b = try member("b", incarnation: "b-2")
        var joinedAfter: Int?
        for second in 1...8 {
            try await TestPostgres.stepWallClock(url, by: .seconds(1))
            do {
                _ = try await store.heartbeat(sent(heartbeat(a, .acquire), at: 20 + second))
                joinedAfter = second
                break
            } catch HeartbeatRejection.memberIDInUse {}
            do {
                _ = try await store.heartbeat(sent(heartbeat(b, .none), at: 30 + second))
            } catch HeartbeatRejection.memberIDInUse {}
        }
        // T = 3 s: the old row ends after 3 s of the retries' time (4: the first refusal is no evidence). A store
        // clock moved by the slack alone (25 ms a heartbeat) would refuse them for a minute.
        #expect(joinedAfter.map { (3...4).contains($0) } == true, "joined after \(String(describing: joinedAfter)) s")
        try await store.close()
    }
}

/// `heartbeat` as sent at `seconds` on the member's own clock.
private func sent(_ heartbeat: Heartbeat, at seconds: Int) -> Heartbeat {
    var heartbeat = heartbeat
    heartbeat.sentAt = Instant(nanoseconds: Int64(seconds) * 1_000_000_000)
    return heartbeat
}
