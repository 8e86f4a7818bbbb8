// Memoization: cache any value computed from queries (a rendered page, a fragment, a
// report), invalidated exactly when one of the reads it made would be.
//
// Thread safety: cache::memoize() may be called from any thread, concurrently, like any
// cache member. A memo scope belongs to the thread that opened it: only reads made on that
// thread while the function runs are seen. Code that fans out to other threads carries the
// scope explicitly with memo_carry / memo_carry::adopt (below); reads on other threads
// without it are invisible to the memo, exactly like any other input the function uses.
//
//   std::string html = cache->memoize("post_page", post_id, [&] {
//     return render_post_page(conn, post_id);   // reads through qcache (libpqxx, SOCI)
//   });
//
// How it works: the protocol statements use, one level up. While the function runs, every
// read through any front end of this cache on this thread (hits and misses) adds its
// dependencies to the memo with the versions it captured before it ran (for a hit, the
// versions its entry was stored under). When the function returns, the value is stored
// only if every one of those versions is still current and nothing made it unstorable:
// a write on this thread, a read that ran uncached (volatile functions, a table this
// transaction wrote, REPEATABLE READ, ...), a read that did not finish, a flush. A later
// call with the same key is a hit only if none of the versions moved: no query runs, the
// function does not run. An exception leaves nothing stored and propagates unchanged.
// Nested memoization passes the inner value's dependencies (and unstorability) outward.
//
// The key is the application's: the name, the typed parts given, and the value's type.
// Anything else the output depends on that is not read through qcache (the user's locale,
// a template file, a feature flag) must be in the key, or declared with depends_on() and
// invalidated by name with invalidate_name().
#pragma once

#include <qcache/cache.h>
#include <qcache/explain.h>
#include <qcache/key.h>

#include <charconv>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace qcache {

class cache;

namespace detail {

using memo_versions = std::vector<std::pair<std::uint32_t, std::uint64_t>>;

// What a memo collected: dependency versions and, for explain, what they came from.
struct memo_data {
  memo_versions deps;              // (version slot, version captured before the read)
  std::vector<std::string> reads;  // statements and nested memos read, for explain
  std::vector<std::string> names;  // depends_on() names
  std::vector<std::shared_ptr<memo_check>> checks;  // run before every hit
  bool storable = true;
  std::string why_not;  // first reason it became unstorable

  void spoil(std::string_view why);
  // Adds a dependency; the same slot captured at two different versions means a write
  // landed between two reads of the function (the stale-set race): unstorable.
  void add(std::uint32_t slot, std::uint64_t version);
  void note_read(std::string text);
  void merge(const memo_data& o);
};

struct memo_sink;  // memo_carry's shared state

// One memoize() call in progress on this thread (a stack, for nesting). Internal: created
// by cache::memoize and memo_carry::adopt only.
class memo_frame {
 public:
  memo_frame(cache& c, std::shared_ptr<memo_sink> sink = nullptr);
  ~memo_frame();
  memo_frame(const memo_frame&) = delete;
  memo_frame& operator=(const memo_frame&) = delete;

  cache* owner = nullptr;
  memo_frame* parent = nullptr;
  std::uint64_t serial = 0;  // tells a frame from a later one at the same address
  memo_data data;
  // Fences of reads that missed, kept until the read stores (store_named then replaces them
  // by the tags named from its result); a read never settled makes the memo unstorable.
  std::vector<memo_versions> pending;
  std::vector<bool> settled;
  std::shared_ptr<memo_sink> sink;  // adopted on another thread: collected into the carry
  int carries = 0;                  // memo_carry objects open on this frame
  int open_txns = 0;                // transactions begun in the function and not ended
};

// The current thread's innermost frame, or nullptr.
memo_frame* memo_current() noexcept;

// Size charged for a value: sizeof plus the elements of a container or string.
template <class T>
std::size_t memo_bytes(const T& v) {
  if constexpr (requires {
                  v.size();
                  typename T::value_type;
                })
    return sizeof(T) + v.size() * sizeof(typename T::value_type);
  else
    return sizeof(T);
}

template <class>
inline constexpr bool memo_always_false = false;
template <class T>
struct memo_is_optional : std::false_type {};
template <class T>
struct memo_is_optional<std::optional<T>> : std::true_type {};

// One typed part of a memo key, encoded like a statement parameter of that type.
template <class P>
void memo_part(key_builder& kb, const P& p) {
  using D = std::decay_t<P>;
  if constexpr (std::is_same_v<D, bool>) {
    kb.add(param_type::boolean, p ? "t" : "f");
  } else if constexpr (std::is_integral_v<D>) {
    kb.add(param_type::integer, std::to_string(p));
  } else if constexpr (std::is_floating_point_v<D>) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, p);
    kb.add(param_type::floating, std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
  } else if constexpr (std::is_same_v<D, std::nullptr_t> || std::is_same_v<D, std::nullopt_t>) {
    kb.add_null();
  } else if constexpr (memo_is_optional<D>::value) {
    if (p)
      memo_part(kb, *p);
    else
      kb.add_null();
  } else if constexpr (std::is_convertible_v<const D&, std::string_view>) {
    kb.add(param_type::text, std::string_view(p));
  } else {
    static_assert(memo_always_false<D>,
                  "qcache::memoize key parts: integers, floating point, bool, strings, "
                  "std::optional of those");
  }
}

std::uint32_t memo_context() noexcept;

template <class T, class... P>
key memo_key(std::string_view name, const P&... parts) {
  thread_local key_builder kb;  // its buffer is reused; finished before any nested call
  kb.start(memo_context(), 'M', name);
  kb.add(param_type::other, typeid(T).name());
  (memo_part(kb, parts), ...);
  return kb.finish();
}

}  // namespace detail

