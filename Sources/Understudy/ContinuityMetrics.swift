import CoreMetrics
import UnderstudyCore

/// The metrics a ``ContinuityPublisher`` reports through swift-metrics, each with the dimensions `group` and
/// `member` (bootstrap the backend before creating the publisher, as for ``MemberMetricLabel``).
///
/// | label | type | meaning |
/// |---|---|---|
/// | `understudy_continuity_published_total` | counter | messages the sink accepted from this member |
/// | `understudy_continuity_resent_total` | counter | messages re-sent after activations (the unconfirmed windows) |
/// | `understudy_continuity_gap_messages_total` | counter | messages lost and published as gaps |
/// | `understudy_continuity_fenced_total` | counter | times the sink or the checkpoint refused this member's token |
/// | `understudy_continuity_backlog` | gauge | unconfirmed messages this member keeps |
public enum ContinuityMetricLabel {
    public static let published = "understudy_continuity_published_total"
    public static let resent = "understudy_continuity_resent_total"
    public static let gapMessages = "understudy_continuity_gap_messages_total"
    public static let fenced = "understudy_continuity_fenced_total"
    public static let backlog = "understudy_continuity_backlog"
}

struct ContinuityMetrics: Sendable {
    let published: Counter
    let resent: Counter
    let gapMessages: Counter
    let fenced: Counter
    let backlog: Gauge

    init(group: GroupName, member: MemberID) {
        let dimensions = [("group", group.rawValue), ("member", member.rawValue)]
        published = Counter(label: ContinuityMetricLabel.published, dimensions: dimensions)
        resent = Counter(label: ContinuityMetricLabel.resent, dimensions: dimensions)
        gapMessages = Counter(label: ContinuityMetricLabel.gapMessages, dimensions: dimensions)
        fenced = Counter(label: ContinuityMetricLabel.fenced, dimensions: dimensions)
        backlog = Gauge(label: ContinuityMetricLabel.backlog, dimensions: dimensions)
        backlog.record(0)
    }
}
