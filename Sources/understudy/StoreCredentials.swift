import Foundation
import UnderstudyPostgres

/// The PostgreSQL password, found as libpq finds it, and kept away from COMMAND, hooks and `ps`.
///
/// Order: the URL's own password; `--password-file` (its first line); `PGPASSWORD`; a password file in the
/// `~/.pgpass` format (`host:port:database:user:password`, `*` matches anything, `\:` and `\\` escape), named
/// by the URL's `passfile=` parameter, else `PGPASSFILE`, else `~/.pgpass`, ignored (with a warning) when its
/// group or others can read it, as libpq does.
extension StoreLocation {
    /// This location with the password filled in from the places above, if the URL has none.
    ///
    /// - Throws: ``CLIError`` with ``ExitStatus/passwordFileUnreadable`` when `passwordFile` cannot be read, and
    ///   ``ExitStatus/invalidConfiguration`` when it is given for a store that is not PostgreSQL.
    func resolvingPassword(passwordFile: String?, environment: [String: String]) throws(CLIError) -> StoreLocation {
        guard case .postgres(let location, let url) = self else {
            if let passwordFile {
                throw CLIError(.invalidConfiguration, "--password-file \(passwordFile): only a PostgreSQL store takes a password")
            }
            return self
        }
        guard location.password == nil, var components = URLComponents(string: url) else { return self }
        let password: String?
        if let passwordFile {
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                throw CLIError(.passwordFileUnreadable, "cannot read the password file \(passwordFile): \(String(cString: strerror(errno)))")
            }
            password = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
        } else if let value = environment["PGPASSWORD"], !value.isEmpty {
            password = value
        } else {
            let query = components.queryItems ?? []
            let home = environment["HOME"] ?? NSHomeDirectory()
            let file = query.first { $0.name == "passfile" }?.value ?? environment["PGPASSFILE"] ?? home + "/.pgpass"
            password = Self.lookUp(inPassFile: file, location: location)
        }
        guard let password else { return self }
        components.percentEncodedPassword = password.addingPercentEncoding(withAllowedCharacters: .urlPasswordAllowed.subtracting(CharacterSet(charactersIn: "@:/?#[]%")))
        guard let resolved = components.string, let parsed = try? PostgresLocation(resolved) else { return self }
        return .postgres(parsed, url: resolved)
    }

    /// The URL `understudy __release-slot` opens again, with the password.
    var urlWithCredentials: String {
        switch self {
        case .sqlite(let path): "sqlite://\(path)"
        case .postgres(_, let url): url
        }
    }

    /// The password of the first line of a `~/.pgpass`-format file that matches `location`; `nil` when the file
    /// is missing, matches nothing, or is readable by group or others.
    static func lookUp(inPassFile path: String, location: PostgresLocation) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        if info.st_mode & 0o077 != 0 {
            printError("understudy: warning: password file \(path) has group or world access and is ignored; permissions should be u=rw (0600) or less")
            return nil
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let wanted = [location.host, String(location.port), location.database ?? location.user, location.user]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = passFileFields(String(line))
            guard fields.count == 5 else { continue }
            if zip(fields.prefix(4), wanted).allSatisfy({ $0 == "*" || $0 == $1 }) { return fields[4] }
        }
        return nil
    }

    /// Splits a password-file line at unescaped colons, resolving `\:` and `\\`.
    static func passFileFields(_ line: String) -> [String] {
        var fields = [""]
        var escaped = false
        for character in line {
            if escaped {
                fields[fields.count - 1].append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == ":", fields.count < 5 {
                fields.append("")
            } else {
                fields[fields.count - 1].append(character)
            }
        }
        return fields
    }

    /// `environment` without the store's credentials, for COMMAND and hooks: `UNDERSTUDY_STORE` when it holds a
    /// password, `PGPASSWORD` when the store is PostgreSQL (the supervisor may have used it), and any variable
    /// whose value contains the store's password (a `DATABASE_URL`, say).
    func strippingCredentials(from environment: [String: String]) -> [String: String] {
        var environment = environment
        if case .postgres(let location, _) = self, let password = location.password, !password.isEmpty {
            let encoded = password.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? password
            environment = environment.filter { !$0.value.contains(password) && !$0.value.contains(encoded) }
        }
        if let store = environment["UNDERSTUDY_STORE"], URLComponents(string: store)?.password != nil || store.contains("password=") {
            environment["UNDERSTUDY_STORE"] = nil
        }
        if case .postgres = self { environment["PGPASSWORD"] = nil }
        return environment
    }
}

/// Overwrites, in this process's own argument memory (what `ps` and /proc/PID/cmdline show), the password of
/// any URL argument with `*`. A `ps` in the first moments of the process can still see it: prefer
/// `--password-file`, `PGPASSWORD` or a pgpass file.
func hidePasswordsInArguments() {
    for index in 0..<Int(CommandLine.argc) {
        guard let argument = CommandLine.unsafeArgv[index] else { continue }
        let text = String(cString: argument)
        guard let scheme = text.range(of: "://"), let at = text.lastIndex(of: "@"), scheme.upperBound < at,
              let colon = text[scheme.upperBound..<at].firstIndex(of: ":")
        else { continue }
        let start = text.utf8.distance(from: text.startIndex, to: text.index(after: colon))
        let end = text.utf8.distance(from: text.startIndex, to: at)
        for offset in start..<end { argument[offset] = CChar(UInt8(ascii: "*")) }
    }
}
