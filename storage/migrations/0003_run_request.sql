-- The job payload a run was submitted with (JSON, as the bot built it). When the run's worker is lost,
-- the bot submits the same request again as the next attempt, even if Redis lost the original job.
ALTER TABLE runs ADD COLUMN request TEXT CHECK (request IS NULL OR json_valid(request));
