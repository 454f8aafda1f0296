import CoreMetrics
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Understudy
import UnderstudyCore

/// The address of `understudy run --http HOST:PORT`.
public struct HTTPAddress: Sendable, Hashable, CustomStringConvertible {
    /// A host name or IPv4 address, or an IPv6 address without its brackets.
    public var host: String
    /// 0...65535; 0 lets the system pick a free port.
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `HOST:PORT` or `[IPv6]:PORT`; anything else is a ``SupervisorError/Kind/invalidHTTPAddress`` error.
    public static func parse(_ text: String) throws(SupervisorError) -> HTTPAddress {
        let invalid = SupervisorError(
            .invalidHTTPAddress,
            "invalid --http \"\(text)\": expected HOST:PORT such as 127.0.0.1:9090 or [::1]:9090 (port 0...65535, 0 for any free port)"
        )
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { throw invalid }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
            guard host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { throw invalid }
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw invalid }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_") }) else {
                throw invalid
            }
        }
        guard !host.isEmpty, (1...5).contains(port.count), port.allSatisfy({ $0.isASCII && $0.isNumber }),
              let number = Int(port), number <= 65_535
        else { throw invalid }
        return HTTPAddress(host: String(host), port: number)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The HTTP endpoint of `understudy run --http`: health, activity, status and Prometheus metrics of one member.
///
/// - `GET /healthz`: 200 while the member takes part in its group;
/// - `GET /active`: 200 while the member is active, 503 otherwise, for load balancer health checks;
/// - `GET /status`: the member's state and its group as `understudy status --json` shows it;
/// - `GET /metrics`: every swift-metrics metric of the process, in the Prometheus text format.
public final class HTTPEndpoint: Sendable {
    /// The address the server listens on, with the port the system picked when asked for port 0.
    public let boundAddress: String
    private let services: ServiceGroup
    private let server: Task<Void, Never>

    private init(boundAddress: String, services: ServiceGroup, server: Task<Void, Never>) {
        self.boundAddress = boundAddress
        self.services = services
        self.server = server
    }

