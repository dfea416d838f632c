"""Model helpers that need no model class: the checkpoint layouts and their loading."""
