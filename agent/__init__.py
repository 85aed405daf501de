"""The Parallax node agent."""
