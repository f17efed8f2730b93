//! The Lua scripts: every change of a task's state is one of them, so each is atomic on the server. Each takes
//! the key prefix as `ARGV[1]` and builds its key names from it (see `keys.rs`; not cluster-ready: a task's keys
//! and the shared indexes would need hash tags to share a slot).
//!
//! Invariants they keep:
//! - one execution per cache key at a time (`submit` joins the one in flight);
//! - a terminal status never changes (every transition compares the status first);
//! - a value is stored in the same step that makes its task `complete`;
//! - a result for a task that was cancelled, deleted, or taken over by another worker is dropped.

use redis::{Cmd, FromRedisValue, ToRedisArgs};

/// Prepended to every script that writes. A script never writes a key that is not refcache's (another app's, or a
/// careless write under the prefix): it answers a `WRONGTYPE` error naming the key before its first write, so that
/// nothing is left half-written. Two ways, chosen per key so that a task costs few checks:
/// - `foreign({key, type, ...})` asks `TYPE` of each key that the script writes without reading it first, and only
///   when this call writes it (the queue in `workers` mode only, a session's set only with a session);
/// - `touch(key, type, command...)` runs the script's first command on a key, when it is a read (or the script's
///   very first write), and turns its `WRONGTYPE` error into the same answer: the check costs nothing more.
const GUARD: &str = r"
local function wrong(key, want)
  local ty = redis.call('TYPE', key)['ok']
  return redis.error_reply('WRONGTYPE refcache: the key '..key..' is a '..ty..', not the '..want..' refcache keeps there')
end
local function foreign(keys)
  for i = 1, #keys, 2 do
    local ty = redis.call('TYPE', keys[i])['ok']
    if ty ~= 'none' and ty ~= keys[i + 1] then return wrong(keys[i], keys[i + 1]) end
  end
  return false
end
local function touch(key, want, ...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return nil, wrong(key, want) end
    return nil, r
  end
  return r, false
end
";

/// `submit(prefix, ref, key, info, spec, created_ms, priority_hex, session, workers, max_queued, lease_expiry_ms,
/// owner, token)` → `{'hit', value}` | `{'joined', ref}` | `{'full'}` | `{'started'}`. `owner` (`local` mode, a slot
/// already taken for it in that process): the task starts at once, claimed by `owner` in the same step, as `claim`
/// would claim it (`info` is then the `processing` record; it never enters `P:pending`, and no event is made: a
/// ref that did not exist until now has no follower anywhere). `token` (or `''`): kept in the record's `tok`
/// field, for `transition` to put in the task's end event (the submitter's proof that the event is the script's).
const SUBMIT: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local vkey = p..':value:'..ARGV[3]
local ikey = p..':inflight:'..ARGV[3]
local t = p..':task:'..ref
local workers = ARGV[9] == '1'
-- `P:stats` is written by a claim here (`owner`) and by a join (which checks it by its first write, `touch`), and
-- in `workers` mode by the task's take or claim: a foreign one refuses the submission there too (else every
-- claim would fail, and the task would wait for good).
local checks = {t, 'hash', p..':index', 'zset'}
if ARGV[12] ~= '' or workers then table.insert(checks, p..':stats'); table.insert(checks, 'hash') end
if workers then table.insert(checks, p..':queue'); table.insert(checks, 'stream') end
if ARGV[11] ~= '' then table.insert(checks, p..':leases'); table.insert(checks, 'zset') end
if ARGV[8] ~= '' then table.insert(checks, p..':session:'..ARGV[8]); table.insert(checks, 'set') end
local bad = foreign(checks)
if bad then return bad end
local h
h, bad = touch(vkey, 'hash', 'HMGET', vkey, 'ref', 'v')
if bad then return bad end
local cur
cur, bad = touch(ikey, 'string', 'GET', ikey)
if bad then return bad end
local queued
queued, bad = touch(p..':pending', 'zset', 'ZCARD', p..':pending')
if bad then return bad end
local stale = false
if h[2] then
  if h[1] and redis.call('HGET', p..':task:'..h[1], 'status') == 'complete' then return {'hit', h[2]} end
  -- One lifetime: a value whose record is gone is never handed out, and goes too (below: not before the first
  -- write that can refuse).
  stale = true
end
if cur then
  local st = redis.call('HGET', p..':task:'..cur, 'status')
  if st == 'pending' or st == 'processing' or st == 'input_required' then
    -- The first write of a join.
    local _
    _, bad = touch(p..':stats', 'hash', 'HINCRBY', p..':stats', 'coalesced', 1)
    if bad then return bad end
    if stale then redis.call('DEL', vkey) end
    return {'joined', cur}
  end
end
if queued >= tonumber(ARGV[10]) then
  if stale then redis.call('DEL', vkey) end
  return {'full'}
end
-- The first write.
local seq
seq, bad = touch(p..':seq', 'string', 'INCR', p..':seq')
if bad then return bad end
if stale then redis.call('DEL', vkey) end
local qm = ARGV[7]..string.format('%016x', seq)..':'..ref
local owner = ARGV[12]
local fields = {'info', ARGV[4], 'spec', ARGV[5], 'status', 'pending', 'key', ARGV[3], 'qm', qm, 'deliveries', 0,
  'session', ARGV[8]}
if owner ~= '' then
  fields[6] = 'processing'
  fields[12] = 1
  table.insert(fields, 'owner')
  table.insert(fields, owner)
end
if workers then
  -- The entry carries the record as submitted: the worker claims from it without reading it back (nobody else
  -- writes a pending record before its claim; a cancel or a deletion makes the claim fail).
  table.insert(fields, 'msg')
  table.insert(fields, redis.call('XADD', p..':queue', '*', 'ref', ref, 'spec', ARGV[5], 'info', ARGV[4]))
  -- Wakes the workers' `take` (only workers listen on it).
  redis.call('PUBLISH', p..':queued', '1')
