-- Stores a browser's subscription for $1, or refreshes the caller's own.
-- An endpoint another user held moves to $1 as a new subscription (the
-- browser profile changed hands): the old row goes first, with every push
-- still planned for its previous owner.
-- $1 user_id, $2 endpoint, $3 p256dh, $4 auth
-- Returns the id and whether the row is new.
insert into herald.push_subscriptions (user_id, endpoint, p256dh, auth)
values ($1, $2, $3, $4)
on conflict on constraint push_subscriptions_endpoint_unique do update
   set p256dh = excluded.p256dh,
       auth = excluded.auth,
       failures = 0
 where herald.push_subscriptions.user_id = excluded.user_id
returning id, (xmax = 0) as created
