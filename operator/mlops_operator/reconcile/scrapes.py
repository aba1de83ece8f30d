"""What the InferenceService reconciler keeps between passes: the pod scraper, the Prometheus
client (for spec.monitoring.prometheusUrl), and what they saw.

Only InferenceService uses it, so it is one field of the shared Context (`ctx.scrapes`) rather
than three. All of it is a cache: after an operator restart the first scrape counts lifetime
counters (monitor.scrape's `previous=None`) and scrapes at once (no known last scrape).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops_operator.monitor.scrape import PodTotals
from mlops_operator.prometheus import PrometheusClient
from mlops_operator.scraper import HttpScraper, Scraper

# "all" (every running pod, for status.metrics), "canary" (the canary analysis) or "stable" (the
# stable track's labelled rows since the analysis started, for the split canary; issue #22)
Track = str


async def no_scraper(pod: Mapping[str, Any]) -> str | None:
    """Reads nothing: the default of a Context built without one (unit tests)."""
    return None


@dataclass
class ScrapeMemory:
    # Reads a serving pod's /metrics text (scraper.HttpScraper in production; tests inject one).
    scraper: Scraper = no_scraper
    # The Prometheus client (opens no connection before its first query).
    prometheus: PrometheusClient = field(default_factory=PrometheusClient)
    # Counter totals of the last scrape per (namespace, name, track), for per-interval rates.
    totals: dict[tuple[str, str, Track], PodTotals] = field(default_factory=dict)
    # When each (namespace, name)'s pods were last scraped; status.metrics.lastScrape only
    # moves when a value changed, so it cannot pace the scrapes on its own.
    scraped_at: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of a deleted InferenceService."""
        for track in ("all", "canary", "stable"):
            self.totals.pop((namespace, name, track), None)
        self.scraped_at.pop((namespace, name), None)

    async def close(self) -> None:
        """Close the scraper's connections (an injected plain function has none)."""
        if isinstance(self.scraper, HttpScraper):
            await self.scraper.close()
        await self.prometheus.close()
