"""The data side: the catalog of datasets (built-in ones by name), sources (archive names,
layouts, sizes, content fingerprints), download, safe archives, decoding and prepare, and the
synthetic demo data."""
