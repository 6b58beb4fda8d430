"""The report step: its tables, the HTML page, provenance, the README's results, and the step
itself (write)."""
