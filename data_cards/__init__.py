"""Dataset cards and the machine-readable label table (Table 2 of the supplementary)."""
