"""Shipping events to the runtime service: the bounded `outbox` of numbered batches and the
`sender` that streams them over `ReportEvents`, resending unacknowledged ones after a
reconnect."""
