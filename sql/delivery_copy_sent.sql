-- The delivery writer's batch straight into the table, in PostgreSQL's
-- binary COPY format: (notification, user, 'IN_APP', 'SENT', time) rows
-- whose notification and user were found after the lock that keeps deletes
-- out (delivery_lock_parents.sql, delivery_live_notifications.sql,
-- delivery_live_users.sql). A pair recorded already fails the whole COPY
-- with a unique violation; the writer then writes the batch again through
-- its staging table (delivery_copy_batch.sql, delivery_record_sent.sql),
-- which skips such pairs.
copy herald.notification_deliveries (notification_id, user_id, channel, status, sent_at) from stdin (format binary)
