"""Readers: each dataset, exactly as distributed, into a :class:`tttkd.core.scene.Scene`."""
