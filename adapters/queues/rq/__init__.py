"""The RQ queue (`rq://`): queue puts jobs on RQ, worker runs them (statesaga.worker.run_job is
the one function every job names), jobguard refuses a job that is not one of ours, fleet lists
the workers."""
