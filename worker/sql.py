"""The worker's SQL statements, with why each is shaped as it is (worker/store.py runs them)."""

# One statement claims a whole batch. A job is claimable when `pending`, or when its lease
# ran out (its worker vanished) or is the one `restart` names (this worker's broken attempt).
# Each claim carries its own lease token, so a batch retried after a lost connection finds
# the claims that did commit (`ours`) and never counts an attempt twice; a job named twice
# in one batch is claimed by only one of them. The outer SELECT sees the rows as they were
# before the statement: it reports why a claim was refused.
CLAIM = """
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::float8[])
        WITH ORDINALITY AS b(id, lease, message_id, restart, lease_s, ord)
),
claimed AS (
    UPDATE ai_streaming_jobs j
    SET status = 'processing', attempts = j.attempts + 1, partial_content = '',
        reasoning_content = '', content_seq = 0, lease_token = b.lease,
        lease_message_id = b.message_id,
        lease_expires_at = now() + make_interval(secs => b.lease_s), requeued_at = NULL,
        started_at = coalesce(j.started_at, now()), updated_at = now(),
        response_data = NULL, error_code = NULL, error_message = NULL, completed_at = NULL
    FROM batch b
    WHERE j.id = b.id
      AND (j.status = 'pending'
           OR (j.status IN ('processing', 'streaming')
               AND (j.lease_expires_at < now() OR j.lease_token = b.restart)))
    RETURNING j.id, j.lease_token, j.attempts
),
-- A job the app cancelled before any worker ended it still gets its ending filled in. One
-- whose worker died before it settled (no completed_at yet) has its text brought level with
-- its last attempt's deltas, once, as that worker would have; content_seq moves with it, so
-- that a settle arriving late (its lease ran out meanwhile) appends nothing twice.
settled AS (
    UPDATE ai_streaming_jobs j
    SET completed_at = coalesce(j.completed_at, now()),
        response_data = coalesce(j.response_data, jsonb_build_object(
            'model', NULL, 'provider', NULL, 'finish_reason', 'cancelled', 'usage', NULL,
            'cost_usd', NULL, 'ttft_ms', NULL, 'duration_ms', NULL, 'attempts', j.attempts)),
        partial_content = CASE WHEN j.completed_at IS NOT NULL THEN j.partial_content
            ELSE coalesce((SELECT string_agg(d.content, '' ORDER BY d.seq)
                           FROM ai_streaming_job_deltas d
                           WHERE d.job_id = j.id AND d.attempt = j.attempts), '') END,
        reasoning_content = CASE WHEN j.completed_at IS NOT NULL THEN j.reasoning_content
            ELSE coalesce((SELECT string_agg(d.reasoning, '' ORDER BY d.seq)
                           FROM ai_streaming_job_deltas d
                           WHERE d.job_id = j.id AND d.attempt = j.attempts), '') END,
        content_seq = CASE WHEN j.completed_at IS NOT NULL THEN j.content_seq
            ELSE coalesce((SELECT max(d.seq) FROM ai_streaming_job_deltas d
                           WHERE d.job_id = j.id AND d.attempt = j.attempts), 0) END,
        lease_expires_at = NULL
    FROM batch b
    WHERE j.id = b.id AND j.status = 'cancelled'
      AND (j.completed_at IS NULL OR j.response_data IS NULL)
      -- A live worker settles its own job (with text not yet in the deltas).
      AND (j.lease_expires_at IS NULL OR j.lease_expires_at < now())
)
SELECT c.attempts AS claimed_attempts, j.lease_token = b.lease AS ours, j.attempts,
       j.status, j.request_data::text, j.lease_message_id,
       j.status = 'pending' OR (j.status IN ('processing', 'streaming')
           AND (j.lease_expires_at < now() OR j.lease_token = b.restart)) AS claimable,
       greatest(extract(epoch FROM j.lease_expires_at - now()), 0)::float8 AS lease_left_s
FROM batch b
LEFT JOIN ai_streaming_jobs j ON j.id = b.id
LEFT JOIN claimed c ON c.id = b.id AND c.lease_token = b.lease
ORDER BY b.ord
"""

