"""Several processes serving one configuration: workers, hot restart, hand-off.

A *supervisor* process binds the listening sockets (or takes them from the
process it replaces), starts worker processes that each run the whole
service on those sockets, restarts a worker that dies, and serves the admin
endpoint for all of them. Processes talk over Unix sockets
(:mod:`.channel`): JSON messages, descriptors passed with SCM_RIGHTS.
"""

__all__: list[str] = []
