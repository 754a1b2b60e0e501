"""Synthetic indoor rooms, rendered consistently and written in each dataset's exact format."""
