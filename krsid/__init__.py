"""krsid: a runtime-security audit daemon on BPF-LSM (KRSI) hooks.

The package reads as an event's way down: config and catalog -> plan (which
program serves which hook on this kernel) -> pipeline.load (compile, load, attach;
the only module that imports bcc) -> pipeline.transport (ring or perf buffer) ->
pipeline.flow (decode -> rule name -> enrich -> dispatch) -> sinks. Pipeline and
sinks both stand on krsid.event and never call back up. daemon wires the stages,
service speaks systemd's protocol, metrics serves the counters to Prometheus.
"""

__version__ = "0.1.0"
