"""The one shared kit every Parallax service and client builds on: server bootstrap, client
channels, domain errors and their status codes, telemetry, settings, storage and pagination."""
