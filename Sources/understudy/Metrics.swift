import CoreMetrics
import Prometheus
import Understudy

/// Makes swift-metrics report to a new Prometheus registry, which `--http` serves at `/metrics`. Once per
/// process, before any ``Member`` is created (members make their metrics when created).
func bootstrapMetrics() -> PrometheusCollectorRegistry {
    let registry = PrometheusCollectorRegistry()
    var factory = PrometheusMetricsFactory(registry: registry)
    // Heartbeats take well under a millisecond on a local SQLite file and tens of milliseconds on a remote store.
    factory.durationHistogramBuckets[MemberMetricLabel.heartbeatRoundTrip] = [
        .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1),
    ]
    MetricsSystem.bootstrap(factory)
    return registry
}
