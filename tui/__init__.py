"""The Textual app, shipped as mlx_distill.tui."""
