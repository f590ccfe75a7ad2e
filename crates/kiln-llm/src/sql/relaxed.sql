-- Lets this transaction's commit return before its WAL reaches disk (throttling state only).
SET LOCAL synchronous_commit = off
