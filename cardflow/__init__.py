"""cardflow: self-hosted, real-time people analytics in Python on Kafka."""

from cardflow.config import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
