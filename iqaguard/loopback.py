"""127.0.0.1: the only address the embedded server binds and the traffic tools (load tests, benchmarks,
the red team) send requests to."""

LOOPBACK = "127.0.0.1"


def require_loopback(tool: str, *host_ports: str) -> None:
    """Exit with a message naming `tool` unless every `host:port` is on 127.0.0.1."""
    for host_port in host_ports:
        if not host_port.startswith(f"{LOOPBACK}:"):
            raise SystemExit(f"{tool} sends traffic to {LOOPBACK} only, got {host_port}")
