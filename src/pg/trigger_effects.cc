// Trigger effects of a write. Invariants:
//  * Every relation a fired body may change is in `written` (with its partitions and
//    inheritance relatives, a view's base tables, FK cascade targets and, for TRUNCATE
//    CASCADE, referencing tables), and fire_triggers ran for it with the events that change
//    may fire; or `flush_reason` is set.
//  * fire_triggers runs the triggers of a relation at most once per event bit, so cycles
//    (a trigger on a writing b, one on b writing a) end.
#include "pg/trigger_effects.h"

#include <algorithm>

namespace qcache::pg {
namespace {

std::string rel_name(const relation& r) { return r.schema + "." + r.name; }

void touch(const snapshot& cat, const std::vector<std::string>& schemas, const relation& x,
           unsigned events, trigger_effects& fx, int depth);

// `x` and its partitions / inheritance relatives change with `events`.
void touch_family(const snapshot& cat, const std::vector<std::string>& schemas, const relation& x,
                  unsigned events, trigger_effects& fx, int depth) {
  touch(cat, schemas, x, events, fx, depth);
  for (std::uint32_t f : x.family) {
    if (const relation* y = cat.by_oid(f))
      touch(cat, schemas, *y, closure_events(events), fx, depth);
    else
      fx.flush("unknown relation in the closure of a trigger body's write");
  }
}

void touch(const snapshot& cat, const std::vector<std::string>& schemas, const relation& x,
           unsigned events, trigger_effects& fx, int depth) {
  if (x.system || x.kind == 'S' || x.kind == 'f') fx.flush("a trigger body writes " + rel_name(x));
  if (std::find(fx.written.begin(), fx.written.end(), &x) == fx.written.end())
    fx.written.push_back(&x);
  fire_triggers(cat, schemas, x, events, fx, depth);
}

// A statement of a fired body writes `w`: the table, and what that write spreads to.
void body_writes(const snapshot& cat, const std::vector<std::string>& schemas, const body_write& w,
                 trigger_effects& fx, int depth) {
  const relation* x = cat.resolve(w.table, schemas);
  if (!x) return fx.flush("unresolved table " + w.table.name + " in a trigger body");
  unsigned ev = events_of(w.op, w.upsert);
  // Defaults, CHECK and domain constraints, generated columns and index expressions run in
  // the body's INSERTs and UPDATEs (relation::write_code, as for the statement's own writes).
  if ((ev & (trigger_insert | trigger_update)) && x->write_code.writes)
    fx.flush("a trigger body writes " + rel_name(*x) + ", whose write code calls " +
             x->write_code.function + ", which may write");
  touch_family(cat, schemas, *x, ev, fx, depth);
  auto spread = [&](const std::vector<std::uint32_t>& oids, unsigned e) {
    for (std::uint32_t o : oids) {
      if (const relation* y = cat.by_oid(o))
        touch_family(cat, schemas, *y, e, fx, depth);
      else
        fx.flush("unknown relation in the closure of a trigger body's write");
    }
  };
  if (x->kind == 'v') spread(x->base_tables, closure_events(ev));
  spread(fk_write_targets(cat, *x, ev, nullptr), trigger_dml);
  if ((ev & trigger_truncate) && w.cascade) spread(x->referencing, trigger_truncate);
}

}  // namespace

unsigned events_of(write_op op, bool upsert) {
  switch (op) {
    case write_op::insert:
      return trigger_insert | (upsert ? trigger_update : 0u);
    case write_op::update:
      return trigger_update;
    case write_op::del:
      return trigger_delete;
    case write_op::merge:
      return trigger_dml;
    case write_op::truncate:
      return trigger_truncate;
    case write_op::copy_from:
    case write_op::select_into:
      return trigger_insert;
  }
  return trigger_dml | trigger_truncate;
}

unsigned closure_events(unsigned events) {
  return (events & trigger_truncate) | ((events & trigger_dml) ? trigger_dml : 0u);
}

std::vector<std::uint32_t> fk_write_targets(const snapshot& cat, const relation& x, unsigned events,
                                            const std::vector<std::string>* set) {
  bool del = events & trigger_delete, upd = events & trigger_update;
  if (!del && !upd) return {};
  if (set && set->empty()) set = nullptr;
  if (x.kind != 'v') {
    // BEFORE ROW UPDATE triggers (of x or, through x, of its partitions / children) may
    // assign columns the SET list does not name: a key too.
    new_row_effects before;
    std::vector<std::string> columns;
    if (upd && set) {
      before_row_effects(x, trigger_update, before);
      for (std::uint32_t f : x.family)
        if (const relation* y = cat.by_oid(f)) before_row_effects(*y, trigger_update, before);
      columns = *set;
      columns.insert(columns.end(), before.columns.begin(), before.columns.end());
    }
    return cat.fk_action_targets(x, del, upd, set && !before.all ? &columns : nullptr);
  }
  std::vector<std::uint32_t> out;
  for (std::uint32_t b : x.base_tables) {
    const relation* y = cat.by_oid(b);
    if (!y) continue;  // the caller's closure of base tables reports it
    auto t = cat.fk_action_targets(*y, del, upd, nullptr);
    out.insert(out.end(), t.begin(), t.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void fire_triggers(const snapshot& cat, const std::vector<std::string>& schemas, const relation& r,
                   unsigned events, trigger_effects& fx, int depth) {
  if (r.rules) fx.flush("rules on " + rel_name(r));
  unsigned& done = fx.fired[r.oid];
  unsigned fresh = events & ~done;
  if (!fresh) return;
  done |= fresh;
  for (const trigger& tg : r.triggers) {
    if (!tg.fires_on(fresh)) continue;
    const trigger_function& body = *tg.body;
    fx.changes_session = fx.changes_session || body.changes_session;
    fx.ran_user_code = true;
    if (!body.unknown.empty()) {
      fx.unknown_code = true;
      fx.flush("trigger " + tg.name + " on " + rel_name(r) + ": " + body.unknown);
      continue;
    }
    fx.functions.insert(fx.functions.end(), body.functions.begin(), body.functions.end());
    // Code the body's text does not name: operators, casts, views, defaults, constraints.
    for (const statement& st : body.statements)
      if (code_reach code = cat.statement_code(st, schemas); code.writes)
        fx.flush("trigger " + tg.name + " reaches " + code.function + ", which may write");
    if (body.writes.empty()) continue;
    if (depth >= kMaxTriggerDepth) {
      fx.flush("triggers nested deeper than " + std::to_string(kMaxTriggerDepth));
      continue;
    }
    for (const body_write& w : body.writes) body_writes(cat, schemas, w, fx, depth + 1);
  }
}

void before_row_effects(const relation& r, unsigned events, new_row_effects& out) {
  for (const trigger& tg : r.triggers) {
    bool before_row =
        (tg.type & trigger_row) && (tg.type & trigger_before) && !(tg.type & trigger_instead);
    if (!before_row || !tg.fires_on(events & (trigger_insert | trigger_update))) continue;
    const trigger_function& body = *tg.body;
    if (!body.unknown.empty() || body.replaces_new) {
      out.all = true;
      continue;
    }
    out.columns.insert(out.columns.end(), body.new_columns.begin(), body.new_columns.end());
  }
}

}  // namespace qcache::pg
