"""Pure builders: a typed resource in, a child manifest (dict) out. No I/O, clock or randomness."""
