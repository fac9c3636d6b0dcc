"""A profile script that raises on some events, for the script-error test."""

from cardflow.profiles import profile_script


@profile_script("fragile", version="1")
def fragile(profile, event):
    if event.properties.get("explode"):
        raise ZeroDivisionError("the fragile script cannot take this event")
    profile["fragile_seen"] = profile.get("fragile_seen", 0) + 1


@profile_script("blocking", version="1")
def blocking(profile, event):
    """Blocks the worker's event loop (the fold runs on it) for ``block_loop_s`` seconds."""
    import time

    if event.properties.get("block_loop_s"):
        time.sleep(float(event.properties["block_loop_s"]))


@profile_script("video", version="1", events=["video.*", "play"], where=lambda e: e.properties.get("hd"))
def video(profile, event):
    """Counts the events it is called for: only HD video.* and play events."""
    profile["video_seen"] = profile.get("video_seen", 0) + 1


@profile_script("stuck", version="1", events=["loop", "sleep"])
def stuck(profile, event):
    """Never returns on its own: a sleep, or an endless loop that swallows every Exception."""
    import time

    if event.event == "sleep":
        time.sleep(60)
    while True:
        try:
            profile["spins"] = profile.get("spins", 0) + 1
        except Exception:  # noqa: BLE001, S110 - what a careless script does
            pass


@profile_script("broken", version="1", events=["broken.*"])
def broken(profile, event):
    raise ValueError("the broken script fails on every event it is called for")