end
if ARGV[13] and ARGV[13] ~= '' then
  table.insert(fields, 'tok')
  table.insert(fields, ARGV[13])
end
if ARGV[11] ~= '' then
  redis.call('ZADD', p..':leases', ARGV[11], ref)
  table.insert(fields, 'leased')
  table.insert(fields, 1)
end
redis.call('HSET', t, unpack(fields))
redis.call('SET', ikey, ref)
redis.call('ZADD', p..':index', ARGV[6], ref)
if owner == '' then
  redis.call('ZADD', p..':pending', 0, qm)
else
  redis.call('HINCRBY', p..':stats', 'executions', 1)
end
if ARGV[8] ~= '' then
  redis.call('SADD', p..':session:'..ARGV[8], ref)
  redis.call('PERSIST', p..':session:'..ARGV[8])
end
return {'started'}
";

/// `transition(prefix, ref, from, to, info, record_ttl_ms, now_ms, counter, owner, value, value_ttl_ms, ack, dead)`:
/// when
/// the status is one of `from` (`,a,b,`) and, if `owner` is given, the task is still that worker's: stores `value`
/// (if any), sets the status and record, and on a terminal status ends single-flight for the key and lets the
/// record expire; `ack` (a stream entry, or `''`): acknowledges and deletes it in the same step, as `ack` does (a
/// worker's end and its ack in one round trip); `dead` (`1` or `''`): a terminal change also puts the ref id on the
/// dead-letter list (capped at 10,000), so that whoever sees the task failed `worker lost` finds it there too. The
/// event (`<ref> <to>`) is made here; a terminal one of a record with a token (`tok`, from its submission) and at
/// most 4 KiB of record and value is `<ref> <to> <token> <record length> <record><value>`: the
/// submitter's waiter takes the end from it, without a read. → `ok` | `missing` | `stolen` | the status it found.
const TRANSITION: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local t = p..':task:'..ref
local f, bad = touch(t, 'hash', 'HMGET', t, 'status', 'key', 'qm', 'owner', 'session', 'leased', 'tok', 'ocap', 'ask',
  'answered')
if bad then return bad end
local st = f[1]
if not st then return 'missing' end
if not string.find(ARGV[3], ','..st..',', 1, true) then return st end
if ARGV[9] ~= '' and f[4] ~= ARGV[9] then return 'stolen' end
local to = ARGV[4]
local terminal = to == 'complete' or to == 'failed' or to == 'cancelled'
local key = f[2] or ''
local session = f[5] or ''
-- Only the keys this call writes: a claimed task is out of the queue's index already, a worker's has no lease.
local dequeue = st == 'pending' and to ~= 'pending'
local checks = {}
if ARGV[10] ~= '' then table.insert(checks, p..':value:'..key); table.insert(checks, 'hash') end
if dequeue then table.insert(checks, p..':pending'); table.insert(checks, 'zset') end
if terminal and f[6] then table.insert(checks, p..':leases'); table.insert(checks, 'zset') end
if terminal and session ~= '' then table.insert(checks, p..':session:'..session); table.insert(checks, 'set') end
if ARGV[8] ~= '' then table.insert(checks, p..':stats'); table.insert(checks, 'hash') end
if ARGV[12] ~= '' then table.insert(checks, p..':queue'); table.insert(checks, 'stream') end
if terminal then table.insert(checks, p..':workers'); table.insert(checks, 'hash') end
local dead = terminal and ARGV[13] ~= ''
if dead then table.insert(checks, p..':dead'); table.insert(checks, 'list') end
bad = foreign(checks)
if bad then return bad end
local ikey = p..':inflight:'..key
if terminal then
  local cur
  cur, bad = touch(ikey, 'string', 'GET', ikey)
  if bad then return bad end
  -- The first write.
  local _
  _, bad = touch(p..':finished', 'zset', 'ZADD', p..':finished', ARGV[7], ref)
  if bad then return bad end
  if cur == ref then redis.call('DEL', ikey) end
end
if ARGV[10] ~= '' then
  local vkey = p..':value:'..key
  redis.call('HSET', vkey, 'ref', ref, 'v', ARGV[10])
  redis.call('PEXPIRE', vkey, ARGV[11])
end
redis.call('HSET', t, 'status', to, 'info', ARGV[5])
if dequeue then redis.call('ZREM', p..':pending', f[3] or '') end
if terminal then
  redis.call('PEXPIRE', t, ARGV[6])
  -- The output log lives and dies with its record (`ocap`: `output_append` wrote one; most tasks write none).
  local out = f[8] and p..':out:'..ref
  if out then redis.call('PEXPIRE', out, ARGV[6]) end
  if f[6] then redis.call('ZREM', p..':leases', ref) end
  -- A question asked or answered (`respond` writes the answer and `answered` together).
  if f[9] or f[10] then redis.call('HDEL', t, 'ask', 'answer', 'answered') end
  -- What the record now weighs as `trim` weighs it, its output log included: the bound that lets `trim` skip its
  -- scan. The log was counted as it was written too, but a scan since then reset that count and weighed finished
  -- records only, so it is counted again here (twice at most, which only brings a scan sooner). `pcall`: a key
  -- of another type there is no reason to stop half-way.
  local w = 512 + string.len(ARGV[5]) + redis.call('HSTRLEN', t, 'spec')
  if out then
    local olen = redis.pcall('STRLEN', out)
    if type(olen) == 'number' then w = w + olen end
  end
  redis.call('HINCRBY', p..':workers', 'trim_added', w)
  if session ~= '' then
    -- The session's set lasts as long as its longest-lived record.
    local skey = p..':session:'..session
    if redis.call('PTTL', skey) < tonumber(ARGV[6]) then redis.call('PEXPIRE', skey, ARGV[6]) end
  end
