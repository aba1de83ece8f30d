"""Level-triggered reconcilers, one per kind: observe children, build, apply, compute status, write it on change."""
