"""Every traffic tool refuses an address other than 127.0.0.1 before it sends anything."""

import re

import pytest

from iqaguard.bench import expensive_load, loadgen, loadtest
from iqaguard.loopback import require_loopback
from iqaguard.redteam import run as redteam


def test_loopback_addresses_pass_and_others_are_refused_by_name() -> None:
    require_loopback("tool", "127.0.0.1:8001", "127.0.0.1:8000")
    for address in ("10.0.0.1:8001", "localhost:8001", "127.0.0.1.example.com:80", "127.0.0.10:8001"):
        with pytest.raises(SystemExit, match=re.escape(f"tool sends traffic to 127.0.0.1 only, got {address}")):
            require_loopback("tool", "127.0.0.1:8000", address)


@pytest.mark.parametrize(("entry", "argv"), [
    (loadgen.main, ["--url", "10.0.0.1:8001", "--image", "unused.png"]),
    (loadtest.main, ["--http-url", "10.0.0.1:8000"]),
    (expensive_load.main, ["--url", "192.168.1.2:8001"]),
    (redteam.main, ["--metrics-url", "10.0.0.1:8002"]),
])
def test_traffic_tools_refuse_other_addresses_before_any_work(entry, argv) -> None:
    with pytest.raises(SystemExit, match=re.escape("127.0.0.1 only")):
        entry(argv)
