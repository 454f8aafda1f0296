import CoreMetrics
import UnderstudyCore

/// The metrics a ``Member`` reports through swift-metrics, each with the dimensions `group` and `member`.
///
/// They go to whatever backend the process bootstraps with `MetricsSystem.bootstrap(_:)`, which MUST happen
/// before the member is created (metrics made earlier stay no-ops); without a backend they cost next to nothing.
///
/// | label | type | meaning |
/// |---|---|---|
/// | `understudy_active` | gauge | 1 while this member is active, else 0 |
/// | `understudy_fencing_token` | gauge | the token of the current activation, 0 when not active |
/// | `understudy_transitions_total` | counter, dimension `reason` | activations (`elected`) and deactivations (by ``DeactivationReason``) |
/// | `understudy_heartbeat_round_trip_seconds` | timer | from sending a heartbeat to the store's reply |
/// | `understudy_store_errors_total` | counter | heartbeats that failed for want of a store (not refusals) |
public enum MemberMetricLabel {
    public static let active = "understudy_active"
    public static let fencingToken = "understudy_fencing_token"
    public static let transitions = "understudy_transitions_total"
    public static let heartbeatRoundTrip = "understudy_heartbeat_round_trip_seconds"
    public static let storeErrors = "understudy_store_errors_total"
    /// The `reason` of an activation in ``transitions``; deactivations use ``DeactivationReason/rawValue``.
    public static let elected = "elected"
}

/// The metric handles of one member, made once so that every series exists (at 0) from the start.
struct MemberMetrics: Sendable {
    private let active: Gauge
    private let fencingToken: Gauge
    private let transitions: [String: Counter]
    let heartbeatRoundTrip: Timer
    private let storeErrors: Counter

    init(group: GroupName, member: MemberID) {
        let dimensions = [("group", group.rawValue), ("member", member.rawValue)]
        active = Gauge(label: MemberMetricLabel.active, dimensions: dimensions)
        fencingToken = Gauge(label: MemberMetricLabel.fencingToken, dimensions: dimensions)
        let reasons = [MemberMetricLabel.elected] + DeactivationReason.allCases.map(\.rawValue)
        transitions = Dictionary(uniqueKeysWithValues: reasons.map { reason in
            (reason, Counter(label: MemberMetricLabel.transitions, dimensions: dimensions + [("reason", reason)]))
        })
        heartbeatRoundTrip = Timer(label: MemberMetricLabel.heartbeatRoundTrip, dimensions: dimensions)
        storeErrors = Counter(label: MemberMetricLabel.storeErrors, dimensions: dimensions)
        active.record(0)
        fencingToken.record(0)
    }

    func activated(_ token: FencingToken) {
        transitions[MemberMetricLabel.elected]?.increment()
        fencingToken.record(Double(token.rawValue))
        active.record(1)
    }

    func deactivated(_ reason: DeactivationReason) {
        transitions[reason.rawValue]?.increment()
        active.record(0)
        fencingToken.record(0)
    }

    func storeFailed() {
        storeErrors.increment()
    }
}
