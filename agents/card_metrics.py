"""The cards' Prometheus metrics, shared by the maps and the reducer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.maps = Counter("cardflow_card_maps", "card map runs over one partition", ["card", "outcome"],
                            registry=registry)
        self.map_seconds = Histogram("cardflow_card_map_seconds", "one card's map over one partition",
                                     ["card"], registry=registry,
                                     buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.load_seconds = Histogram("cardflow_card_load_seconds",
                                      "reading and decoding one partition's profiles", registry=registry,
                                      buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.results = Counter("cardflow_card_results", "results published", ["card", "outcome"],
                               registry=registry)
        self.pending_seconds = Gauge("cardflow_card_pending_seconds",
                                     "age of the oldest profile change not yet in the card's partials",
                                     ["card"], registry=registry)
        self.behind = Gauge("cardflow_card_behind",
                            "1 when the card's oldest pending change waited card_behind_factor debounces",
                            ["card"], registry=registry)
        self.bad_partials = Counter("cardflow_card_bad_partials",
                                    "records in card-partials that are not CardPartials (skipped)",
                                    registry=registry)
