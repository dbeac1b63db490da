-- A campaign sent as content with per-number variables (no stored template): its
-- text, so the dispatcher can hand a provider's bulk API one content and each
-- number's values (Skynoo batch/create) rather than one rendered text a number.
-- NULL for template batches (the template holds the text) and plain text.
ALTER TABLE batches ADD COLUMN content text;
