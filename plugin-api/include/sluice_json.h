/*
 * sluice_json.h — small helpers for C plugins: reading the plugin's JSON config (the
 * plugin's table from the pipeline file, handed to create() as one JSON object), writing
 * JSON strings, and filling sl_error. Header-only (every function is static inline), no
 * allocation, no dependencies beyond the C standard library.
 *
 * Reading: every function takes the whole config object and a top-level member name, and
 * returns 1 (found, value written), 0 (absent) or -1 (present but of another type, too
 * long for the buffer, or the config is not a well-formed JSON object).
 *
 *   long long count = 10;
 *   if (sl_json_int(config, "count", &count) < 0)
 *     return sl_fail(err, SL_ERR_CONFIG, "count", "must be an integer");
 *
 * Unknown members should be refused (a typo must not be silently ignored):
 *
 *   static const char *const KNOWN[] = {"count", "message", NULL};
 *   char bad[64];
 *   if (sl_json_unknown_key(config, KNOWN, bad, sizeof bad) != 0)
 *     return sl_fail(err, SL_ERR_CONFIG, bad, "unknown option");
 */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice_plugin.h"

#define SL_JSON_MAX_DEPTH 64

typedef struct {
  const uint8_t *p;
  const uint8_t *end;
} sl_json_cursor;

