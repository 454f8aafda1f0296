import Foundation

/// Prints one `key=value …` line at once (unbuffered), so a parent process reads it.
public func report(_ fields: KeyValuePairs<String, String>) {
    FileHandle.standardOutput.write(Data((fields.map { "\($0.key)=\($0.value)" }.joined(separator: " ") + "\n").utf8))
}

/// `url` with its `schema` query item set to `schema`.
public func schemaURL(_ url: String, _ schema: String) -> String {
    guard var components = URLComponents(string: url) else { return url }
    components.queryItems = (components.queryItems ?? []).filter { $0.name != "schema" } + [URLQueryItem(name: "schema", value: schema)]
    return components.string ?? url
}

/// Runs `handler` on each of `signals`, which no longer end the process; returns the sources, to keep.
@discardableResult
public func onSignals(_ signals: [Int32], _ handler: @escaping @Sendable () -> Void) -> [any DispatchSourceSignal] {
    signals.map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number)
        source.setEventHandler(handler: handler)
        source.resume()
        return source
    }
}
