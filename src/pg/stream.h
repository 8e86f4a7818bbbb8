// The follower of one PostgreSQL database's change stream, for one cache: a thread that
// holds a `replication=database` libpq connection with a TEMPORARY logical slot (pgoutput)
// and a plain connection, and turns every committed transaction into the tags the engine
// moves for its own writes (feed.h). Linked by the PostgreSQL adapters (libpq).
//
// Thread safety: make_follower may be called from any thread; the returned feed is
// thread-safe (feed.h). The follower's own state belongs to its thread.
//
// Lifecycle: the feed starts down. The thread connects, creates the slot (this waits for
// every open write transaction), moves the database tag, starts streaming and marks the
// feed up. Any loss (connection error, server restart, slot gone, another system
// identifier or timeline, a status reply missing for `silence_limit`, a sync() timeout,
// a publication that no longer carries every change of every table: checked at each new
// slot and every second) marks it down and moves the database tag, then it reconnects
// with backoff: a new slot, the database tag again, positions counted from the slot's
// consistent point, up. While down, the engine serves and stores nothing of the database.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "pg/feed.h"
#include "pg/pgoutput.h"

namespace qcache::pg {

// What make_follower checks with plain queries before streaming; throws
// std::runtime_error naming what is missing and how to fix it.
std::shared_ptr<feed> make_follower(const follow_request& r);

// The stream is declared lost when nothing (data or keepalive) arrived for this long,
// although a reply is requested every second.
inline constexpr std::chrono::milliseconds silence_limit{5000};

// The tags one row change moves (exposed for tests): `rel` is the last Relation message
// for the change's relid. Unknown relations and anything not understood give
// tags::database (a flush of the database).
struct relation_info {
  pgoutput::message rel;  // kind::relation
};
void change_tags(const pgoutput::message& change, const pgoutput::message* rel, stream_schema& s,
                 std::vector<tags::tag>& out);

}  // namespace qcache::pg
