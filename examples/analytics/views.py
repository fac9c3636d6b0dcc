from cardflow.views import view
from cardflow.widgets import Group, Number


@view("orders", title="Orders")
def orders(profile):
    mine = profile.get("orders", {})
    return [Group(direction="horizontal", children=[
        Number(mine.get("count", 0), label="orders"), Number(mine.get("spent", 0), label="spent")])]