    /// Starts listening on `address` and returns once the server accepts connections.
    ///
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Kind/httpUnavailable`` when the address cannot be listened on (the
    ///   port is in use, the host is not local or unknown, the port needs privileges).
    public static func start(
        on address: HTTPAddress,
        member: Member,
        containment: Containment,
        registry: PrometheusCollectorRegistry,
        logger: Logger
    ) async throws(SupervisorError) -> HTTPEndpoint {
        try await start(on: address, router: router(member: member, containment: containment, registry: registry), logger: logger)
    }

    /// Serves `router` (for instance the routes of many members, see ``addRoutes(for:containment:to:)``) on
    /// `address`, and returns once the server accepts connections.
    ///
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Kind/httpUnavailable`` when the address cannot be
    ///   listened on.
    public static func start(
        on address: HTTPAddress,
        router: Router<BasicRequestContext>,
        logger: Logger
    ) async throws(SupervisorError) -> HTTPEndpoint {
        do {
            return try await serve(.hostname(address.host, port: address.port), router: router, logger: logger)
        } catch {
            throw listenError(error, address: address)
        }
    }

    /// Serves `router` on a Unix domain socket at `path`, which MUST NOT exist, and returns once the server
    /// accepts connections. The socket's mode is left to the caller (bind it in a private directory).
    ///
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Kind/httpUnavailable`` when it cannot be bound.
    public static func start(unixSocket path: String, router: Router<BasicRequestContext>, logger: Logger) async throws(SupervisorError) -> HTTPEndpoint {
        do {
            return try await serve(.unixDomainSocket(path: path), router: router, logger: logger)
        } catch {
            throw SupervisorError(.httpUnavailable, "\(path): cannot listen: \(error)")
        }
    }

    private static func serve(_ bind: BindAddress, router: Router<BasicRequestContext>, logger: Logger) async throws -> HTTPEndpoint {
        var serverLogger = logger
        serverLogger.logLevel = .warning
        let (started, reportStart) = AsyncStream<Result<String, any Error>>.makeStream()
        let application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: bind),
            onServerRunning: { channel in
                reportStart.yield(.success(describe(channel.localAddress) ?? "\(bind)"))
                reportStart.finish()
            },
            logger: serverLogger
        )
        var configuration = ServiceGroupConfiguration(services: [application], logger: serverLogger)
        // A client stuck in the middle of a request must not hold the supervisor up when it leaves.
        configuration.maximumGracefulShutdownDuration = .seconds(1)
        let services = ServiceGroup(configuration: configuration)
        let server = Task {
            do {
                try await services.run()
            } catch {
                reportStart.yield(.failure(error))
            }
            reportStart.finish()
        }
        switch await started.first(where: { _ in true }) {
        case .success(let bound)?:
            return HTTPEndpoint(boundAddress: bound, services: services, server: server)
        case .failure(let error)?:
            throw error
        case nil:
            throw SupervisorError(.httpUnavailable, "\(bind): the server stopped before it listened")
        }
    }

    /// Stops the server gracefully (cancelling requests still open after a second) and waits until it has closed
    /// its socket.
    public func stop() async {
        await services.triggerGracefulShutdown()
        await server.value
    }

    // MARK: Routes

    /// `/healthz`, `/active`, `/status` and `/metrics` of one member, at the root.
    private static func router(member: Member, containment: Containment, registry: PrometheusCollectorRegistry) -> Router<BasicRequestContext> {
        let router = Router()
        addRoutes(for: member, containment: containment, to: router.group())
        router.get("metrics") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer()))
            )
        }
        return router
    }

    /// Adds a member's `healthz`, `active` and `status` to `routes`, so that a process supervising many members
    /// can serve each under a path of its own (`routes` from `router.group("members/billing/a")`).
    public static func addRoutes(for member: Member, containment: Containment, to routes: RouterGroup<BasicRequestContext>) {
        routes.get("healthz") { _, _ -> Response in
            let state = await member.state
            return text(state == .finished ? .serviceUnavailable : .ok, state.rawValue)
        }
        routes.get("active") { _, _ -> Response in
            let (state, token) = await member.stateAndToken()
            guard let token else { return text(.serviceUnavailable, state.rawValue) }
            return text(.ok, "active token=\(token)")
        }
        routes.get("status") { _, _ -> Response in
            let (state, token) = await member.stateAndToken()
            var document = MemberStatusDocument(
                group: member.configuration.name.rawValue, member: member.id.rawValue, state: state.rawValue,
                containment: containment.description
            )
            document.token = token?.rawValue
            do {
                document.groupStatus = StatusDocument(store: "", statuses: [try await member.status()]).groups.first
            } catch {
                document.error = "\(error)"
            }
            return Response(
                status: .ok,
                headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: document.encoded() + "\n"))
            )
        }
    }

    private static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(
            status: status,
            headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body + "\n"))
        )
    }

    // MARK: Errors and addresses

    private static func listenError(_ error: any Error, address: HTTPAddress) -> SupervisorError {
        if let error = error as? SupervisorError { return error }
        guard let error = error as? IOError else {
            return SupervisorError(.httpUnavailable, "--http \(address): cannot listen: \(error)")
        }
        if error.errnoCode == EADDRINUSE {
            return SupervisorError(.httpUnavailable, "--http \(address): the port is already in use")
        }
        return SupervisorError(.httpUnavailable, "--http \(address): cannot listen: \(String(cString: strerror(error.errnoCode)))")
    }

    private static func describe(_ address: SocketAddress?) -> String? {
        guard let address, let ip = address.ipAddress, let port = address.port else { return nil }
        return HTTPAddress(host: ip, port: port).description
    }
}

/// The JSON of `GET /status` (schema version 1; fields are only ever added).
struct MemberStatusDocument: Encodable {
    var schemaVersion = 1
    var group: String
    var member: String
    /// This member's ``MemberState`` as its state machine sees it: in its group, the phase `understudy status`
    /// shows for it; `idle`, `leaving` or `finished` otherwise.
    var state: String
    /// How COMMAND's process tree is held: `cgroup` or `process-group` (see docs/cli.md).
    var containment: String
    /// The fencing token while active.
    @NullWhenAbsent var token: UInt64? = nil
    /// The group as `understudy status --json` shows it; `nil` when the store cannot be read.
    @NullWhenAbsent var groupStatus: StatusDocument.Group? = nil
    /// Why the store could not be read.
    @NullWhenAbsent var error: String? = nil

    func encoded() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding plain strings and numbers cannot fail.
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

extension Member {
    /// The state and the token it acts with, read together.
    fileprivate func stateAndToken() -> (MemberState, FencingToken?) { (state, activeToken) }
}
