"""Pieces that need a downstream library; each module imports its library, so import them only where used."""
