"""Pure status computation: conditions, phases, and the diff that decides whether to write."""
