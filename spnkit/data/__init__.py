"""Data sources: where images come from, as ``[N, C, H, W]`` uint8 arrays."""
