"""The data side: the catalog of datasets (built-in ones by name), sources (archive names,
layouts, sizes, content fingerprints), fetch (download), archives (reading them safely),
prepare (decoding, the tensors), and the synthetic demo data."""
