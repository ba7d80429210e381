"""Reading a Prometheus text endpoint (Triton's metrics port): series and family totals."""

from __future__ import annotations

import urllib.request

SETTLE_S = 2.5  # Triton refreshes its metrics every 2 s by default: wait this long before reading a change


def scrape(url: str) -> dict[str, float]:
    """Series (name{labels}) -> value from a metrics endpoint."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            series[key] = float(value)
    return series


def family_total(series: dict[str, float], name: str, **labels: str) -> float:
    """Sum of family `name`'s series carrying every label given."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in series.items() if k.split("{")[0] == name and all(w in k for w in wanted))
