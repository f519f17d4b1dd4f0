-- kiln controller state, schema 10: a claim walks running runs oldest first and, within a run,
-- its pending steps by position, stopping at the first ready one, instead of checking every
-- pending step of every run and sorting them (which made draining n queued steps O(n^2)).
CREATE INDEX runs_dispatchable ON runs (state, dispatch, started_at, id);
CREATE INDEX steps_by_run_state ON steps (run_id, state, position);