end
if ARGV[8] ~= '' then redis.call('HINCRBY', p..':stats', ARGV[8], 1) end
if dead then
  redis.call('LPUSH', p..':dead', ref)
  redis.call('LTRIM', p..':dead', 0, 9999)
end
if ARGV[12] ~= '' then
  redis.call('XACK', p..':queue', 'workers', ARGV[12])
  redis.call('XDEL', p..':queue', ARGV[12])
end
-- At most 4 KiB of record and value: every process receives every event; a larger value is read by its waiter.
if terminal and f[7] and string.len(ARGV[5]) + string.len(ARGV[10]) <= 4096 then
  redis.call('PUBLISH', p..':events', ref..' '..to..' '..f[7]..' '..string.len(ARGV[5])..' '..ARGV[5]..ARGV[10])
else
  redis.call('PUBLISH', p..':events', ref..' '..to)
end
return 'ok'
";

/// `claim(prefix, ref, owner, info, redelivered, max_deliveries)`: a pending task (or, on redelivery, one whose
/// worker was lost) becomes this worker's and `processing` with record `info` (its event made here). →
/// `{'ok', n}` | `{'dead', n}` (delivered `n` times already: fail it) | `{status}`.
const CLAIM: &str = r"
local p = ARGV[1]
local t = p..':task:'..ARGV[2]
local f, bad = touch(t, 'hash', 'HMGET', t, 'status', 'deliveries', 'qm')
if bad then return bad end
local st = f[1]
if not st then return {'missing'} end
if st ~= 'pending' and not ((st == 'processing' or st == 'input_required') and ARGV[5] == '1') then return {st} end
local n = tonumber(f[2] or '0') + 1
if n > tonumber(ARGV[6]) then return {'dead', n - 1} end
bad = foreign({p..':stats', 'hash'})
if bad then return bad end
-- The first write.
local _
_, bad = touch(p..':pending', 'zset', 'ZREM', p..':pending', f[3] or '')
if bad then return bad end
redis.call('HSET', t, 'status', 'processing', 'info', ARGV[4], 'owner', ARGV[3], 'deliveries', n)
-- A question a lost worker asked went with it: the task runs again from the start. (A pending task has none: a
-- task's end, and a hand back, delete them.)
if st ~= 'pending' then redis.call('HDEL', t, 'ask', 'answer', 'answered') end
redis.call('HINCRBY', p..':stats', 'executions', 1)
redis.call('PUBLISH', p..':events', ARGV[2]..' processing')
return {'ok', n}
";

/// `take(prefix, consumer, count, claim, started, max_deliveries)`: reads up to `count` new entries of the stream for
/// this worker (`XREADGROUP ... >`, not blocking: a script cannot block) and, with `claim` (`1`: a slot is free in
/// that process, nothing queued there; the worker now always passes `1`, and reads with a plain `XREADGROUP`
/// when it would pass `0`), claims the first one's task in the same step, as `claim` would: a pending
/// task becomes this worker's and `processing`, its record the one in Redis (which the entry carries when the
/// record's `msg` names the entry) with `"status":"processing"` and
/// `"started_at":<started>` written in (the record's first `"status":` and `"started_at":` keys are its own:
/// every key before them holds a string or a progress report, and a quote in a string is escaped). A task that is
/// not pending, a record of another shape, a delivery past `max_deliveries`: that entry is not claimed here (the
/// worker claims it the long way, which says why). A worker woken by `P:queued` (or every second) takes, instead of
/// a blocking read and then a claim: one round trip fewer (#17 §3). A worker that holds tasks already (no claim)
/// reads with a plain `XREADGROUP` instead: the script would pay for every byte of the entries it reads. → `{id, ref, 'ok', spec, record, ...}` for
/// the claimed entry, `{id, ref, '', spec|'', record|'', ...}` (the entry's own fields) for the others; `{'nogroup'}`
/// when the consumer group is not there.
const TAKE: &str = r#"
local p = ARGV[1]
local bad = foreign({p..':queue', 'stream', p..':stats', 'hash', p..':pending', 'zset'})
if bad then return bad end
local r = redis.pcall('XREADGROUP', 'GROUP', 'workers', ARGV[2], 'COUNT', ARGV[3], 'STREAMS', p..':queue', '>')
if type(r) == 'table' and r.err then
  if string.find(r.err, 'NOGROUP', 1, true) then return {'nogroup'} end
  return r
end
local out = {}
if not r then return out end
local claim = ARGV[4] == '1'
for _, e in ipairs(r[1][2]) do
  local id, kv = e[1], e[2]
  local fields = {}
  for i = 1, #kv, 2 do fields[kv[i]] = kv[i + 1] end
  local ref = fields['ref'] or ''
  local claimed = false
  if claim and ref ~= '' then
    claim = false
    local t = p..':task:'..ref
    local f = redis.pcall('HMGET', t, 'status', 'deliveries', 'qm', 'msg')
    local info, spec
    if type(f) == 'table' and not f.err and f[1] == 'pending' then
      -- The entry's own record and spec, when the record names this entry: `submit` and `retry` write both with
      -- the entry in one step, and nobody writes a pending record until its claim (every byte a script reads
      -- costs the server; #17 §3). Else (a handed-back task's entry carries no record) they are read.
      info, spec = fields['info'], fields['spec']
      if f[4] ~= id or not info or not spec then
        local g = redis.call('HMGET', t, 'info', 'spec')
        info, spec = g[1], g[2]
      end
    end
    if info and spec then
      local n = (tonumber(f[2] or '0') or 0) + 1
      local a = string.find(info, '"status":"pending"', 1, true)
      local b = string.find(info, '"started_at":', 1, true)
      if n <= tonumber(ARGV[6]) and a and b and a < b then
        -- One new string: the parts between the two values, and the two new values.
        if string.sub(info, b + 13, b + 16) == 'null' then
          info = string.sub(info, 1, a - 1)..'"status":"processing"'..string.sub(info, a + 18, b + 12)..ARGV[5]..
            string.sub(info, b + 17)
        else
          info = string.sub(info, 1, a - 1)..'"status":"processing"'..string.sub(info, a + 18)
        end
        redis.call('ZREM', p..':pending', f[3] or '')
        redis.call('HSET', t, 'status', 'processing', 'info', info, 'owner', ARGV[2], 'deliveries', n)
        -- (A pending task has no question: see `claim`.)
        redis.call('HINCRBY', p..':stats', 'executions', 1)
        redis.call('PUBLISH', p..':events', ref..' processing')
        table.insert(out, id); table.insert(out, ref); table.insert(out, 'ok')
        table.insert(out, spec); table.insert(out, info)
        claimed = true
      end
    end
  end
  if not claimed then
    table.insert(out, id); table.insert(out, ref); table.insert(out, '')
    table.insert(out, fields['spec'] or ''); table.insert(out, fields['info'] or '')
  end
end
return out
"#;

/// `lookup(prefix, key)` → the value JSON for a cache key, when its task's record is there and complete (one
/// lifetime: a value whose record is gone is not a hit), else nil.
const LOOKUP: &str = r"
local p = ARGV[1]
local h = redis.call('HMGET', p..':value:'..ARGV[2], 'ref', 'v')
if not h[2] or not h[1] then return false end
if redis.call('HGET', p..':task:'..h[1], 'status') ~= 'complete' then return false end
return h[2]
";

/// `infos(prefix, ref1, ref2, ...)` → `{ref, info, rank, ...}` for the records that are there: a complete one only
/// while its value is (one lifetime), a pending one with its queue rank (`''` otherwise). A key under the prefix
/// that is not refcache's costs itself alone: it answers `{ref, '!<type>', ''}` (the wrong type) or
/// `{ref, '!', ''}` (a hash without a record), and the caller leaves it out.
const INFOS: &str = r"
local p = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local ref = ARGV[i]
  local t = p..':task:'..ref
  local ty = redis.call('TYPE', t)['ok']
  if ty == 'hash' then
    local f = redis.call('HMGET', t, 'status', 'info', 'qm', 'key')
    if f[1] and f[2] then
      local keep = true
      local rank = ''
      if f[1] == 'complete' then
        local owner = f[4] and redis.pcall('HGET', p..':value:'..f[4], 'ref')
        keep = owner == ref
      elseif f[1] == 'pending' and f[3] then
        local r = redis.pcall('ZRANK', p..':pending', f[3])
        if type(r) == 'number' then rank = tostring(r) end
      end
      if keep then
        table.insert(out, ref); table.insert(out, f[2]); table.insert(out, rank)
      end
    elseif f[1] or f[2] then
      table.insert(out, ref); table.insert(out, '!'); table.insert(out, '')
    end
  elseif ty ~= 'none' then
    table.insert(out, ref); table.insert(out, '!'..ty); table.insert(out, '')
  end
end
return out
";

/// `get(prefix, ref)` → `{info, value|nil, queue_rank|nil}`, or nil when unknown (or complete with its value gone).
const GET: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local f = redis.call('HMGET', p..':task:'..ref, 'status', 'info', 'key', 'qm')
if not f[1] then return false end
if not f[2] then
  return redis.error_reply('WRONGTYPE refcache: the hash '..p..':task:'..ref..' has no info field: it is not a refcache task record')
end
local v = false
local rank = false
if f[1] == 'complete' then
  local h = redis.call('HMGET', p..':value:'..f[3], 'ref', 'v')
  if h[1] ~= ref then return false end
  v = h[2]
elseif f[1] == 'pending' then
  rank = redis.call('ZRANK', p..':pending', f[4])
end
return {f[2], v, rank}
";

/// `record(prefix, ref)` → `{info, queue_rank|nil}`, or nil when unknown (or complete with its value gone): the
/// record alone, never the value, so that access is decided before a value is read (#15 §4).
const RECORD: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local f = redis.call('HMGET', p..':task:'..ref, 'status', 'info', 'key', 'qm')
if not f[1] then return false end
if not f[2] then
  return redis.error_reply('WRONGTYPE refcache: the hash '..p..':task:'..ref..' has no info field: it is not a refcache task record')
end
local rank = false
if f[1] == 'complete' then
  if redis.call('HGET', p..':value:'..f[3], 'ref') ~= ref then return false end
elseif f[1] == 'pending' then
  rank = redis.call('ZRANK', p..':pending', f[4])
end
return {f[2], rank}
";

/// `retry(prefix, ref, info, event, workers, priority_hex, spec)`: a failed task becomes pending again under its ref id.
/// → `{'ok'}` | `{'missing'}` | `{'not', status}` | `{'running', other_ref}`.
const RETRY: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local t = p..':task:'..ref
local bad = foreign({t, 'hash'})
if bad then return bad end
local f = redis.call('HMGET', t, 'status', 'key')
if not f[1] then return {'missing'} end
bad = foreign({p..':inflight:'..(f[2] or ''), 'string', p..':seq', 'string', p..':pending', 'zset',
  p..':finished', 'zset', p..':stats', 'hash', p..':queue', 'stream'})
if bad then return bad end
if f[1] ~= 'failed' then return {'not', f[1]} end
local ikey = p..':inflight:'..f[2]
local cur = redis.call('GET', ikey)
if cur and cur ~= ref then
  local st = redis.call('HGET', p..':task:'..cur, 'status')
  if st == 'pending' or st == 'processing' or st == 'input_required' then return {'running', cur} end
end
local seq = redis.call('INCR', p..':seq')
local qm = ARGV[6]..string.format('%016x', seq)..':'..ref
redis.call('HSET', t, 'status', 'pending', 'info', ARGV[3], 'qm', qm, 'deliveries', 0)
-- The first end's event showed the token: a retried task's end comes as a plain event.
redis.call('HDEL', t, 'owner', 'tok')
-- Run here (`local`): the maintenance loop gives it a lease, which its end takes back.
if ARGV[5] ~= '1' then redis.call('HSET', t, 'leased', 1) end
redis.call('PERSIST', t)
redis.call('PERSIST', p..':out:'..ref)
redis.call('SET', ikey, ref)
redis.call('ZADD', p..':pending', 0, qm)
redis.call('ZREM', p..':finished', ref)
redis.call('HINCRBY', p..':stats', 'retries', 1)
if ARGV[5] == '1' then
  local id = redis.call('XADD', p..':queue', '*', 'ref', ref, 'spec', ARGV[7], 'info', ARGV[3])
  redis.call('HSET', t, 'msg', id)
  redis.call('PUBLISH', p..':queued', '1')
end
redis.call('PUBLISH', p..':events', ARGV[4])
return {'ok'}
";

/// `delete(prefix, ref, event)`: drops the record, its value (if still this ref's) and its index entries, and
/// tells every process (which stops the work, if it runs). → 1 | 0.
const DELETE: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local t = p..':task:'..ref
local f = redis.call('HMGET', t, 'status', 'key', 'qm', 'session')
if not f[1] then return 0 end
local ikey = p..':inflight:'..f[2]
if redis.call('GET', ikey) == ref then redis.call('DEL', ikey) end
local vkey = p..':value:'..f[2]
if redis.call('HGET', vkey, 'ref') == ref then redis.call('DEL', vkey) end
redis.call('DEL', t, p..':out:'..ref)
if f[3] then redis.call('ZREM', p..':pending', f[3]) end
redis.call('ZREM', p..':index', ref)
redis.call('ZREM', p..':finished', ref)
redis.call('ZREM', p..':leases', ref)
if f[4] and f[4] ~= '' then redis.call('SREM', p..':session:'..f[4], ref) end
redis.call('PUBLISH', p..':events', ARGV[3])
return 1
";

/// `cleanup(prefix, cutoff_ms)`: drops the records of tasks finished before the cutoff, each with its value (if
/// still its ref's: one lifetime), and tells every process (near caches drop the value). → `{ref1, key1, ref2,
/// key2, ...}` of the records dropped.
const CLEANUP: &str = r"
local p = ARGV[1]
local refs = redis.call('ZRANGEBYSCORE', p..':finished', '-inf', ARGV[2], 'LIMIT', 0, 10000)
local out = {}
for _, ref in ipairs(refs) do
  local t = p..':task:'..ref
  local f = redis.call('HMGET', t, 'session', 'key')
  if redis.call('DEL', t) == 1 then
    redis.call('DEL', p..':out:'..ref)
    if f[2] then
      local vkey = p..':value:'..f[2]
      if redis.call('HGET', vkey, 'ref') == ref then redis.call('DEL', vkey) end
      table.insert(out, ref)
      table.insert(out, f[2])
      redis.call('PUBLISH', p..':events', ref..' drop '..f[2])
    end
  end
  redis.call('ZREM', p..':index', ref)
  redis.call('ZREM', p..':finished', ref)
  if f[1] and f[1] ~= '' then redis.call('SREM', p..':session:'..f[1], ref) end
end
return out
";

/// `renew(prefix, owner, msg1, ref1, ...)`: resets the idle time of the stream entries this worker holds (its
/// lease), except those of tasks another worker has taken over. → how many.
const RENEW: &str = r"
local p = ARGV[1]
local ids = {}
for i = 3, #ARGV, 2 do
  local owner = redis.call('HGET', p..':task:'..ARGV[i + 1], 'owner')
  if owner == false or owner == ARGV[2] then table.insert(ids, ARGV[i]) end
end
local n = #ids
if n > 0 then
  table.insert(ids, 'JUSTID')
  redis.call('XCLAIM', p..':queue', 'workers', ARGV[2], 0, unpack(ids))
end
return n
";

/// `ack(prefix, msg)`: the stream entry is done with: acknowledged and deleted.
const ACK: &str = r"
redis.call('XACK', ARGV[1]..':queue', 'workers', ARGV[2])
redis.call('XDEL', ARGV[1]..':queue', ARGV[2])
return 1
";

/// `output_append(prefix, ref, text, skipped, cap, event)`: appends a batch of a task's output to its log
/// `P:out:<ref>` (a string: `APPEND`, never a read-modify-write of the record). `skipped` bytes came before `text`
/// and were dropped by the writer (its queue overflowed the cap): then nothing older stays. The record's `obase`
/// is the offset of the string's first byte and `ocap` the cap; readers see the newest `ocap` bytes, and the string
/// is cut back to them once it holds twice the cap (so an append costs `O(text)` amortized). The log takes its
/// record's TTL. Nothing is written for a record that is gone (deleted, expired). → the end offset | -1.
const OUTPUT_APPEND: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local t = p..':task:'..ref
local o = p..':out:'..ref
local bad = foreign({t, 'hash', o, 'string', p..':workers', 'hash'})
if bad then return bad end
if redis.call('EXISTS', t) == 0 then return -1 end
-- Counted towards `trim`'s bound as written (a log cut back later weighs less, never more).
redis.call('HINCRBY', p..':workers', 'trim_added', string.len(ARGV[3]))
local cap = tonumber(ARGV[5])
local skipped = tonumber(ARGV[4])
local base = tonumber(redis.call('HGET', t, 'obase') or '0')
local len = redis.call('STRLEN', o)
if skipped > 0 then
  base = base + len + skipped
  redis.call('SET', o, ARGV[3])
  len = string.len(ARGV[3])
else
  len = redis.call('APPEND', o, ARGV[3])
end
if len > 2 * cap then
  local keep = redis.call('GETRANGE', o, len - cap, -1)
  redis.call('SET', o, keep)
  base = base + len - cap
  len = cap
end
redis.call('HSET', t, 'obase', base, 'ocap', cap)
local ttl = redis.call('PTTL', t)
if ttl > 0 then redis.call('PEXPIRE', o, ttl) end
redis.call('PUBLISH', p..':events', ARGV[6])
return base + len
";

/// `output_read(prefix, ref, from, max)` → `{status, offset, dropped, end, bytes}`: at most `max` bytes (at least
/// 4, so a character fits) of the log from `from`, or from its oldest byte held (`dropped` saying how many before
/// it went); nil when the record is unknown (or complete with its value gone: one lifetime).
const OUTPUT_READ: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local t = p..':task:'..ref
local o = p..':out:'..ref
local f = redis.call('HMGET', t, 'status', 'key', 'obase', 'ocap')
if not f[1] then return false end
if f[1] == 'complete' and redis.call('HGET', p..':value:'..(f[2] or ''), 'ref') ~= ref then return false end
local base = tonumber(f[3] or '0')
local cap = tonumber(f[4] or '0')
local len = redis.call('STRLEN', o)
local e = base + len
local held = base
if cap > 0 and len > cap then held = e - cap end
local from = tonumber(ARGV[3])
local begin = math.min(from, e)
local dropped = 0
if from < held then
  begin = held
  dropped = held - from
end
local take = math.min(math.max(tonumber(ARGV[4]), 4), e - begin)
local bytes = ''
if take > 0 then bytes = redis.call('GETRANGE', o, begin - base, begin - base + take - 1) end
return {f[1], begin, dropped, e, bytes}
";

/// `ask(prefix, ref, owner, key, info, event)`: a processing task that is still this worker's asks question `key`:
/// its status becomes `input_required` with the question in `info`, and `ask` names the key an answer must
/// carry. → `ok` | `missing` | `stolen` | the status it found.
const ASK: &str = r"
local p = ARGV[1]
local t = p..':task:'..ARGV[2]
local bad = foreign({t, 'hash'})
if bad then return bad end
local f = redis.call('HMGET', t, 'status', 'owner')
if not f[1] then return 'missing' end
if f[1] ~= 'processing' then return f[1] end
if f[2] ~= ARGV[3] then return 'stolen' end
redis.call('HSET', t, 'status', 'input_required', 'info', ARGV[5], 'ask', ARGV[4])
redis.call('HDEL', t, 'answer', 'answered')
redis.call('PUBLISH', p..':events', ARGV[6])
return 'ok'
";

/// `respond(prefix, ref, key, seen_info, info, answer, event)`: from any replica, the answer to question `key`,
/// taken only while the task waits on that key and its record is still the one the caller read (`seen_info`):
/// the status goes back to `processing` with `info`, and the answer waits in the record for the worker, which an
/// event wakes. → `ok` | `missing` | `changed` (read again) | the status it found (not waiting on `key`).
const RESPOND: &str = r"
local p = ARGV[1]
local t = p..':task:'..ARGV[2]
local bad = foreign({t, 'hash'})
if bad then return bad end
local f = redis.call('HMGET', t, 'status', 'ask', 'info')
if not f[1] then return 'missing' end
if f[1] ~= 'input_required' or f[2] ~= ARGV[3] then return f[1] end
if f[3] ~= ARGV[4] then return 'changed' end
redis.call('HSET', t, 'status', 'processing', 'info', ARGV[5], 'answer', ARGV[6], 'answered', ARGV[3])
redis.call('HDEL', t, 'ask')
redis.call('PUBLISH', p..':events', ARGV[7])
return 'ok'
";

/// `take_answer(prefix, ref, key)` → the answer to question `key` (and it leaves the record), or nil.
const TAKE_ANSWER: &str = r"
local t = ARGV[1]..':task:'..ARGV[2]
local f = redis.call('HMGET', t, 'answered', 'answer')
if f[1] ~= ARGV[3] or not f[2] then return false end
redis.call('HDEL', t, 'answer', 'answered')
return f[2]
";

/// `hand_back(prefix, ref, owner, info, event, msg)`: a worker shutting down gives a task it holds back to the
/// stream, for another worker: one it runs (still its own, `processing` or `input_required`) becomes `pending`
/// again with `info` and its place in the queue, and the delivery does not count against `max_deliveries`; one it
/// only queued stays `pending`. Either way a new stream entry carries it, and this worker's entry `msg` is
/// acknowledged and deleted in the same step. → `ok` | `missing` | the status it found (finished, or another's).
const HAND_BACK: &str = r"
local p = ARGV[1]
local ref = ARGV[2]
local t = p..':task:'..ref
local bad = foreign({t, 'hash', p..':pending', 'zset', p..':queue', 'stream'})
if bad then return bad end
local f = redis.call('HMGET', t, 'status', 'owner', 'qm', 'spec', 'deliveries')
if not f[1] then return 'missing' end
local mine = (f[1] == 'processing' or f[1] == 'input_required') and f[2] == ARGV[3]
if f[1] ~= 'pending' and not mine then return f[1] end
if not f[4] then return 'missing' end
if mine then
  redis.call('HSET', t, 'status', 'pending', 'info', ARGV[4])
  redis.call('HDEL', t, 'owner', 'ask', 'answer', 'answered')
  local n = tonumber(f[5] or '0')
  if n > 0 then redis.call('HSET', t, 'deliveries', n - 1) end
  if f[3] then redis.call('ZADD', p..':pending', 0, f[3]) end
  redis.call('PUBLISH', p..':events', ARGV[5])
end
local id = redis.call('XADD', p..':queue', '*', 'ref', ref, 'spec', f[4])
redis.call('HSET', t, 'msg', id)
redis.call('PUBLISH', p..':queued', '1')
redis.call('XACK', p..':queue', 'workers', ARGV[6])
redis.call('XDEL', p..':queue', ARGV[6])
return 'ok'
";

/// `weigh(prefix, limit)` → `{record_bytes, value_bytes, scanned, finished}`: what the newest `limit` entries of
/// the `finished` index hold in Redis: each record still there a fixed 512 bytes, plus its record JSON, its spec
/// with its arguments, and its output log; each complete one's value a fixed 256 bytes plus its JSON (the
/// in-process backend's fixed costs). `scanned` entries of `finished` (an entry whose record expired weighs 0).
/// Read-only, computed when asked: a record that expires takes its bytes with it.
const WEIGH: &str = r"
local p = ARGV[1]
local refs = redis.call('ZREVRANGE', p..':finished', 0, tonumber(ARGV[2]) - 1)
local records = 0
local values = 0
for _, ref in ipairs(refs) do
  local t = p..':task:'..ref
  if redis.call('TYPE', t)['ok'] == 'hash' then
    local f = redis.call('HMGET', t, 'status', 'key')
    if f[1] then
      records = records + 512 + redis.call('HSTRLEN', t, 'info') + redis.call('HSTRLEN', t, 'spec')
      local o = p..':out:'..ref
      if redis.call('TYPE', o)['ok'] == 'string' then records = records + redis.call('STRLEN', o) end
      if f[1] == 'complete' and f[2] then
        local v = p..':value:'..f[2]
        if redis.call('TYPE', v)['ok'] == 'hash' and redis.call('HGET', v, 'ref') == ref then
          values = values + 256 + redis.call('HSTRLEN', v, 'v')
        end
      end
    end
  end
end
return {records, values, #refs, redis.call('ZCARD', p..':finished')}
";

/// `trim(prefix, max_bytes, limit, period_ms)`: keeps the finished records among the newest `limit` of `P:finished` within
/// `max_bytes`, weighed as `weigh` weighs them, newest first; the older ones past the bound are dropped as
/// `cleanup` drops them (their value and output log with them: one lifetime) and every process is told. Every
/// process calls it every `period_ms`, but one scan per period is enough for the whole prefix: it scans only when
/// no process has in the last half period (by the server's clock, the time in `P:workers`' field `trim`, which no
/// gauge is named), so that N processes cost at most two scans per period, not N. And it scans only when the
/// records could be over the bound: `P:workers`' `trim_base` (what the last scan kept) plus `trim_added` (what the
/// terminal `transition` and `output_append` add as they write: each record's weight as this scan weighs it, and
/// each batch of output) is never less than what a scan would weigh, so while it is within `max_bytes` a scan
/// would drop nothing and is skipped (an O(1) check, not up to `limit` records read). → `{ref1, key1, ref2, key2,
/// ...}` of the records dropped.
const TRIM: &str = r"
local p = ARGV[1]
local bad = foreign({p..':index', 'zset', p..':finished', 'zset', p..':workers', 'hash'})
if bad then return bad end
local max = tonumber(ARGV[2])
local g = redis.call('HMGET', p..':workers', 'trim', 'trim_base', 'trim_added')
local base = tonumber(g[2] or '')
local added = tonumber(g[3] or '0') or 0
-- What the last scan kept plus what every record that finished since, and every output written since, weighs:
-- no less than what a scan would weigh now (a record that expired or was deleted since only weighs less). Within
-- the bound, a scan would drop nothing.
if base and base + added <= max then return {} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local last = tonumber(g[1] or '0') or 0
if now - last < tonumber(ARGV[4]) / 2 then return {} end
local refs = redis.call('ZREVRANGE', p..':finished', 0, tonumber(ARGV[3]) - 1)
local total = 0
local kept = 0
local out = {}
for _, ref in ipairs(refs) do
  local t = p..':task:'..ref
  if redis.call('TYPE', t)['ok'] == 'hash' then
    local f = redis.call('HMGET', t, 'status', 'key', 'session')
    if f[1] == 'complete' or f[1] == 'failed' or f[1] == 'cancelled' then
      local o = p..':out:'..ref
      local w = 512 + redis.call('HSTRLEN', t, 'info') + redis.call('HSTRLEN', t, 'spec')
      if redis.call('TYPE', o)['ok'] == 'string' then w = w + redis.call('STRLEN', o) end
      total = total + w
      if total <= max then kept = kept + w end
      if total > max then
        redis.call('DEL', t, o)
        if f[2] then
          local vkey = p..':value:'..f[2]
          if redis.call('TYPE', vkey)['ok'] == 'hash' and redis.call('HGET', vkey, 'ref') == ref then
            redis.call('DEL', vkey)
          end
          table.insert(out, ref)
          table.insert(out, f[2])
          redis.call('PUBLISH', p..':events', ref..' drop '..f[2])
        end
        redis.call('ZREM', p..':index', ref)
        redis.call('ZREM', p..':finished', ref)
        if f[3] and f[3] ~= '' and redis.call('TYPE', p..':session:'..f[3])['ok'] == 'set' then
          redis.call('SREM', p..':session:'..f[3], ref)
        end
      end
    end
  end
end
redis.call('HSET', p..':workers', 'trim', now, 'trim_base', kept, 'trim_added', 0)
return out
";

/// One script, sent as `EVALSHA <sha> 0 <args>` (and loaded with `SCRIPT LOAD` when Redis answers `NOSCRIPT`: the
/// first call, and after a restart or a `SCRIPT FLUSH`). `redis::Script` does the same, but each of its arguments is
/// a buffer of its own, copied again into the command it sends: a script call of a task's path carries the record
/// JSON and up to a dozen arguments, and an invocation here writes them once, into the command itself.
pub(crate) struct Script {
    code: String,
    hash: String,
}

impl Script {
    fn new(code: &str) -> Self {
        let hash = redis::Script::new(code).get_hash().to_owned();
        Self {
            code: code.to_owned(),
            hash,
        }
    }

    /// The SHA1 of its code, as `EVALSHA` names it.
    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// A call of the script with no arguments yet.
    pub(crate) fn prepare_invoke(&self) -> Invocation<'_> {
        // Room for a task path's arguments (a record, a spec) without growing.
        let mut cmd = Cmd::with_capacity(16, 1024);
        cmd.arg("EVALSHA").arg(&self.hash).arg(0);
        Invocation { script: self, cmd }
    }

    /// A call of the script with its first argument.
    pub(crate) fn arg<T: ToRedisArgs>(&self, arg: T) -> Invocation<'_> {
        let mut invocation = self.prepare_invoke();
        invocation.arg(arg);
        invocation
    }
}

/// A call of a [`Script`], its arguments written into the `EVALSHA` command as they are added.
pub(crate) struct Invocation<'a> {
    script: &'a Script,
    cmd: Cmd,
}

