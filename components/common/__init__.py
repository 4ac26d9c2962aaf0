"""Shared code (bottom layer): storage, data reading, problem spec, registry, images.

Nothing here imports kfp or components above it.
"""
