-- The gateway's view of a user: who they are and which rooms they belong in.
select id, name, role, sector_id, is_active
  from herald.users
 where id = $1