impl Invocation<'_> {
    /// Adds an argument (`ARGV[i]`).
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Runs the script, loading it first if Redis does not have it.
    pub(crate) async fn invoke_async<T: FromRedisValue>(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<T> {
        match self.cmd.query_async(con).await {
            Err(err) if err.code() == Some("NOSCRIPT") => {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(&self.script.code)
                    .query_async(con)
                    .await?;
                self.cmd.query_async(con).await
            }
            answer => answer,
        }
    }
}

/// The loaded scripts (each is sent by its SHA, and loaded again after a Redis restart).
pub(crate) struct Scripts {
    pub(crate) submit: Script,
    pub(crate) transition: Script,
    pub(crate) claim: Script,
    pub(crate) take: Script,
    pub(crate) get: Script,
    pub(crate) record: Script,
    pub(crate) lookup: Script,
    pub(crate) infos: Script,
    pub(crate) retry: Script,
    pub(crate) delete: Script,
    pub(crate) cleanup: Script,
    pub(crate) renew: Script,
    pub(crate) ack: Script,
    pub(crate) output_append: Script,
    pub(crate) output_read: Script,
    pub(crate) ask: Script,
    pub(crate) respond: Script,
    pub(crate) take_answer: Script,
    pub(crate) hand_back: Script,
    pub(crate) weigh: Script,
    pub(crate) trim: Script,
}