# Jobs whose worker died (their lease ran out), restarted by a live worker with free slots:
# attempts + 1 and the text reset, as a claim does, under lease tokens the caller made, so
# that a retry after a lost connection finds the jobs its lost try took (`mine`) instead of
# counting them again. SKIP LOCKED: workers sweeping at once take different jobs.
TAKE_OVER = """
WITH tokens AS (
    SELECT token, n FROM unnest($1::uuid[]) WITH ORDINALITY AS t(token, n)
),
mine AS (
    SELECT id, attempts, lease_token, request_data FROM ai_streaming_jobs
    WHERE lease_token = ANY($1::uuid[]) AND status IN ('processing', 'streaming')
),
unused AS (
    SELECT token, row_number() OVER (ORDER BY n) AS n FROM tokens
    WHERE token NOT IN (SELECT lease_token FROM mine)
),
expired AS (
    SELECT id, row_number() OVER (ORDER BY lease_expires_at) AS n FROM (
        SELECT id, lease_expires_at FROM ai_streaming_jobs
        WHERE lease_expires_at < now() AND status IN ('processing', 'streaming')
        ORDER BY lease_expires_at
        LIMIT (SELECT count(*) FROM unused)
        FOR UPDATE SKIP LOCKED
    ) e
),
taken AS (
    UPDATE ai_streaming_jobs j
    SET status = 'processing', attempts = j.attempts + 1, partial_content = '',
        reasoning_content = '', content_seq = 0, lease_token = u.token,
        lease_message_id = NULL, lease_expires_at = now() + make_interval(secs => $2),
        requeued_at = NULL, updated_at = now()
    FROM expired e JOIN unused u ON u.n = e.n
    WHERE j.id = e.id
    RETURNING j.id, j.attempts, j.lease_token, j.request_data
)
SELECT id, attempts, lease_token, request_data::text FROM taken
UNION ALL
SELECT id, attempts, lease_token, request_data::text FROM mine
"""

# Jobs whose worker vanished and whose message is gone too (deleted, dead-lettered): the
# lease ran out long ago and nothing claimed them since. Send them again, or fail them once
# they have been started `max_attempts` times.
SWEEP_ORPHANS = """
WITH orphans AS (
    SELECT id FROM ai_streaming_jobs
    WHERE status IN ('processing', 'streaming')
      AND lease_expires_at < now() - make_interval(secs => $1)
      AND (requeued_at IS NULL OR requeued_at < now() - make_interval(secs => $1))
    ORDER BY lease_expires_at
    LIMIT 100
    FOR UPDATE SKIP LOCKED
)
UPDATE ai_streaming_jobs j
SET requeued_at = now(),
    status = CASE WHEN j.attempts >= $2 THEN 'failed' ELSE j.status END,
    error_code = CASE WHEN j.attempts >= $2 THEN 'internal' END,
    error_message = CASE WHEN j.attempts >= $2
        THEN 'the job was started ' || j.attempts || ' times and never finished' END,
    completed_at = CASE WHEN j.attempts >= $2 THEN now() END,
    lease_expires_at = CASE WHEN j.attempts >= $2 THEN NULL ELSE j.lease_expires_at END,
    updated_at = CASE WHEN j.attempts >= $2 THEN now() ELSE j.updated_at END
FROM orphans o
WHERE j.id = o.id
RETURNING j.id, j.status
"""

