-- Sends an instance claimed and never answered (it stopped or lost the
-- database while sending): herald cannot know whether the push service got
-- them, so they are failed rather than sent again — a push arrives at most
-- once. Dismisses alike.
-- $1 how long a claim may stay unanswered (seconds)
with sends as (
  update herald.push_sends
     set state = 'failed',
         error = 'herald stopped while sending it; not sent again, so that it cannot arrive twice'
   where state = 'sending' and claimed_at < now() - make_interval(secs => $1)
  returning notification_id, user_id
),
dismisses as (
  update herald.push_sends
     set dismiss_state = 'failed'
   where dismiss_state = 'sending' and claimed_at < now() - make_interval(secs => $1)
  returning 1
)
select s.notification_id, s.user_id, (select count(*) from dismisses) as dismisses
  from sends s
