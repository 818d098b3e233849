/* Exercises include/sluice_json.h (the C plugins' config helper): built and run by
 * tests/json_helper.rs. Exits non-zero naming the first failed check. */
#include <stdio.h>
#include <string.h>

#include "sluice_json.h"

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                     \
    }                                                                 \
  } while (0)

static sl_str S(const char *s) { return (sl_str){(const uint8_t *)s, strlen(s)}; }

int main(void) {
  sl_str cfg = S(" { \"count\" : 42, \"neg\": -7, \"big\": 99999999999999999999, \"f\": 1.5,"
                 " \"msg\": \"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\", \"on\": true, \"off\": false,"
                 " \"nested\": {\"count\": 1, \"arr\": [1, \"x]\", {\"y\": null}]}, \"s\": \"short\" } ");
  long long n = 0;
  CHECK(sl_json_int(cfg, "count", &n) == 1 && n == 42);
  CHECK(sl_json_int(cfg, "neg", &n) == 1 && n == -7);
  CHECK(sl_json_int(cfg, "big", &n) == -1);
  CHECK(sl_json_int(cfg, "f", &n) == -1);
  CHECK(sl_json_int(cfg, "msg", &n) == -1);
  CHECK(sl_json_int(cfg, "absent", &n) == 0);
  char buf[64];
  CHECK(sl_json_string(cfg, "msg", buf, sizeof buf) == 1);
  CHECK(strcmp(buf, "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80") == 0);
  CHECK(sl_json_string(S("{\"z\": \"a\\u0000b\"}"), "z", buf, sizeof buf) == -1); /* embedded NUL */
  char tiny[4];
  CHECK(sl_json_string(cfg, "s", tiny, sizeof tiny) == -1); /* does not fit */
  CHECK(sl_json_string(cfg, "count", buf, sizeof buf) == -1);
  bool b = false;
  CHECK(sl_json_bool(cfg, "on", &b) == 1 && b);
  CHECK(sl_json_bool(cfg, "off", &b) == 1 && !b);
  CHECK(sl_json_bool(cfg, "count", &b) == -1);
  /* Only top-level members are found: "count" inside "nested" is not the top one. */
  CHECK(sl_json_int(S("{\"nested\": {\"count\": 1}}"), "count", &n) == 0);
  static const char *const KNOWN[] = {"count", "neg", "big", "f", "msg", "on", "off", "nested", "s", NULL};
  CHECK(sl_json_unknown_key(cfg, KNOWN, buf, sizeof buf) == 0);
  static const char *const FEW[] = {"count", NULL};
  CHECK(sl_json_unknown_key(cfg, FEW, buf, sizeof buf) == 1 && strcmp(buf, "neg") == 0);
  CHECK(sl_json_unknown_key(S("{}"), FEW, buf, sizeof buf) == 0);
  /* Malformed configs are reported, never read past. */
  const char *bad[] = {"", "[]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{\"a\":\"x}", "{\"a\":\"\\q\"}",
                       "{\"a\":\"\\ud83d\"}", "{\"a\":[1,2}", "{\"a\":1 \"b\":2}", NULL};
  static const char *const AB[] = {"a", "b", NULL};
  for (int i = 0; bad[i]; i++) {
    CHECK(sl_json_unknown_key(S(bad[i]), AB, buf, sizeof buf) == -1);
    CHECK(sl_json_int(S(bad[i]), "zzz", &n) == -1);
  }
  /* Deep nesting is refused, not followed into a stack overflow. */
  char deep[400] = "{\"a\":";
  for (int i = 0; i < 100; i++) strcat(deep, "[");
  CHECK(sl_json_int(S(deep), "zzz", &n) == -1);
  /* Quoting. */
  CHECK(sl_json_quote("a\"\\\x01", 4, buf, sizeof buf) == 13 && strcmp(buf, "\"a\\\"\\\\\\u0001\"") == 0);
  CHECK(sl_json_quote("abcdef", 6, tiny, sizeof tiny) == -1);
  /* sl_fail. */
  sl_error err;
  memset(&err, 0, sizeof err);
  CHECK(sl_fail(&err, SL_ERR_CONFIG, "count", "must be positive") == SL_ERR_CONFIG);
  CHECK(err.code == SL_ERR_CONFIG && err.field_len == 5 && memcmp(err.field, "count", 5) == 0 && err.len == 16);
  if (failures) return 1;
  puts("ok");
  return 0;
}
