from cardflow.cards import Card
from cardflow.widgets import Number


class RepeatBuyers(Card):
    title = "Repeat buyers"
    requires = ("standard", "orders")

    def contribute(self, profile):  # one user's share: kept live as profiles change
        return 1 if profile.get("orders", {}).get("count", 0) >= 2 else 0

    def render(self, total):
        return [Number(total or 0, label="users who bought twice or more")]

    def summary(self, total):
        return f"{total or 0} repeat buyers"

    examples = [{"events": [{"uid": "ann", "event": "purchase", "ts": 1767225600000},
                            {"uid": "ann", "event": "purchase", "ts": 1767312000000},
                            {"uid": "bob", "event": "purchase", "ts": 1767225600000}],
                 "summary": "1 repeat buyers"}]
