"""The energy report: its records and schema, JSON codec and loading, files, plot, console."""
