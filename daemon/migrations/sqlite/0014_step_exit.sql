-- kiln controller state, schema 14: each step record's exit, apart. A run's view shows every
-- step's exit; reading it from record_json meant copying and parsing every whole record each
-- time a client polled a run (26 ms of the daemon's CPU for 1,000 steps). NULL only for rows
-- an older daemon wrote after this migration; readers then fall back to record_json.
ALTER TABLE step_records ADD COLUMN exit_json TEXT;
UPDATE step_records SET exit_json = json_extract(record_json, '$.exit');
