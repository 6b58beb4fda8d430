"""The study's configuration: its JSON schema (config.schema.yaml, shipped with the package),
validation with defaults, sweeps expanded into runs, and budgets. Torch-free: the workflow layer
reads it on every Snakemake call."""
