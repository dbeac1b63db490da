-- Marketing quiet hours by recipient country, in the recipient's local time
-- (NULL: none): {"*": ["21:00", "08:00"], "US": ["22:00", "07:30"]}.
ALTER TABLE accounts ADD COLUMN quiet_hours jsonb;
