"""Format and text rewards for rlvf."""
