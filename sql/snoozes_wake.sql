-- The wake-up: claims snoozes whose until has passed and deletes them,
-- which logs each one's notification.unsnoozed (woke = true) once. Rows
-- another instance is deleting are skipped, not waited for, so two
-- instances never log one wake-up twice. At most $1 per statement.
delete from herald.notification_snoozed z
 using (select notification_id, user_id
          from herald.notification_snoozed
         where until <= now()
         order by until
         limit $1
           for update skip locked) due
 where z.notification_id = due.notification_id and z.user_id = due.user_id
