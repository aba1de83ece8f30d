"""Generated protocol buffer messages (`make protos`); never edited by hand."""
