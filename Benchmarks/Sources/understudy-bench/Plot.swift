import Foundation

/// A failover report drawn as SVG: one strip of dots per system and scenario, every sample, on one log-scale time
/// axis (proof-of-death crash failover and lease expiry differ a hundredfold), with p50, p99 and the target marked.
struct FailoverPlot {
    var report: FailoverReport

    private let width = 1000.0
    private let plotLeft = 300.0
    private let plotRight = 800.0
    private let rowHeight = 30.0
    private let top = 78.0

    private static let headings = [
        "crash": "kill -9 of the active supervisor",
        "graceful": "SIGTERM to the active supervisor",
        "preemption": "a member of higher weight joins",
        "freeze": "SIGSTOP of supervisor and watchdog (etcd: etcdctl's group), a stand-in for a lost host",
    ]

    /// Decades around every sample.
    private var range: (low: Double, high: Double) {
        let samples = report.results.flatMap(\.samplesMilliseconds).filter { $0 > 0 }
        guard let low = samples.min(), let high = samples.max() else { return (1, 10_000) }
        return (pow(10, floor(log10(low))), pow(10, ceil(log10(high))))
    }

    private func x(_ milliseconds: Double) -> Double {
        let (low, high) = range
        let clamped = min(max(milliseconds, low), high)
        return plotLeft + (log10(clamped) - log10(low)) / (log10(high) - log10(low)) * (plotRight - plotLeft)
    }

    private static func color(_ system: String) -> String {
        if system.hasPrefix("etcd") { return "#d95f02" }
        return system.contains("PostgreSQL") ? "#7b3294" : "#1f78b4"
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }

    private static func label(_ milliseconds: Double) -> String {
        milliseconds < 1000 ? String(format: "%g ms", milliseconds) : String(format: "%g s", milliseconds / 1000)
    }

    var svg: String {
        let scenarios = ["crash", "graceful", "preemption", "freeze"].filter { scenario in report.results.contains { $0.scenario == scenario } }
        var body: [String] = []
        var y = top
        for scenario in scenarios {
            y += 22
            body.append(##"<text x="12" y="\##(y)" font-weight="bold">\##(Self.escape(Self.headings[scenario] ?? scenario))</text>"##)
            y += 8
            for result in report.results where result.scenario == scenario {
                y += rowHeight
                body.append(row(result, centre: y - rowHeight / 2))
            }
        }
        let bottom = y + 8
        let (low, high) = range
        var ticks: [String] = []
        var decade = low
        while decade <= high {
            for step in [1.0, 2, 5] where decade * step <= high {
                let at = x(decade * step)
                let major = step == 1
                ticks.append(##"<line x1="\##(at)" y1="\##(top)" x2="\##(at)" y2="\##(bottom)" stroke="#\##(major ? "bbb" : "e4e4e4")"/>"##)
                let text = major ? Self.label(decade * step) : String(format: "%g", decade * step < 1000 ? decade * step : decade * step / 1000)
                ticks.append(##"<text x="\##(at)" y="\##(bottom + 16)" text-anchor="middle" fill="#444">\##(text)</text>"##)
            }
            decade *= 10
        }
        let lease = x(report.activationMilliseconds)
        let height = bottom + 70
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="13">
            <rect width="100%" height="100%" fill="white"/>
            <text x="12" y="24" font-size="17" font-weight="bold">Failover: fault → the next member's command running (every sample, log scale)</text>
            <text x="12" y="46" fill="#444">I = \(Self.label(report.heartbeatMilliseconds)), T = \(Self.label(report.activationMilliseconds)), \(report.members) members, \(report.rounds) rounds per row; ● sample, │ p50, ┃ p99 (red when its target is missed), ┆ target</text>
            <text x="\(plotRight + 12)" y="\(top)" fill="#444">p50 / p99</text>
            \(ticks.joined(separator: "\n"))
            <line x1="\(lease)" y1="\(top)" x2="\(lease)" y2="\(bottom)" stroke="#888" stroke-dasharray="6 3"/>
            <text x="\(lease)" y="\(top - 4)" text-anchor="middle" fill="#444">T (lease)</text>
            \(body.joined(separator: "\n"))
            <text x="\((plotLeft + plotRight) / 2)" y="\(bottom + 36)" text-anchor="middle" fill="#444">from the fault to the next command's own start stamp (CLOCK_BOOTTIME)</text>
            <text x="12" y="\(bottom + 58)" fill="#666" font-size="11">\(Self.escape(report.machine.summary)); nearest-rank percentiles; understudy-bench failover</text>
            </svg>

            """
    }

    private func row(_ result: ScenarioResult, centre: Double) -> String {
        let color = Self.color(result.system)
        var parts = [##"<text x="12" y="\##(centre + 4)">\##(Self.escape(result.system))</text>"##]
        for (index, sample) in result.samplesMilliseconds.enumerated() {
            // A fixed jitter, so that equal samples stay visible and the drawing is the same every time.
            let jitter = Double((index * 7) % 11 - 5) * 1.6
            parts.append(##"<circle cx="\##(x(sample))" cy="\##(centre + jitter)" r="3.2" fill="\##(color)" fill-opacity="0.45"/>"##)
        }
        if let target = result.targetMilliseconds {
            parts.append(##"<line x1="\##(x(target))" y1="\##(centre - 13)" x2="\##(x(target))" y2="\##(centre + 13)" stroke="#c00" stroke-dasharray="3 2"><title>target: p99 \##(Self.escape(result.target ?? ""))</title></line>"##)
        }
        guard let d = result.distribution else {
            parts.append(##"<text x="\##(plotRight + 12)" y="\##(centre + 4)">no samples (\##(result.timeouts) timeouts)</text>"##)
            return parts.joined(separator: "\n")
        }
        let missed = result.targetMilliseconds.map { d.p99 > $0 } ?? false
        parts.append(##"<line x1="\##(x(d.p50))" y1="\##(centre - 9)" x2="\##(x(d.p50))" y2="\##(centre + 9)" stroke="black" stroke-width="1.5"/>"##)
        parts.append(##"<line x1="\##(x(d.p99))" y1="\##(centre - 11)" x2="\##(x(d.p99))" y2="\##(centre + 11)" stroke="\##(missed ? "#c00" : "black")" stroke-width="3"/>"##)
        parts.append(##"<text x="\##(plotRight + 12)" y="\##(centre + 4)">\##(format(d.p50)) / <tspan fill="\##(missed ? "#c00" : "black")">\##(format(d.p99)) ms</tspan></text>"##)
        return parts.joined(separator: "\n")
    }
}
