/*
 * @NAME@: a sluice source plugin in C, made by `sluiced plugin new`. It emits `count` JSON
 * records {"n": N, "message": "..."} and then ends; make it your own.
 *
 * Build with `make`, copy lib@LIB@.so into one of the daemon's `plugin_dirs` and reload
 * (`systemctl reload sluiced`). Use it in a pipeline file as
 * `source = { plugin = "@NAME@", count = 100 }`. The guide is sluice's plugin-api/README.md.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice_json.h"
#include "sluice_plugin.h"

#define STR(s) {(const uint8_t *)(s), sizeof(s) - 1}

/* One instance per pipeline run; the host never calls it concurrently. */
typedef struct {
  const sl_instance_ctx *ctx; /* valid until destroy() returns */
  long long count, next;
  char message[256];
  uint64_t emitted; /* metric handle */
} counter;

/* Also runs for `sluiced check`: validate here, but start nothing. */
static sl_status create(const sl_instance_ctx *ctx, sl_str config, void **self, sl_error *err) {
  static const char *const KNOWN[] = {"count", "message", NULL};
  char bad[128];
  int u = sl_json_unknown_key(config, KNOWN, bad, sizeof bad);
  if (u < 0) return sl_fail(err, SL_ERR_CONFIG, NULL, "the options are not a JSON object");
  if (u > 0) return sl_fail(err, SL_ERR_CONFIG, bad, "unknown option (known: count, message)");
  counter *c = calloc(1, sizeof *c);
  if (!c) return sl_fail(err, SL_ERR_FATAL, NULL, "out of memory");
  c->ctx = ctx;
  c->count = 10;
  if (sl_json_int(config, "count", &c->count) < 0 || c->count < 0 || c->count > 1000000000) {
    free(c);
    return sl_fail(err, SL_ERR_CONFIG, "count", "must be an integer between 0 and 1000000000");
  }
  if (sl_json_string(config, "message", c->message, sizeof c->message) < 0) {
    free(c);
    return sl_fail(err, SL_ERR_CONFIG, "message", "must be a string of at most 255 bytes");
  }
  /* Exported as sluice_plugin_@METRIC@_records_total{pipeline,plugin}. */
  const sl_host_api *h = ctx->host;
  uint64_t family = 0;
  sl_str name = STR("@METRIC@_records_total"), help = STR("Records emitted");
  if (h->metric_register(ctx->inst, SL_METRIC_COUNTER, name, help, NULL, 0, &family) != SL_OK ||
      h->metric_bind(family, NULL, 0, &c->emitted) != SL_OK)
    c->emitted = 0;
  *self = c;
  return SL_OK;
}

static sl_status start(void *self, sl_error *err) {
  (void)self; (void)err;
  return SL_OK;
}

static sl_status stop(void *self, uint32_t deadline_ms, sl_error *err) {
  (void)self; (void)deadline_ms; (void)err;
  return SL_OK;
}

static void destroy(void *self) { free(self); }

/* Called only when the pipeline has room; must not block. */
static sl_status poll_batch(void *self, sl_batch_builder *out, uint64_t *ack_token, sl_error *err) {
  counter *c = self;
  *ack_token = 0; /* no checkpointing here: ack() is not needed */
  /* The message quoted: at most 6 bytes per byte of its 255 (\u00XX), plus the quotes. */
  char msg[6 * 255 + 3], data[6 * 255 + 64], key[32];
  if (sl_json_quote(c->message, strlen(c->message), msg, sizeof msg) < 0)
    return sl_fail(err, SL_ERR_FATAL, NULL, "message too long");
  while (c->next < c->count) {
    int n = snprintf(data, sizeof data, "{\"n\":%lld,\"message\":%s}", c->next, msg);
    int k = snprintf(key, sizeof key, "%lld", c->next);
    sl_record r;
    memset(&r, 0, sizeof r);
    r.data = (sl_bytes){(const uint8_t *)data, (size_t)n};
    r.partition_key = (sl_str){(const uint8_t *)key, (size_t)k};
    r.timestamp_ms = SL_TIMESTAMP_UNSET; /* the host stamps the arrival time */
    /* The host copies the record before push returns. SL_PENDING: the credit of this poll
     * is used up and the record was NOT taken — push it again on the next poll. */
    sl_status st = out->push(out->host, SIZE_MAX, &r, (uint32_t)sizeof r);
    if (st == SL_PENDING) return SL_OK;
    if (st != SL_OK) return sl_fail(err, SL_ERR_FATAL, NULL, "the host refused a record");
    c->next++;
    if (c->emitted) c->ctx->host->metric_record(c->emitted, 1.0);
  }
  return SL_EOF;
}

/* The batch polled with `token` was delivered (SL_OK) or abandoned: a source that can
 * replay would advance its checkpoint here. */
static void ack(void *self, uint64_t token, sl_status outcome) {
  (void)self; (void)token; (void)outcome;
}

static const sl_plugin_vtable VTABLE = {
    .struct_size = sizeof(sl_plugin_vtable),
    .create = create,
    .start = start,
    .stop = stop,
    .destroy = destroy,
    .poll_batch = poll_batch,
    .ack = ack,
};

static const sl_plugin_def PLUGINS[] = {{
    .struct_size = sizeof(sl_plugin_def),
    .kind = SL_KIND_SOURCE,
    .name = STR("@NAME@"),
    .version = STR("0.1.0"),
    .description = STR("emits count JSON records, then ends"),
    .vtable = &VTABLE,
}};

static const sl_library LIBRARY = {
    .magic = SL_MAGIC,
    .struct_size = sizeof(sl_library),
    .abi_major = SL_ABI_MAJOR,
    .abi_minor = SL_ABI_MINOR,
    .library_name = STR("@NAME@"),
    .library_version = STR("0.1.0"),
    .build_info = STR("C"),
    .plugins = PLUGINS,
    .plugin_count = 1,
};

/* The only exported symbol. */
const sl_library *sl_plugin_library_v1(void) { return &LIBRARY; }
