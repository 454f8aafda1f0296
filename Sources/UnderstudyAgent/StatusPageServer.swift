import Logging
import Prometheus
import UnderstudySupervisor

/// Serves an agent's ``StatusPage`` on the address of its file's `http`, and moves it when a reload changes it.
public actor StatusPageServer {
    private let agent: Agent
    private let registry: PrometheusCollectorRegistry
    private let logger: Logger
    private var serving: (address: HTTPAddress, endpoint: HTTPEndpoint)?

    public init(agent: Agent, registry: PrometheusCollectorRegistry, logger: Logger) {
        self.agent = agent
        self.registry = registry
        self.logger = logger
    }

    /// The address and port the page listens on, `nil` when it is not served.
    public var boundAddress: String? { serving?.endpoint.boundAddress }

    /// Serves the page on `address`, or stops serving it when `nil`. A move binds the new address before it lets
    /// the old one go; when the new one takes the old one's port (on another host), it lets the old one go first
    /// and takes it back, on the port it had, if the new one still cannot be bound. On failure the page is
    /// served where it was.
    ///
    /// - Throws: ``AgentError`` with ``AgentError/Kind/unavailable`` when `address` cannot be listened on.
    public func serve(_ address: HTTPAddress?) async throws(AgentError) {
        guard address != serving?.address else { return }
        let old = serving
        guard let address else {
            serving = nil
            await old?.endpoint.stop()
            return
        }
        do throws(SupervisorError) {
            serving = (address, try await start(address))
            await old?.endpoint.stop()
        } catch {
            guard let old, let port = old.endpoint.boundAddress.split(separator: ":").last.flatMap({ Int($0) }), port == address.port
            else { throw AgentError(.unavailable, error.message) }
            await old.endpoint.stop()
            do throws(SupervisorError) {
                serving = (address, try await start(address))
            } catch {
                serving = try? await (old.address, start(HTTPAddress(host: old.address.host, port: port)))
                throw AgentError(.unavailable, error.message)
            }
        }
        logger.notice("serving HTTP", metadata: ["address": "\(serving?.endpoint.boundAddress ?? "")"])
    }

    /// Stops serving the page.
    public func stop() async {
        try? await serve(nil)
    }

    private func start(_ address: HTTPAddress) async throws(SupervisorError) -> HTTPEndpoint {
        try await HTTPEndpoint.start(on: address, router: StatusPage.router(agent: agent, registry: registry, logger: logger), logger: logger)
    }
}
