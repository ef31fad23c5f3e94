-- What an editor says about each version of a workflow ("save as a new version, with a
-- message"); NULL for versions stored without one. Repair writes "repair of vN".
ALTER TABLE workflows ADD COLUMN message text CHECK (length(message) <= 500);
