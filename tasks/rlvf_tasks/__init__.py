"""Built-in rlvf tasks, registered through the `rlvf` entry points like any third-party task."""
