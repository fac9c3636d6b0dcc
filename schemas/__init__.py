"""Avro schemas (.avsc) of every topic's records, shipped as package data."""
