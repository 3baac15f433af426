"""The built-in adapters: the stores, queues and renderers statesaga ships, registered under its
entry-point groups exactly as a third-party plugin would be.

Grouped by the port they implement: stores/ (statesaga.ports.Store, over the shared document
algorithm stores.document), queues/ (Queue and WorkerQueue), renderers/ (diagram renderers).
_redis_url and _redis_errors are shared by the Redis store and the RQ queue, so they sit above
both.
"""
