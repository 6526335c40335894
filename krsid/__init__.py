"""krsid: a runtime-security audit daemon on BPF-LSM (KRSI) hooks.

The package reads as the pipeline: config -> catalog -> pipeline.load (the only
module that imports bcc) -> pipeline.poll -> pipeline.decode -> pipeline.dispatch
-> sinks.
"""

__version__ = "0.1.0"