/// A script that writes, with [`GUARD`] in front.
fn guarded(body: &str) -> Script {
    Script::new(&format!("{GUARD}{body}"))
}

impl Scripts {
    /// Every script with its name (as this file names it), for telling them apart in `MONITOR` and `SLOWLOG`.
    pub(crate) fn named(&self) -> [(&'static str, &Script); 21] {
        [
            ("submit", &self.submit),
            ("transition", &self.transition),
            ("claim", &self.claim),
            ("take", &self.take),
            ("get", &self.get),
            ("record", &self.record),
            ("lookup", &self.lookup),
            ("infos", &self.infos),
            ("retry", &self.retry),
            ("delete", &self.delete),
            ("cleanup", &self.cleanup),
            ("renew", &self.renew),
            ("ack", &self.ack),
            ("output_append", &self.output_append),
            ("output_read", &self.output_read),
            ("ask", &self.ask),
            ("respond", &self.respond),
            ("take_answer", &self.take_answer),
            ("hand_back", &self.hand_back),
            ("weigh", &self.weigh),
            ("trim", &self.trim),
        ]
    }

    pub(crate) fn new() -> Self {
        Self {
            submit: guarded(SUBMIT),
            transition: guarded(TRANSITION),
            claim: guarded(CLAIM),
            take: guarded(TAKE),
            get: Script::new(GET),
            record: Script::new(RECORD),
            lookup: Script::new(LOOKUP),
            infos: Script::new(INFOS),
            retry: guarded(RETRY),
            delete: Script::new(DELETE),
            cleanup: Script::new(CLEANUP),
            renew: Script::new(RENEW),
            ack: Script::new(ACK),
            output_append: guarded(OUTPUT_APPEND),
            output_read: Script::new(OUTPUT_READ),
            ask: guarded(ASK),
            respond: guarded(RESPOND),
            take_answer: Script::new(TAKE_ANSWER),
            hand_back: guarded(HAND_BACK),
            weigh: Script::new(WEIGH),
            trim: guarded(TRIM),
        }
    }
}
