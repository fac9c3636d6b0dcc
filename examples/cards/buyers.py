from cardflow.cards import Card
from cardflow.widgets import Number


class Buyers(Card):
    title = "Buyers"

    def map(self, profiles):
        return sum(1 for p in profiles if p.get("events", {}).get("purchase"))

    def render(self, total):
        return [Number(total, label="users who bought")]

    def summary(self, total):
        return f"{total} of the users bought"

    examples = [  # `cardflow card test ./examples/cards/buyers.py`
        {"events": [{"uid": "ann", "event": "purchase", "ts": 1767225600000},
                    {"uid": "ann", "event": "purchase", "ts": 1767225660000},
                    {"uid": "bob", "event": "page_view", "ts": 1767225600000}],
         "summary": "1 of the users bought", "total": 1},
    ]
