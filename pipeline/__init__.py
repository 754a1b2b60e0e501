"""Prep stage: dataset readers, voxelization, frame selection, correspondences, teacher, cache."""
