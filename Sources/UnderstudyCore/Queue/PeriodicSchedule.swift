/// When a periodic job falls due, on the wall clock (UTC): every fixed interval from the Unix epoch, or at the
/// minutes a five-field cron expression names.
///
/// Ticks are wall-clock instants so that every worker of a queue computes the same ones, whoever is the singleton
/// that enqueues them; each tick's job carries an idempotency key made of the schedule's name and the tick, so a
/// tick is enqueued once even if two enqueuers ever overlap.
public enum PeriodicSchedule: Hashable, Sendable, CustomStringConvertible {
    /// Every `interval` (at least one second), at the multiples of it since 1970-01-01 UTC.
    case every(Duration)
    /// A cron expression: minute, hour, day of month, month, day of week (0 or 7 is Sunday), each `*`, a number, a
    /// range `a-b`, a list `a,b`, and a step `*/n` or `a-b/n`. As in cron, when both day fields are restricted a
    /// day matches either.
    case cron(CronExpression)

    /// Parses `@every 30s` or a cron expression.
    public init(parsing text: String) throws(JobError) {
        let trimmed = text.trimmingSpaces
        if trimmed.hasPrefix("@every ") {
            let interval: Duration
            do { interval = try parseDuration(String(trimmed.dropFirst(7))) } catch { throw .invalidSchedule(text, "\(error)") }
            guard interval >= .seconds(1) else { throw .invalidSchedule(text, "the interval must be at least 1s") }
            self = .every(interval)
        } else {
            self = .cron(try CronExpression(text))
        }
    }

    /// The first tick strictly after `wallSeconds` (seconds since 1970, UTC); `nil` if there is none (a cron
    /// expression that never matches, such as February 30).
    public func tick(after wallSeconds: Int64) -> Int64? {
        switch self {
        case .every(let interval):
            let step = max(1, interval.components.seconds)
            return (wallSeconds / step + 1) * step
        case .cron(let expression):
            return expression.minute(after: wallSeconds)
        }
    }

    public var description: String {
        switch self {
        case .every(let interval): "@every \(interval.formatted)"
        case .cron(let expression): expression.text
        }
    }
}

/// A five-field cron expression, matched in UTC.
public struct CronExpression: Hashable, Sendable {
    public let text: String
    private let minutes: Set<Int>, hours: Set<Int>, days: Set<Int>, months: Set<Int>, weekdays: Set<Int>
    private let daysRestricted: Bool, weekdaysRestricted: Bool

    public init(_ text: String) throws(JobError) {
        let fields = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard fields.count == 5 else { throw .invalidSchedule(text, "a cron expression has 5 fields: minute hour day month weekday") }
        func parse(_ field: String, _ range: ClosedRange<Int>, _ name: String) throws(JobError) -> Set<Int> {
            var values: Set<Int> = []
            for part in field.split(separator: ",", omittingEmptySubsequences: false) {
                let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
                guard (1...2).contains(pieces.count) else { throw .invalidSchedule(text, "bad \(name) field \"\(field)\"") }
                let step = pieces.count == 2 ? Int(pieces[1]) : 1
                guard let step, step >= 1 else { throw .invalidSchedule(text, "bad step in the \(name) field \"\(field)\"") }
                let span: ClosedRange<Int>
                if pieces[0] == "*" {
                    span = range
                } else if let dash = pieces[0].firstIndex(of: "-") {
                    guard let low = Int(pieces[0][..<dash]), let high = Int(pieces[0][pieces[0].index(after: dash)...]), low <= high
                    else { throw .invalidSchedule(text, "bad range in the \(name) field \"\(field)\"") }
                    span = low...high
                } else if let value = Int(pieces[0]) {
                    span = value...(pieces.count == 2 ? range.upperBound : value)
                } else {
                    throw .invalidSchedule(text, "bad \(name) field \"\(field)\"")
                }
                guard range.contains(span.lowerBound), range.contains(span.upperBound) else {
                    throw .invalidSchedule(text, "the \(name) field \"\(field)\" is outside \(range.lowerBound)-\(range.upperBound)")
                }
                values.formUnion(stride(from: span.lowerBound, through: span.upperBound, by: step))
            }
            return values
        }
        self.text = text
        minutes = try parse(fields[0], 0...59, "minute")
        hours = try parse(fields[1], 0...23, "hour")
        days = try parse(fields[2], 1...31, "day")
        months = try parse(fields[3], 1...12, "month")
        weekdays = Set(try parse(fields[4], 0...7, "weekday").map { $0 % 7 })
        daysRestricted = fields[2] != "*"
        weekdaysRestricted = fields[4] != "*"
    }

    /// Whether the minute starting at `wallSeconds` (a multiple of 60) matches.
    func matches(_ wallSeconds: Int64) -> Bool {
        let date = CivilDate(wallSeconds)
        return minutes.contains(date.minute) && hours.contains(date.hour) && months.contains(date.month) && matchesDay(date)
    }

    /// The first matching minute strictly after `wallSeconds`, searched up to five years ahead.
    func minute(after wallSeconds: Int64) -> Int64? {
        var candidate = (wallSeconds / 60 + 1) * 60
        let limit = candidate + 5 * 366 * 86_400
        while candidate < limit {
            let date = CivilDate(candidate)
            if !months.contains(date.month) || !matchesDay(date) {
                candidate = (candidate / 86_400 + 1) * 86_400
            } else if !hours.contains(date.hour) {
                candidate = (candidate / 3_600 + 1) * 3_600
            } else if !minutes.contains(date.minute) {
                candidate += 60
            } else {
                return candidate
            }
        }
        return nil
    }

    private func matchesDay(_ date: CivilDate) -> Bool {
        let day = days.contains(date.day), weekday = weekdays.contains(date.weekday)
        switch (daysRestricted, weekdaysRestricted) {
        case (true, true): return day || weekday
        case (true, false): return day
        case (false, true): return weekday
        case (false, false): return true
        }
    }
}

/// A UTC calendar date and time of day, from seconds since 1970 (Howard Hinnant's days-from-civil, inverted).
struct CivilDate {
    let month: Int, day: Int, hour: Int, minute: Int, weekday: Int

    init(_ wallSeconds: Int64) {
        let days = wallSeconds >= 0 ? wallSeconds / 86_400 : (wallSeconds - 86_399) / 86_400
        let seconds = Int(wallSeconds - days * 86_400)
        hour = seconds / 3_600
        minute = seconds % 3_600 / 60
        weekday = Int((days % 7 + 11) % 7)  // 1970-01-01 was a Thursday (4)
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        day = Int(dayOfYear - (153 * shiftedMonth + 2) / 5 + 1)
        month = Int(shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9)
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