static inline void sl_json_ws(sl_json_cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static inline int sl_json_hex4(const uint8_t *p, const uint8_t *end, uint32_t *out) {
  if (end - p < 4) return -1;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t h = p[i];
    v <<= 4;
    if (h >= '0' && h <= '9') v |= (uint32_t)(h - '0');
    else if (h >= 'a' && h <= 'f') v |= (uint32_t)(h - 'a' + 10);
    else if (h >= 'A' && h <= 'F') v |= (uint32_t)(h - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* Reads the string at the cursor (which is on its opening quote), unescaped into buf
 * (NUL-terminated) when buf is not NULL. Returns its length, or -1 (malformed), or -2 (it
 * does not fit in cap - 1 bytes; the cursor still moves past it). */
static inline long sl_json_str(sl_json_cursor *c, char *buf, size_t cap) {
  if (c->p >= c->end || *c->p != '"') return -1;
  c->p++;
  size_t n = 0;
  int too_long = 0;
#define SL_JSON_PUT(b)                         \
  do {                                         \
    if (buf && n + 1 < cap) buf[n] = (char)(b); \
    else if (buf) too_long = 1;                \
    n++;                                       \
  } while (0)
  while (c->p < c->end) {
    uint8_t ch = *c->p++;
    if (ch == '"') {
      if (buf && cap > 0) buf[n < cap ? n : cap - 1] = '\0';
      return too_long ? -2 : (long)n;
    }
    if (ch < 0x20) return -1;
    if (ch != '\\') {
      SL_JSON_PUT(ch);
      continue;
    }
    if (c->p >= c->end) return -1;
    uint8_t e = *c->p++;
    uint32_t cp;
    switch (e) {
      case '"': SL_JSON_PUT('"'); break;
      case '\\': SL_JSON_PUT('\\'); break;
      case '/': SL_JSON_PUT('/'); break;
      case 'b': SL_JSON_PUT('\b'); break;
      case 'f': SL_JSON_PUT('\f'); break;
      case 'n': SL_JSON_PUT('\n'); break;
      case 'r': SL_JSON_PUT('\r'); break;
      case 't': SL_JSON_PUT('\t'); break;
      case 'u':
        if (sl_json_hex4(c->p, c->end, &cp) < 0) return -1;
        c->p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
          uint32_t lo;
          if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' ||
              sl_json_hex4(c->p + 2, c->end, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
            return -1;
          c->p += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return -1;
        }
        if (cp < 0x80) {
          SL_JSON_PUT(cp);
        } else if (cp < 0x800) {
          SL_JSON_PUT(0xC0 | (cp >> 6));
          SL_JSON_PUT(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
          SL_JSON_PUT(0xE0 | (cp >> 12));
          SL_JSON_PUT(0x80 | ((cp >> 6) & 0x3F));
          SL_JSON_PUT(0x80 | (cp & 0x3F));
        } else {
          SL_JSON_PUT(0xF0 | (cp >> 18));
          SL_JSON_PUT(0x80 | ((cp >> 12) & 0x3F));
          SL_JSON_PUT(0x80 | ((cp >> 6) & 0x3F));
          SL_JSON_PUT(0x80 | (cp & 0x3F));
        }
        break;
      default:
        return -1;
    }
  }
#undef SL_JSON_PUT
  return -1;
}

/* Moves the cursor past one value. 0 on success, -1 if malformed. */
static inline int sl_json_skip(sl_json_cursor *c, int depth) {
  if (depth > SL_JSON_MAX_DEPTH) return -1;
  sl_json_ws(c);
  if (c->p >= c->end) return -1;
  uint8_t ch = *c->p;
  if (ch == '"') return sl_json_str(c, NULL, 0) == -1 ? -1 : 0;
  if (ch == '{' || ch == '[') {
    uint8_t close = ch == '{' ? '}' : ']';
    c->p++;
    sl_json_ws(c);
    if (c->p < c->end && *c->p == close) {
      c->p++;
      return 0;
    }
    for (;;) {
      if (ch == '{') {
        sl_json_ws(c);
        if (sl_json_str(c, NULL, 0) == -1) return -1;
        sl_json_ws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++;
      }
      if (sl_json_skip(c, depth + 1) < 0) return -1;
      sl_json_ws(c);
      if (c->p >= c->end) return -1;
      if (*c->p == ',') {
        c->p++;
        continue;
      }
      if (*c->p == close) {
        c->p++;
        return 0;
      }
      return -1;
    }
  }
  /* A number or a literal: the characters that can make one. */
  const uint8_t *start = c->p;
  while (c->p < c->end && (strchr("+-.eE0123456789", *c->p) || (*c->p >= 'a' && *c->p <= 'z'))) c->p++;
  return c->p > start ? 0 : -1;
}

/* Calls `visit` for each top-level member of the object `json`, with its name (unescaped,
 * NUL-terminated; `n` its length, or -2 if longer than 255 bytes) and a cursor at its value.
 * A non-zero return of `visit` stops the walk and is returned; otherwise 0 at the end, or
 * -1 if the object is malformed. */
typedef int (*sl_json_visit)(void *state, const char *name, long n, const sl_json_cursor *value);

static inline int sl_json_members(sl_str json, sl_json_visit visit, void *state) {
  sl_json_cursor c = {json.ptr, json.ptr + json.len};
  sl_json_ws(&c);
  if (c.p >= c.end || *c.p != '{') return -1;
  c.p++;
  sl_json_ws(&c);
  if (c.p < c.end && *c.p == '}') return 0;
  char name[256];
  for (;;) {
    sl_json_ws(&c);
    long n = sl_json_str(&c, name, sizeof name);
    if (n == -1) return -1;
    sl_json_ws(&c);
    if (c.p >= c.end || *c.p != ':') return -1;
    c.p++;
    sl_json_ws(&c);
    int r = visit(state, name, n, &c);
    if (r != 0) return r;
    if (sl_json_skip(&c, 1) < 0) return -1;
    sl_json_ws(&c);
    if (c.p < c.end && *c.p == ',') {
      c.p++;
      continue;
    }
    if (c.p < c.end && *c.p == '}') return 0;
    return -1;
  }
}

typedef struct {
  const char *key;
  sl_json_cursor *value;
} sl_json_find_state;

static inline int sl_json_find_visit(void *state, const char *name, long n, const sl_json_cursor *value) {
  sl_json_find_state *f = state;
  if (n >= 0 && strlen(f->key) == (size_t)n && strcmp(name, f->key) == 0) {
    *f->value = *value;
    return 1;
  }
  return 0;
}

/* Finds top-level member `key`: 1 with *value at its first byte, 0 absent, -1 malformed. */
static inline int sl_json_find(sl_str json, const char *key, sl_json_cursor *value) {
  sl_json_find_state f = {key, value};
  return sl_json_members(json, sl_json_find_visit, &f);
}

/* A string member, unescaped and NUL-terminated into buf (cap bytes). A string holding
 * \u0000 is refused (-1): C would silently cut it there. */
static inline int sl_json_string(sl_str json, const char *key, char *buf, size_t cap) {
  sl_json_cursor v;
  int f = sl_json_find(json, key, &v);
  if (f <= 0) return f;
  long n = sl_json_str(&v, buf, cap);
  if (n < 0 || strlen(buf) != (size_t)n) return -1;
  return 1;
}

/* An integer member (no fraction, no exponent, within long long). */
static inline int sl_json_int(sl_str json, const char *key, long long *out) {
  sl_json_cursor v;
  int f = sl_json_find(json, key, &v);
  if (f <= 0) return f;
  char num[32];
  size_t n = 0;
  while (v.p < v.end && n + 1 < sizeof num && ((*v.p >= '0' && *v.p <= '9') || (n == 0 && *v.p == '-')))
    num[n++] = (char)*v.p++;
  num[n] = '\0';
  if (n == 0 || (n == 1 && num[0] == '-')) return -1;
  if (v.p < v.end && strchr(".eE0123456789", *v.p)) return -1; /* a fraction, or too long */
  char *stop;
  errno = 0;
  long long x = strtoll(num, &stop, 10);
  if (*stop != '\0' || errno == ERANGE) return -1;
  *out = x;
  return 1;
}

/* A boolean member. */
static inline int sl_json_bool(sl_str json, const char *key, bool *out) {
  sl_json_cursor v;
  int f = sl_json_find(json, key, &v);
  if (f <= 0) return f;
  if (v.end - v.p >= 4 && memcmp(v.p, "true", 4) == 0) {
    *out = true;
    return 1;
  }
  if (v.end - v.p >= 5 && memcmp(v.p, "false", 5) == 0) {
    *out = false;
    return 1;
  }
  return -1;
}

typedef struct {
  const char *const *known;
  char *buf;
  size_t cap;
} sl_json_unknown_state;

static inline int sl_json_unknown_visit(void *state, const char *name, long n, const sl_json_cursor *value) {
  (void)value;
  sl_json_unknown_state *u = state;
  for (const char *const *k = u->known; n >= 0 && *k; k++)
    if (strlen(*k) == (size_t)n && strcmp(*k, name) == 0) return 0;
  if (u->cap > 0) {
    size_t l = strlen(name);
    if (l >= u->cap) l = u->cap - 1;
    memcpy(u->buf, name, l);
    u->buf[l] = '\0';
  }
  return 1;
}

/* The first top-level member whose name is not in `known` (a NULL-terminated list): 1 with
 * its name in buf, 0 when every member is known, -1 if the config is malformed. */
static inline int sl_json_unknown_key(sl_str json, const char *const *known, char *buf, size_t cap) {
  sl_json_unknown_state u = {known, buf, cap};
  return sl_json_members(json, sl_json_unknown_visit, &u);
}

/* Writes `s` (n bytes) as a JSON string literal, quotes included, into buf. Returns the
 * length written (NUL-terminated), or -1 if it does not fit. */
static inline long sl_json_quote(const char *s, size_t n, char *buf, size_t cap) {
  size_t o = 0;
#define SL_JSON_OUT(b)              \
  do {                              \
    if (o + 1 >= cap) return -1;    \
    buf[o++] = (char)(b);           \
  } while (0)
  SL_JSON_OUT('"');
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = (uint8_t)s[i];
    if (ch == '"' || ch == '\\') {
      SL_JSON_OUT('\\');
      SL_JSON_OUT(ch);
    } else if (ch < 0x20) {
      static const char HEX[] = "0123456789abcdef";
      SL_JSON_OUT('\\');
      SL_JSON_OUT('u');
      SL_JSON_OUT('0');
      SL_JSON_OUT('0');
      SL_JSON_OUT(HEX[ch >> 4]);
      SL_JSON_OUT(HEX[ch & 15]);
    } else {
      SL_JSON_OUT(ch);
    }
  }
  SL_JSON_OUT('"');
#undef SL_JSON_OUT
  buf[o] = '\0';
  return (long)o;
}

/* Fills err (code, the config key it is about or NULL, the message) and returns code, so
 * that `return sl_fail(err, SL_ERR_CONFIG, "count", "must be positive");` reads well. */
static inline sl_status sl_fail(sl_error *err, sl_status code, const char *field, const char *msg) {
  if (err) {
    err->code = code;
    size_t n = strlen(msg);
    if (n > sizeof err->msg) n = sizeof err->msg;
    memcpy(err->msg, msg, n);
    err->len = (uint32_t)n;
    size_t f = field ? strlen(field) : 0;
    if (f > sizeof err->field) f = sizeof err->field;
    if (f) memcpy(err->field, field, f);
    err->field_len = (uint32_t)f;
  }
  return code;
}

#endif /* SLUICE_JSON_H */
