"""Who did it: process instance ids and ancestry (issue 12, items 1 and 2).

- :mod:`krsid.identity.ids`: the process instance id, ``<boot id>:<start>:<tgid>``,
  from the kernel's start time of the process (KRSID_EVENT_HEADER's start_ns) or
  from /proc/PID/stat, which give the same value;
- :mod:`krsid.identity.procfs`: one process read from /proc without being misled
  by pid reuse;
- :mod:`krsid.identity.table`: the process table (bounded, LRU), seeded from /proc
  and kept current from the events, which answers "who is this process, and who
  started it".
"""

from krsid.identity.ids import BootClock, process_id
from krsid.identity.table import Process, ProcessTable

__all__ = ["BootClock", "Process", "ProcessTable", "process_id"]