# One statement per flush for every job at once. Each job's new text becomes one delta row,
# inserted only while the job's lease is still this attempt's, and only if a batch retried
# after an ambiguous failure did not insert it already. (Not ON CONFLICT DO NOTHING: its
# speculative insertion logs a 48-byte confirmation record per row, a fifth of a delta's
# WAL. The rare retry that races its own lost first try fails on the key and goes again.)
# The job's row is written only when something about it changes (status, a `partial_content`
# refresh, the lease), and a refresh is fenced by `content_seq` so that it too applies once.
# The final SELECT reports every job's state *before* the statement: "already applied" vs
# "cancelled by the app" vs "claimed by another worker".
FLUSH = """
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::int[], $5::text[],
                         $6::text[], $7::int[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::bool[], $14::bool[], $15::text[],
                         $16::text[]) WITH ORDINALITY
        AS b(id, lease, attempt, seq, delta, refresh, refresh_from, status, response_data,
             error_code, error_message, touch, renew, reasoning, refresh_reasoning, ord)
),
current AS (
    SELECT b.ord, j.id, j.status, j.lease_token = b.lease AS leased, j.content_seq,
           j.lease_token = b.lease AND j.status IN ('processing', 'streaming') AS active
    FROM batch b LEFT JOIN ai_streaming_jobs j ON j.id = b.id
),
inserted AS (
    INSERT INTO ai_streaming_job_deltas (job_id, attempt, seq, content, reasoning)
    SELECT b.id, b.attempt, b.seq, b.delta, b.reasoning
    FROM batch b JOIN current c ON c.ord = b.ord
    WHERE c.active AND (b.delta <> '' OR b.reasoning IS NOT NULL)
      AND NOT EXISTS (SELECT FROM ai_streaming_job_deltas d
                      WHERE d.job_id = b.id AND d.attempt = b.attempt AND d.seq = b.seq)
),
updated AS (
    UPDATE ai_streaming_jobs j
    SET status = coalesce(b.status, j.status),
        partial_content = CASE WHEN b.refresh IS NULL THEN j.partial_content
                               ELSE j.partial_content || b.refresh END,
        reasoning_content = CASE WHEN b.refresh_reasoning IS NULL THEN j.reasoning_content
                                 ELSE j.reasoning_content || b.refresh_reasoning END,
        content_seq = CASE WHEN b.refresh IS NULL THEN j.content_seq ELSE b.seq END,
        updated_at = CASE WHEN b.refresh IS NOT NULL OR b.status IS NOT NULL
                          THEN now() ELSE j.updated_at END,
        lease_expires_at = CASE WHEN b.status IN ('completed', 'failed', 'pending') THEN NULL
                                WHEN b.renew THEN now() + make_interval(secs => $13)
                                ELSE j.lease_expires_at END,
        response_data = coalesce(b.response_data::jsonb, j.response_data),
        error_code = coalesce(b.error_code, j.error_code),
        error_message = coalesce(b.error_message, j.error_message),
        completed_at = CASE WHEN b.status IN ('completed', 'failed') THEN now()
                            ELSE j.completed_at END
    FROM batch b
    WHERE b.touch AND j.id = b.id AND j.lease_token = b.lease
      AND j.status IN ('processing', 'streaming')
      AND (b.refresh IS NULL OR j.content_seq = b.refresh_from)
    RETURNING j.id
)
SELECT c.status, coalesce(c.leased, false) AS leased, c.content_seq, u.id IS NOT NULL AS updated
FROM current c LEFT JOIN updated u ON u.id = c.id
ORDER BY c.ord
"""

# A cancelled row keeps its status; the worker fills in what the app left empty, and its
# text catches up with what streamed before the stop, once: the attempt's last delta is
# inserted (unless a retry already did) and the row's text refreshed where it still holds
# `refresh_from` deltas' text (a retry finds `content_seq` moved on and appends nothing).
SETTLE_CANCELLED = """
WITH mine AS (
    SELECT id, content_seq FROM ai_streaming_jobs
    WHERE id = $1 AND lease_token = $2 AND status = 'cancelled'
    FOR UPDATE
),
inserted AS (
    INSERT INTO ai_streaming_job_deltas (job_id, attempt, seq, content, reasoning)
    SELECT $1, $4, $5, $6, $7 FROM mine
    WHERE ($6 <> '' OR $7::text IS NOT NULL)
      AND NOT EXISTS (SELECT FROM ai_streaming_job_deltas d
                      WHERE d.job_id = $1 AND d.attempt = $4 AND d.seq = $5)
)
UPDATE ai_streaming_jobs j
SET completed_at = coalesce(j.completed_at, now()),
    response_data = coalesce(j.response_data, $3::jsonb), lease_expires_at = NULL,
    partial_content = CASE WHEN m.content_seq = $8 THEN j.partial_content || $9
                           ELSE j.partial_content END,
    reasoning_content = CASE WHEN m.content_seq = $8 THEN j.reasoning_content || $10
                             ELSE j.reasoning_content END,
    content_seq = CASE WHEN m.content_seq = $8 THEN $5 ELSE j.content_seq END,
    updated_at = now()
FROM mine m
WHERE j.id = m.id
"""

PURGE_DELTAS = """
DELETE FROM ai_streaming_job_deltas d
USING ai_streaming_jobs j
WHERE d.job_id = j.id AND j.completed_at < now() - make_interval(secs => $1)
"""
