"""Readers: each dataset, exactly as distributed, into a :class:`tttkd.pipeline.scene.Scene`."""
