"""Sources and sinks: Kafka admin and producers, the data lake, the warehouse."""
