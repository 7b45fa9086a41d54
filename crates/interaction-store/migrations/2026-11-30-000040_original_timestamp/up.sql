-- Clock-skew correction (issue 14): when a device clock was off by more than
-- CLOCK_SKEW_THRESHOLD, `occurred_at` holds the corrected time and this column the time the
-- device sent. NULL when nothing was corrected (nearly every row). ADD COLUMN without a
-- default changes only the catalog: no rewrite, however large the table.
ALTER TABLE events ADD COLUMN original_occurred_at TIMESTAMPTZ;
