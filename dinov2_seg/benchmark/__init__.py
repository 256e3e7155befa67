"""Speed and memory of a config's model (``tools/benchmark.py``): what it
runs on (:mod:`.inputs`), the live-tensor memory tracker (:mod:`.memory`),
the FLOP count (:mod:`.flops`), the timing harness (:mod:`.timing`) and the
modes built from them (:mod:`.modes`)."""
