"""eBPF probes: BCC C sources (*.c, common.h) and their Python loader, map control and
ring-buffer consumer."""
