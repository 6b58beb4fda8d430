"""The ground floor: where files live (paths), writing them safely (files), logs, progress lines,
the device and precision, and which code made a result (code_version). Imports nothing else of
cifarlab; importing this package imports none of its modules."""
