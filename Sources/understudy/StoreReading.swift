import ArgumentParser
import Foundation
import Understudy
import UnderstudyCore
import UnderstudyStore

/// The options `status` and `watch` share: the store to read, and optionally one group of it. Every failure is
/// ``ExitStatus/statusError``.
struct StoreReading: ParsableArguments {
    @Option(help: "Only this group.")
    var group: String?

    @Option(help: "sqlite:///path/to.db, a bare path, or postgres://user:password@host:5432/db (default: $UNDERSTUDY_STORE, else /var/lib/understudy/understudy.db, one for every user of the host).")
    var store: String?

    @Option(name: .customLong("password-file"), help: ArgumentHelp("A file whose first line is the PostgreSQL password (else the URL's, PGPASSWORD, or a pgpass file).", valueName: "path"))
    var passwordFile: String?

    /// The store, opened for reading, and the group asked for.
    func open() async throws(CLIError) -> (location: StoreLocation, store: any CoordinationStore, group: GroupName?) {
        hidePasswordsInArguments()
        let location: StoreLocation
        do {
            location = try StoreLocation.parse(store).resolvingPassword(passwordFile: passwordFile, environment: ProcessInfo.processInfo.environment)
        } catch {
            throw CLIError(error.status == .passwordFileUnreadable ? error.status : .statusError, error.message)
        }
        let opened = try await location.openForReading()
        let name: GroupName?
        do {
            name = try group.map { text throws(ConfigurationError) in try GroupName(text) }
        } catch {
            try? await opened.close()
            throw CLIError(.statusError, error.description)
        }
        return (location, opened, name)
    }

    /// The groups as `store` sees them now, each read by itself, and those whose rows cannot be read (a corrupt
    /// row fails its own group only); only `group` when one is given.
    static func groups(
        of store: any CoordinationStore,
        at location: StoreLocation,
        only group: GroupName?
    ) async throws(CLIError) -> (views: [GroupView], unreadable: [(group: GroupName, error: String)]) {
        let names: [GroupName]
        do {
            if let group { names = [group] } else { names = try await store.allGroupNames() }
        } catch {
            throw CLIError(.statusError, "cannot read the store \(location): \(error)")
        }
        var views: [GroupView] = []
        var unreadable: [(group: GroupName, error: String)] = []
        for name in names {
            do {
                if let view = try await store.group(named: name) { views.append(view) }
            } catch let error as StoreError where error.kind == .corrupt {
                unreadable.append((name, error.message))
            } catch {
                throw CLIError(.statusError, "cannot read the store \(location): \(error)")
            }
        }
        return (views, unreadable)
    }
}
