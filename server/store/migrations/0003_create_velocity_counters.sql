-- Fixed-window counters shared by every replica: one row per (scope, key,
-- window). A window is [window_start, window_end), aligned to the Unix epoch, so
-- every replica computes the same window from the database clock. window_end is
-- part of the key so that two window lengths on the same scope and key (an hour
-- and a day, or a length changed in the configuration) never share a row.
-- Rows are only ever incremented while the window is current; purge deletes them
-- some time after window_end.

-- fillfactor leaves room on each page so that the increments, which change no
-- indexed column, stay heap-only (HOT) updates.
CREATE TABLE velocity_counters (
    scope         text        NOT NULL,
    key           text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    count         integer     NOT NULL,
    PRIMARY KEY (scope, key, window_start, window_end),
    CHECK (window_end > window_start),
    CHECK (count > 0)
) WITH (fillfactor = 70);

-- The purge's scan: windows that ended before a cut-off.
CREATE INDEX velocity_counters_window_end ON velocity_counters (window_end);
