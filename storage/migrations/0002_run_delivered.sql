-- When a run's result reached the user. A run can end (outcome recorded) and still be undelivered
-- if the bot stopped mid-send: the outcome job is retried and delivers it then.
ALTER TABLE runs ADD COLUMN delivered_at TEXT;
