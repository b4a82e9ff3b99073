"""Network-wide behaviours attached to a Host (ping, identify, perf, echo)."""

from fastp2p.services.echo import echo_handler, serve_echo
from fastp2p.services.identify import Identify
from fastp2p.services.perf import PerfResult, perf, serve_perf
from fastp2p.services.ping import Ping

__all__ = ["Identify", "Ping", "PerfResult", "perf", "serve_perf", "echo_handler", "serve_echo"]
