"""Queues (statesaga.ports.Queue and WorkerQueue): inline runs a job in the caller's process;
rq is the RQ queue with its worker, job guard and fleet view; sqlite is the queue in a SQLite
store's file with its worker."""
