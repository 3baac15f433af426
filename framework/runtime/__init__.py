"""What runs a saga: the transaction around one event, the jobs a worker claims and settles,
handler calls, the effects and guards the tables name, heartbeats and recovery."""
