"""Profile scripts that emit derived events, for the derived-events tests (loaded on their own:
their events would change other tests' profiles)."""

from cardflow.profiles import profile_script


@profile_script("power", version="1", events=["purchase"])
def power(profile, event):
    """Emits became_power_user on a user's third purchase."""
    from cardflow.profiles import emit

    profile["purchases"] = profile.get("purchases", 0) + 1
    if profile["purchases"] == 3:
        emit("became_power_user", {"third": event.event_id})


@profile_script("echo", version="1", events=["ping"])
def echo(profile, event):
    """A chain that would never end: every ping emits the next."""
    from cardflow.profiles import emit

    emit("ping", {"hop": event.properties.get("hop", 0) + 1})
