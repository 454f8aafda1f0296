/// Why a command-line duration could not be read.
public struct DurationParsingError: Error, CustomStringConvertible {
    public var text: String
    public var reason: String

    public var description: String {
        "invalid duration \"\(text)\": \(reason); write a number and a unit, such as 100ms, 1s or 1.5s (units: ns, us, ms, s, m, h)"
    }
}

/// Reads a duration written as a decimal number and a unit: `100ms`, `1s`, `1.5s`, `250us`, `2m`.
///
/// Accepts `ns`, `us` (or `µs`), `ms`, `s`, `m` and `h`, with at most nine decimals. Throws
/// ``DurationParsingError`` for a missing or unknown unit (`100`, `1x`), a sign (`-1s`, `+1s`), a malformed number
/// or a value beyond about 292 years.
public func parseDuration(_ text: String) throws(DurationParsingError) -> Duration {
    let trimmed = text.trimmingWhitespace
    let numberEnd = trimmed.firstIndex { !$0.isASCII || !($0.isNumber || $0 == ".") } ?? trimmed.endIndex
    let number = trimmed[..<numberEnd]
    let unit = trimmed[numberEnd...]
    if trimmed.hasPrefix("-") { throw DurationParsingError(text: text, reason: "it must not be negative") }
    guard !number.isEmpty else { throw DurationParsingError(text: text, reason: "it does not start with a number") }
    guard !unit.isEmpty else { throw DurationParsingError(text: text, reason: "it has no unit") }
    let nanosecondsPerUnit: [Substring: Int64] = [
        "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
    ]
    guard let scale = nanosecondsPerUnit[unit] else {
        throw DurationParsingError(text: text, reason: "unknown unit \"\(unit)\"")
    }
    let parts = number.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count <= 2, !parts[0].isEmpty, parts.count == 1 || !parts[1].isEmpty, parts.count == 1 || parts[1].count <= 9,
        let whole = Int64(parts[0])
    else {
        throw DurationParsingError(text: text, reason: "\"\(number)\" is not a number with at most nine decimals")
    }
    let fractionDigits = parts.count == 2 ? parts[1] : ""
    let fraction = Int64(fractionDigits + String(repeating: "0", count: 9 - fractionDigits.count))!
    let (wholeNanoseconds, overflow) = whole.multipliedReportingOverflow(by: scale)
    let fractionNanoseconds = scale >= 1_000_000_000 ? fraction * (scale / 1_000_000_000) : fraction * scale / 1_000_000_000
    let (total, overflow2) = wholeNanoseconds.addingReportingOverflow(fractionNanoseconds)
    guard !overflow, !overflow2 else { throw DurationParsingError(text: text, reason: "it is too long") }
    return .nanoseconds(total)
}

extension StringProtocol {
    fileprivate var trimmingWhitespace: Substring {
        let characters = Substring(self)
        let start = characters.firstIndex { !$0.isWhitespace } ?? characters.endIndex
        let end = characters.lastIndex { !$0.isWhitespace }.map(characters.index(after:)) ?? start
        return characters[start..<end]
    }
}
