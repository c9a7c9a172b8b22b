"""The schema, as the migrations that build it: `streaming-worker migrate` applies the ones
a database has not seen yet, in order, in one transaction under an advisory lock
(worker/store.py), so that several workers starting at once migrate once.

Append only: a migration that shipped is never edited, the next one changes what it made.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS ai_streaming_jobs (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        user_id text,
        conversation_id text,
        status text NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'processing', 'streaming',
                              'completed', 'failed', 'cancelled')),
        request_data jsonb NOT NULL,
        partial_content text NOT NULL DEFAULT '',
        response_data jsonb,
        error_message text,
        error_code text,
        attempts integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz
    );
    ALTER TABLE ai_streaming_jobs
        ADD COLUMN IF NOT EXISTS lease_token uuid,
        ADD COLUMN IF NOT EXISTS lease_message_id text,
        ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,
        ADD COLUMN IF NOT EXISTS delta_seq integer NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS ai_streaming_jobs_active_lease
        ON ai_streaming_jobs (lease_expires_at) WHERE status IN ('processing', 'streaming');
    CREATE INDEX IF NOT EXISTS ai_streaming_jobs_completed_at
        ON ai_streaming_jobs (completed_at) WHERE completed_at IS NOT NULL;
    CREATE TABLE IF NOT EXISTS ai_streaming_job_deltas (
        job_id uuid NOT NULL,
        attempt integer NOT NULL,
        seq integer NOT NULL,
        content text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job_id, attempt, seq)
    );
    """,
    # When the orphan sweep last sent a fresh message for a job whose worker vanished.
    """
    ALTER TABLE ai_streaming_jobs ADD COLUMN IF NOT EXISTS requeued_at timestamptz;
    """,
    # The row is no longer written on every flush (the deltas are): its fence counts only
    # the deltas whose text `partial_content` already holds.
    """
    ALTER TABLE ai_streaming_jobs RENAME COLUMN delta_seq TO content_seq;
    """,
    # Keep row updates on their page: room on every page (fillfactor), and an index that a
    # status change or a `partial_content` refresh does not touch. Such an update is HOT: no
    # new index entries and no lock record (measured: 11% less WAL at the default refresh).
    # The lease is cleared when an attempt ends, so the index holds only running jobs.
    """
    ALTER TABLE ai_streaming_jobs SET (fillfactor = 70);
    UPDATE ai_streaming_jobs SET lease_expires_at = NULL
    WHERE lease_expires_at IS NOT NULL AND status NOT IN ('processing', 'streaming');
    DROP INDEX IF EXISTS ai_streaming_jobs_active_lease;
    CREATE INDEX IF NOT EXISTS ai_streaming_jobs_lease
        ON ai_streaming_jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
    """,
    # Reasoning ("thinking") text beside the answer (contract sections 1, 7 and 8): on the
    # row with the same refresh rules as `partial_content`, and per delta. Adding a column
    # with a constant default rewrites nothing.
    """
    ALTER TABLE ai_streaming_jobs
        ADD COLUMN IF NOT EXISTS reasoning_content text NOT NULL DEFAULT '';
    ALTER TABLE ai_streaming_job_deltas ADD COLUMN IF NOT EXISTS reasoning text;
    """,
    # A running job's row is written every few seconds for its lease alone, and an index on
    # `lease_expires_at` made each renewal a non-HOT update: a new tuple and new entries in
    # both indexes, about 900 bytes of WAL, twice the text of a 30 s answer at refresh 30.
    # Running jobs are found by status instead: a renewal then changes no indexed column and
    # is a HOT update of a few dozen bytes; only the move to `streaming` (once) is not.
    """
    CREATE INDEX IF NOT EXISTS ai_streaming_jobs_running
        ON ai_streaming_jobs (status) WHERE status IN ('processing', 'streaming');
    DROP INDEX IF EXISTS ai_streaming_jobs_lease;
    """,
)
