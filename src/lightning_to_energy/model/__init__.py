"""The energy model: operation features and their units, the online regression, scoring."""
