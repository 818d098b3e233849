/*
 * @NAME@: a sluice transform plugin in C, made by `sluiced plugin new`. It puts `prefix`
 * in front of every record's bytes; empty records go to the pipeline's error output
 * (`processing-failed`). Make it your own.
 *
 * Build with `make`, copy lib@LIB@.so into one of the daemon's `plugin_dirs` and reload
 * (`systemctl reload sluiced`). Use it in a pipeline file as `[[pipelines.NAME.transforms]]`
 * with `plugin = "@NAME@"` and `prefix = "..."`. The guide is sluice's plugin-api/README.md.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice_json.h"
#include "sluice_plugin.h"

#define STR(s) {(const uint8_t *)(s), sizeof(s) - 1}

typedef struct {
  char prefix[256];
  size_t prefix_len;
  uint8_t *buf; /* output scratch, reused across records */
  size_t cap;
} prefixer;

static sl_status create(const sl_instance_ctx *ctx, sl_str config, void **self, sl_error *err) {
  (void)ctx;
  static const char *const KNOWN[] = {"prefix", NULL};
  char bad[128];
  int u = sl_json_unknown_key(config, KNOWN, bad, sizeof bad);
  if (u < 0) return sl_fail(err, SL_ERR_CONFIG, NULL, "the options are not a JSON object");
  if (u > 0) return sl_fail(err, SL_ERR_CONFIG, bad, "unknown option (known: prefix)");
  prefixer *p = calloc(1, sizeof *p);
  if (!p) return sl_fail(err, SL_ERR_FATAL, NULL, "out of memory");
  int f = sl_json_string(config, "prefix", p->prefix, sizeof p->prefix);
  if (f <= 0) {
    free(p);
    return sl_fail(err, SL_ERR_CONFIG, "prefix", f == 0 ? "is required" : "must be a string of at most 255 bytes");
  }
  p->prefix_len = strlen(p->prefix);
  *self = p;
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

static void destroy(void *self) {
  prefixer *p = self;
  free(p->buf);
  free(p);
}

/* CPU-bound work on a host worker thread. Every input ends as pushed (0..n outputs), kept
 * (out->keep) or rejected (out->reject); an error return fails the whole batch, and the
 * host then isolates the failing record by splitting the batch. */
static sl_status transform(void *self, const sl_batch *in, sl_batch_builder *out, sl_error *err) {
  prefixer *p = self;
  const uint8_t *base = (const uint8_t *)in->records;
  for (size_t i = 0; i < in->len; i++) {
    /* Step by record_stride, not sizeof: newer hosts may send longer records. */
    const sl_record *r = (const sl_record *)(base + i * in->record_stride);
    if (r->data.len == 0) {
      static const char why[] = "empty record";
      out->reject(out->host, i, (sl_str){(const uint8_t *)why, sizeof why - 1});
      continue;
    }
    size_t need = p->prefix_len + r->data.len;
    if (need > p->cap) {
      uint8_t *nb = realloc(p->buf, need);
      if (!nb) return sl_fail(err, SL_ERR_RETRYABLE, NULL, "out of memory");
      p->buf = nb;
      p->cap = need;
    }
    memcpy(p->buf, p->prefix, p->prefix_len);
    memcpy(p->buf + p->prefix_len, r->data.ptr, r->data.len);
    /* Same key, timestamp and attributes as the input; only the bytes change. The host
     * copies the record before push returns; transforms have no credit limit. */
    sl_record o = *r;
    o.data = (sl_bytes){p->buf, need};
    if (out->push(out->host, i, &o, (uint32_t)sizeof o) != SL_OK)
      return sl_fail(err, SL_ERR_FATAL, NULL, "the host refused an output record");
  }
  return SL_OK;
}

static const sl_plugin_vtable VTABLE = {
    .struct_size = sizeof(sl_plugin_vtable),
    .create = create,
    .start = start,
    .stop = stop,
    .destroy = destroy,
    .transform = transform,
};

static const sl_plugin_def PLUGINS[] = {{
    .struct_size = sizeof(sl_plugin_def),
    .kind = SL_KIND_TRANSFORM,
    .name = STR("@NAME@"),
    .version = STR("0.1.0"),
    .description = STR("puts a prefix in front of every record"),
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

const sl_library *sl_plugin_library_v1(void) { return &LIBRARY; }
