from cardflow.profiles import emit, profile_script


@profile_script("orders", version="1", events=["purchase"], fields=["orders"])
def orders(profile, event):
    mine = profile.setdefault("orders", {"count": 0, "spent": 0})
    mine["count"] += 1
    mine["spent"] += event.properties.get("amount", 0)
    if mine["count"] == 2:
        emit("repeat_buyer", {"spent": mine["spent"]})  # a derived event, in `events` once