// Carries a memo scope to other threads, for code that fans out. Create it on the memo's
// thread inside the function; on each worker, an adopt object opens a scope whose reads
// are collected into the carry; destroying the carry (on the memo's thread, inside the
// function, after the workers finished) adds them to the memo. An adopt still alive then
// makes the memo unstorable. Without a current memo scope both are no-ops.
//
// Thread safety: adopt objects may be created on any threads concurrently; the carry itself
// is created and destroyed on the memo's thread.
class memo_carry {
 public:
  memo_carry();
  ~memo_carry();
  memo_carry(const memo_carry&) = delete;
  memo_carry& operator=(const memo_carry&) = delete;

  class adopt {
   public:
    explicit adopt(const memo_carry& c);
    ~adopt();
    adopt(const adopt&) = delete;
    adopt& operator=(const adopt&) = delete;

   private:
    std::unique_ptr<detail::memo_frame> frame_;
  };

 private:
  detail::memo_frame* frame_ = nullptr;
  std::uint64_t serial_ = 0;
  std::shared_ptr<detail::memo_sink> sink_;
};

// Adds named dependencies to the current thread's innermost memo scope (of any cache); no-op
// outside one. The vocabulary of statement annotations: depends_on(name) is invalidated by
// cache::invalidate_name(name); depends_on(name, column, value) by invalidate_name(name,
// column, value) and by invalidate_name(name).
void depends_on(std::string_view name);
void depends_on(std::string_view name, std::string_view column, std::string_view value);

namespace detail {

// A stored memoized value, with what it read for explain().
struct memo_base : cached_value {
  std::vector<std::string> reads, names;
  std::vector<std::shared_ptr<memo_check>> checks;
  std::size_t counters = 0;
  std::size_t info_bytes() const noexcept {
    std::size_t n = 0;
    for (const auto& s : reads) n += s.size() + sizeof s;
    for (const auto& s : names) n += s.size() + sizeof s;
    return n;
  }
};

template <class T>
struct memo_value final : memo_base {
  template <class U>
  explicit memo_value(U&& v) : value(std::forward<U>(v)) {}
  const T value;
  std::size_t bytes() const noexcept override { return memo_bytes(value) + info_bytes(); }
};

// Runs fn under a memo scope unless the value of `k` is stored and current.
template <class T, class F>
std::shared_ptr<const T> memoize_run(cache& c, const key& k, F& fn) {
  if (auto v = c.memo_lookup(k)) {
    if (auto mv = std::dynamic_pointer_cast<const memo_value<T>>(v))
      return std::shared_ptr<const T>(mv, &mv->value);
  }
  memo_frame frame(c);  // popped (and merged into an outer scope) however fn exits
  auto mv = std::make_shared<memo_value<T>>(fn());
  std::shared_ptr<const T> out(mv, &mv->value);
  if (frame.data.storable) {  // what explain() lists
    mv->reads = frame.data.reads;
    mv->names = frame.data.names;
    mv->checks = frame.data.checks;
    mv->counters = frame.data.deps.size();
  }
  c.memo_store(k, frame, std::move(mv));
  return out;
}

// A value that is a handle to a mutable object (T*, shared_ptr<T>, unique_ptr<T>, T not
// const): every hit would share the one object a caller may change, where each
// recomputation would build a fresh one.
template <class T>
struct memo_mutable_handle : std::false_type {};
template <class T>
struct memo_mutable_handle<T*> : std::bool_constant<!std::is_const_v<T>> {};
template <class T>
struct memo_mutable_handle<std::shared_ptr<T>> : std::bool_constant<!std::is_const_v<T>> {};
template <class T, class D>
struct memo_mutable_handle<std::unique_ptr<T, D>> : std::bool_constant<!std::is_const_v<T>> {};
template <class T>
inline constexpr bool memo_mutable_handle_v = memo_mutable_handle<T>::value;

template <class Tuple, std::size_t... I>
auto memoize_split(cache& c, std::string_view name, Tuple args, std::index_sequence<I...>) {
  auto& fn = std::get<sizeof...(I)>(args);
  using T = std::decay_t<decltype(fn())>;
  static_assert(!std::is_void_v<T>, "qcache::memoize: the function must return a value");
  static_assert(!memo_mutable_handle_v<T>,
                "qcache::memoize: the value is a handle to a mutable object, which every hit "
                "would share; return the object itself or a handle to const "
                "(std::shared_ptr<const T>)");
  key k = memo_key<T>(name, std::get<I>(args)...);
  return memoize_run<T>(c, k, fn);
}

}  // namespace detail

template <class... A>
auto cache::memoize_shared(std::string_view name, A&&... parts_then_fn) {
  static_assert(sizeof...(A) >= 1, "qcache::memoize(name, parts..., fn)");
  return detail::memoize_split(*this, name,
                               std::forward_as_tuple(std::forward<A>(parts_then_fn)...),
                               std::make_index_sequence<sizeof...(A) - 1>{});
}

template <class... A>
auto cache::memoize(std::string_view name, A&&... parts_then_fn) {
  auto p = memoize_shared(name, std::forward<A>(parts_then_fn)...);
  return std::remove_cv_t<std::remove_reference_t<decltype(*p)>>(*p);
}

template <class T, class... P>
explanation cache::explain_memo(std::string_view name, const P&... parts) {
  return memo_explain(detail::memo_key<std::decay_t<T>>(name, parts...));
}

}  // namespace qcache
