"""The four Parallax services; each runs alone with `python -m services.<name>`."""
