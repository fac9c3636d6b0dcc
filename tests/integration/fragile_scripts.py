"""A profile script that raises on some events, for the script-error test."""

from cardflow.profiles import profile_script


@profile_script("fragile", version="1")
def fragile(profile, event):
    if event.properties.get("explode"):
        raise ZeroDivisionError("the fragile script cannot take this event")
    profile["fragile_seen"] = profile.get("fragile_seen", 0) + 1
