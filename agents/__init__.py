"""Faust agents: each module holds one agent and the function that registers it on an app."""
