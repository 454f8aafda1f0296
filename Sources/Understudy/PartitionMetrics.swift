import CoreMetrics
import UnderstudyCore

/// The metrics of a ``PartitionedMember``, with the dimensions `group` and `member`.
///
/// | label | type | meaning |
/// |---|---|---|
/// | `understudy_partitions_owned` | gauge | partitions this member acts on |
/// | `understudy_transitions_total` | counter, dimension `reason` | assignments (`elected`) and revocations (by ``DeactivationReason``) |
/// | `understudy_heartbeat_round_trip_seconds` | timer | from sending a heartbeat to the store's reply |
/// | `understudy_store_errors_total` | counter | heartbeats that failed for want of a store |
struct PartitionMetrics: Sendable {
    static let ownedLabel = "understudy_partitions_owned"

    let owned: Gauge
    let heartbeatRoundTrip: Timer
    let storeErrors: Counter
    private let counters: [String: Counter]

    init(group: GroupName, member: MemberID) {
        let dimensions = [("group", group.rawValue), ("member", member.rawValue)]
        owned = Gauge(label: Self.ownedLabel, dimensions: dimensions)
        heartbeatRoundTrip = Timer(label: MemberMetricLabel.heartbeatRoundTrip, dimensions: dimensions)
        storeErrors = Counter(label: MemberMetricLabel.storeErrors, dimensions: dimensions)
        let reasons = [MemberMetricLabel.elected] + DeactivationReason.allCases.map(\.rawValue)
        counters = Dictionary(uniqueKeysWithValues: reasons.map { reason in
            (reason, Counter(label: MemberMetricLabel.transitions, dimensions: dimensions + [("reason", reason)]))
        })
        owned.record(0)
    }

    func transitions(_ reason: String) -> Counter {
        counters[reason] ?? Counter(label: MemberMetricLabel.transitions, dimensions: [("reason", reason)])
    }
}
