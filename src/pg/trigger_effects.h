// What the triggers a write may fire do to other tables and to the written row, for the
// engine's write plans (engine.cc).
//
// Thread safety: pure functions over an immutable catalog snapshot; a trigger_effects
// object belongs to one caller.
//
// A fired trigger whose function is read (plpgsql.h) writes the tables its body names, each
// as a whole (table level), and those writes fire their own triggers and spread through
// their cascades, partitions and views in turn, up to kMaxTriggerDepth levels; deeper, or
// anything unknown, asks for a flush.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "pg/analyzer.h"
#include "pg/catalog.h"

namespace qcache::pg {

inline constexpr int kMaxTriggerDepth = 4;

// The trigger events (catalog.h's trigger_* bits) a statement fires on the table it names:
// INSERT ... ON CONFLICT DO UPDATE and MERGE fire several.
unsigned events_of(write_op op, bool upsert);
// The events a write with `events` may fire on the other relations it changes (partitions
// and inheritance relatives, a view's base tables, cascade targets): any row event, because
// row movement between partitions and FK actions turn one kind into another.
unsigned closure_events(unsigned events);
// Tables FK referential actions may change when a statement with `events` (events_of)
// writes `x` (see snapshot::fk_action_targets): ON DELETE actions on deletes, ON UPDATE
// actions on updates that may set a referenced column. `set` lists the columns an UPDATE
// sets (nullptr or empty: unknown, any). Through a view, its base tables (any column).
// Sorted, unique; may contain oids the snapshot does not know.
std::vector<std::uint32_t> fk_write_targets(const snapshot& cat, const relation& x, unsigned events,
                                            const std::vector<std::string>* set);

struct trigger_effects {
  std::string flush_reason;               // non-empty: the write must flush the cache
  bool changes_session = false;           // a fired body changes session settings
  bool ran_user_code = false;             // some trigger fires: user code runs in the session
  bool unknown_code = false;              // a fired trigger cannot be read: may do anything
  std::vector<qualified_name> functions;  // called by fired bodies: the caller judges them
  std::vector<const relation*> written;   // changed by fired bodies, as whole tables
  std::unordered_map<std::uint32_t, unsigned> fired;  // relation oid -> events already fired

  void flush(std::string why) {
    if (flush_reason.empty()) flush_reason = std::move(why);
  }
};

// Adds to `fx` what the triggers of `r` that fire on `events` do (rules on `r` flush too).
// `schemas` is the writing session's current_schemas(true): trigger bodies resolve their
// table names with it.
void fire_triggers(const snapshot& cat, const std::vector<std::string>& schemas, const relation& r,
                   unsigned events, trigger_effects& fx, int depth = 0);

// The columns of `r` whose stored values BEFORE ROW triggers firing on `events` may set
// (`all`: any column, the row may be replaced).
struct new_row_effects {
  bool all = false;
  std::vector<std::string> columns;
};
void before_row_effects(const relation& r, unsigned events, new_row_effects& out);

}  // namespace qcache::pg
