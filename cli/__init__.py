"""The `parallax` command: a client of the services, plus the local supervisor that runs them."""
