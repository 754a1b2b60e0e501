"""Readers that turn each dataset, exactly as distributed, into a :class:`~tttkd.pipeline.scene.Scene`."""
